"""Example inputs and data batches for a Keras model, checked against its input specs
before the model sees them: the error names the input and what does not match, in one
line (Keras' own errors print whole arrays)."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import tree


def _describe(value: Any) -> str:
    shape = getattr(value, 'shape', None)
    if shape is not None:
        return f'{type(value).__name__} of shape {tuple(shape)} and dtype {getattr(value, "dtype", "?")}'
    return type(value).__name__


def check_inputs(model: keras.Model, inputs: Any, what: str = 'example_inputs') -> Any:
    """``inputs`` as numpy arrays in their own structure, or a ValueError/TypeError naming
    the input and what does not match the model's input spec."""
    if inputs is None:
        raise TypeError(f'{what} is None; give arrays matching the model inputs.')
    flat = tree.flatten(inputs)
    specs = list(getattr(model, 'inputs', None) or [])
    if specs and len(flat) != len(specs):
        raise ValueError(f"{what} holds {len(flat)} arrays, but model '{model.name}' has "
                         f'{len(specs)} inputs ({", ".join(t.name for t in specs)}).')
    arrays = []
    for i, value in enumerate(flat):
        spec = specs[i] if specs else None
        where = f"{what} input '{spec.name}'" if spec is not None else f'{what}[{i}]'
        try:
            arr = np.asarray(keras.ops.convert_to_numpy(value))
        except Exception:
            raise TypeError(f'{where} must be an array; got {_describe(value)}.') from None
        if arr.dtype.kind not in 'biuf':
            raise TypeError(f'{where} has dtype {arr.dtype}; the model takes numbers.')
        if arr.dtype.kind == 'f' and not np.isfinite(arr).all():
            raise ValueError(f'{where} holds NaN or infinite values.')
        if spec is not None:
            want = tuple(spec.shape)
            if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape)):
                raise ValueError(f'{where} has shape {arr.shape}, but the model expects {want} (None: any size).')
            arr = arr.astype(keras.backend.standardize_dtype(spec.dtype))
        arrays.append(arr)
    return tree.pack_sequence_as(inputs, arrays)


def call_checked(model: keras.Model, inputs: Any, what: str, **kwargs: Any) -> Any:
    """``model(inputs, **kwargs)`` after :func:`check_inputs`; a failure inside the model
    becomes one line naming ``what`` (no array dump)."""
    inputs = check_inputs(model, inputs, what)
    try:
        return model(inputs, **kwargs)
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ValueError(f'{what} does not fit the model: {type(exc).__name__}: {first[:240]}') from exc
