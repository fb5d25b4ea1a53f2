"""Checking what a Keras speedup is given before any work: example inputs against the
model's input specs, and custom handlers' keys and values."""
from __future__ import annotations

from typing import Any, Mapping

import keras
import numpy as np
from keras import tree

from .analysis import SpeedupError
from .handlers import LayerHandler


def _describe(value: Any) -> str:
    shape = getattr(value, 'shape', None)
    if shape is not None:
        return f'{type(value).__name__} of shape {tuple(shape)} and dtype {getattr(value, "dtype", "?")}'
    return type(value).__name__


def check_example_inputs(model: keras.Model, example_inputs: Any) -> Any:
    """``example_inputs`` as numpy arrays in the model's input structure, or a
    SpeedupError naming the input and what does not match its spec."""
    if example_inputs is None:
        raise SpeedupError('example_inputs is None; give arrays matching the model inputs.')
    flat = tree.flatten(example_inputs)
    specs = list(model.inputs)
    if len(flat) != len(specs):
        raise SpeedupError(f"example_inputs hold {len(flat)} arrays, but model '{model.name}' has "
                           f'{len(specs)} inputs ({", ".join(t.name for t in specs)}).')
    arrays = []
    for value, spec in zip(flat, specs):
        where = f"example input '{spec.name}'"
        try:
            arr = np.asarray(keras.ops.convert_to_numpy(value))
        except Exception:
            raise SpeedupError(f'{where} must be an array; got {_describe(value)}.') from None
        if arr.dtype.kind not in 'biuf':
            raise SpeedupError(f'{where} has dtype {arr.dtype}; the model expects {spec.dtype}.')
        want = tuple(spec.shape)
        if arr.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, arr.shape)):
            raise SpeedupError(f'{where} has shape {arr.shape}, but the model expects '
                               f'{want} (None: any size).')
        if arr.dtype.kind == 'f' and not np.isfinite(arr).all():
            raise SpeedupError(f'{where} holds NaN or infinite values.')
        arrays.append(arr.astype(keras.backend.standardize_dtype(spec.dtype)))
    return tree.pack_sequence_as(example_inputs, arrays)


def check_custom_handlers(custom_handlers: Any) -> dict[str, LayerHandler]:
    """``{class name: LayerHandler}``; a layer class as key is accepted for its name."""
    if custom_handlers is None:
        return {}
    if not isinstance(custom_handlers, Mapping):
        raise TypeError('custom_handlers must be a dict {layer class name: LayerHandler()}; '
                        f'got {type(custom_handlers).__name__}.')
    out = {}
    for key, handler in custom_handlers.items():
        name = key.__name__ if isinstance(key, type) else key
        if not isinstance(name, str):
            raise TypeError(f'custom_handlers key {key!r} must be a Keras layer class name; '
                            f'got {type(key).__name__}.')
        if not isinstance(handler, LayerHandler):
            raise TypeError(f"custom_handlers[{name!r}] must be a prunus.speedup.tf.LayerHandler "
                            f'instance; got {type(handler).__name__}.')
        out[name] = handler
    return out


__all__ = ['check_example_inputs', 'check_custom_handlers']
