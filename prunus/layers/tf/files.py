"""Reading and writing Keras mask files (``.npz``) and models, naming the file and the
expected format on every failure; writes go through a temporary file in the target
directory, so a failed export leaves nothing half-written."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

NPZ_FORMAT = "a prunus Keras mask file (.npz of arrays named '<layer name>::weight')"


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Fails before anything is written if ``path`` cannot be created."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path('.')
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {what} '{path}': directory '{parent}' does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {what} '{path}': it is a directory.")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = '') -> Iterator[str]:
    """A temporary path beside ``path`` (ending in ``suffix``); renamed onto it only if
    the block succeeds."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp' + suffix, dir=path.parent)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
