"""Checking a Keras speedup's result the way the PyTorch speedup checks its own: run the
masked model and the rebuilt one on the same inputs and compare, with NaN or infinite
differences counting as failures."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import tree

from prunus.compression.errors import SpeedupError

#: Smallest output scale errors are measured against: outputs that are all ~1e-8 (a
#: normalization followed by a mean) differ by float32 rounding alone.
SCALE_FLOOR = 1e-3
#: Stand-in for unknown (None) non-batch dimensions of a model input.
FREE_DIM = 4


def synthetic_inputs(model: keras.Model, batch: int = 2, seed: int = 0) -> Any:
    """Inputs for ``model`` from its input specs: normal floats, and 0/1 for integer
    inputs (valid indices for any Embedding)."""
    rng = np.random.default_rng(seed)
    values = []
    for tensor in model.inputs:
        shape = (batch,) + tuple(FREE_DIM if d is None else int(d) for d in tensor.shape[1:])
        dtype = np.dtype(keras.backend.standardize_dtype(tensor.dtype))
        if dtype.kind in 'iub':
            values.append(rng.integers(0, 2, size=shape).astype(dtype))
        else:
            values.append(rng.standard_normal(shape).astype(dtype))
    return tree.pack_sequence_as(model._inputs_struct, values) if hasattr(model, '_inputs_struct') \
        else (values[0] if len(values) == 1 else values)


def relative_error(ref: np.ndarray, out: np.ndarray) -> float:
    """Largest difference over the reference's largest finite magnitude (at least
    :data:`SCALE_FLOOR`); ``inf`` where
    one side is NaN or infinite and the other is not the same."""
    ref, out = np.asarray(ref), np.asarray(out)
    if ref.shape != out.shape:
        raise SpeedupError(f'the sped-up model returns shape {out.shape} where the masked model '
                           f'returns {ref.shape}; the model is unchanged.')
    if not ref.size or ref.dtype.kind not in 'fc':
        return 0.0 if np.array_equal(ref, out) else float('inf')
    same = (ref == out) | (np.isnan(ref) & np.isnan(out))
    if not (np.isfinite(ref[~same]).all() and np.isfinite(out[~same]).all()):
        return float('inf')
    finite = np.abs(ref[np.isfinite(ref)])
    scale = max(float(finite.max()) if finite.size else 0.0, SCALE_FLOOR)
    return float(np.where(same, 0.0, np.abs(ref - out)).max()) / scale


def check_result(masked: keras.Model, small: keras.Model, inputs: Any, tolerance: float,
                 synthetic: bool = False) -> None:
    """SpeedupError unless ``small`` computes what ``masked`` does on ``inputs`` (inference);
    ``synthetic``: the inputs were made up from the input specs, not given."""
    try:
        refs = tree.flatten(masked(inputs, training=False))
    except Exception as exc:
        what = ('the check inputs made from the input specs (unknown sizes set to '
                f'{FREE_DIM}; pass example_inputs=)' if synthetic else 'example_inputs')
        raise SpeedupError(f'{what} do not fit the model: {type(exc).__name__}: '
                           f'{str(exc).splitlines()[0][:200] if str(exc) else ""}') from exc
    try:
        outs = tree.flatten(small(inputs, training=False))
    except Exception as exc:
        raise SpeedupError(f"the sped-up model fails: {type(exc).__name__}: {exc}; "
                           'the model is unchanged.') from exc
    if len(refs) != len(outs):
        raise SpeedupError(f'the sped-up model returns {len(outs)} outputs where the masked model '
                           f'returns {len(refs)}; the model is unchanged.')
    for i, (r, o) in enumerate(zip(refs, outs)):
        error = relative_error(keras.ops.convert_to_numpy(r), keras.ops.convert_to_numpy(o))
        if error > tolerance:
            raise SpeedupError(
                f'the sped-up model differs from the masked model by {error:.2e} of the scale of '
                f'output {i} (tolerance {tolerance:.0e}); this is a prunus bug, please report it '
                'with the model; the model is unchanged.')
