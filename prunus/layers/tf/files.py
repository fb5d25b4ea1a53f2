"""Reading and writing Keras mask files (``.npz``) and models, naming the file and the
expected format on every failure; writes go through a temporary file in the target
directory, so a failed export leaves nothing half-written."""
from __future__ import annotations

import os

import numpy as np
from prunus.compression.paths import atomic_path, check_writable

NPZ_FORMAT = "a prunus Keras mask file (.npz of arrays named '<layer name>::weight')"


def _npz_path(path: str | os.PathLike) -> str:
    # numpy appends '.npz' to a name without it; do the same so the rename lands there.
    path = os.fspath(path)
    return path if path.endswith('.npz') else path + '.npz'


def write_mask_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    target = _npz_path(path)
    check_writable(target, 'mask file')
    with atomic_path(target, '.npz') as tmp:
        np.savez(tmp, **arrays)


def read_mask_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mask file '{path}' does not exist.")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy's own text advises allow_pickle=True: never for masks
        raise ValueError(f"mask file '{path}' cannot be read as {NPZ_FORMAT}: it is not an "
                         'npz archive (corrupt, truncated or another format).') from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"mask file '{path}' cannot be read as {NPZ_FORMAT}: it holds one "
                         'array, not named arrays.')
    try:
        return {name: data[name] for name in data.files}
    except Exception as exc:
        raise ValueError(f"mask file '{path}' cannot be read as {NPZ_FORMAT}: "
                         f'{type(exc).__name__} reading its arrays.') from exc
    finally:
        data.close()
