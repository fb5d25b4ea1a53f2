"""Checking what a Keras speedup is given before any work: example inputs against the
model's input specs, and custom handlers' keys and values."""
from __future__ import annotations

from typing import Any, Mapping

import keras

from prunus.layers.tf.inputs import check_inputs
from prunus.compression.errors import SpeedupError
from prunus.layers.tf.handlers import LayerHandler


def check_example_inputs(model: keras.Model, example_inputs: Any) -> Any:
    """The shared Keras input check (:mod:`prunus.layers.tf.inputs`), raising
    SpeedupError (a ValueError) as the rest of the speedup does."""
    try:
        return check_inputs(model, example_inputs, 'example_inputs')
    except (TypeError, ValueError) as exc:
        raise SpeedupError(str(exc)) from None


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
