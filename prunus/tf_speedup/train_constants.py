"""The constants removed channels take in train mode, where the masked model's
BatchNormalizations normalize with batch statistics (a pruned filter's channel is then
exactly ``beta``, whatever its stale moving statistics say).

Measured with one more run of the masked work model: BatchNormalization layers run with
``training=True``, every other layer in inference mode (no dropout noise); the moving
statistics that run updates are put back. See :mod:`prunus.layers.tf.constants` for why
the fold uses them.
"""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import tree

from .verify import synthetic_inputs


def _channel_constants(x: Any) -> np.ndarray:
    """Per channel (last axis): the value where it is the same everywhere, else NaN."""
    flat = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
    spread = flat.max(axis=0) - flat.min(axis=0)
    uniform = spread <= 1e-6 * (1.0 + np.abs(flat).max(axis=0))
    return np.where(uniform, flat[0], np.nan)


class _TrainPass:
    def __init__(self, wanted: set[int]):
        self.wanted = wanted
        self.values: dict[int, np.ndarray] = {}

    def run(self, model: keras.Model, inputs: list) -> Any:
        if isinstance(model, keras.Sequential):
            x = inputs[0]
            for layer in model.layers:
                x = self.op(layer)(x)
            return x
        return model._run_through_graph(inputs, operation_fn=self.op)

    def op(self, layer):
        def call(*args, **kwargs):
            if isinstance(layer, keras.Model):
                return self.run(layer, [x for x in tree.flatten((args, kwargs))
                                        if keras.ops.is_tensor(x)])
            if isinstance(layer, keras.layers.BatchNormalization):
                kwargs = {**kwargs, 'training': True}
            if id(layer) in self.wanted and id(layer) not in self.values and args:
                self.values[id(layer)] = _channel_constants(args[0])
            return layer(*args, **kwargs)
        return call


def batchnorms(model: keras.Model) -> list:
    """Every BatchNormalization layer of ``model``, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += batchnorms(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def train_mode_constants(work: keras.Model, wanted: set[int]) -> dict[int, np.ndarray]:
    """``id(layer)`` -> the train-mode value of each of its input channels (NaN where not
    constant), for the layers in ``wanted``; empty when there is no BatchNormalization
    or the run fails (the eval-mode constants stay exact)."""
    norms = batchnorms(work)
    if not norms or not wanted:
        return {}
    saved = [(v, v.numpy()) for layer in norms for v in layer.non_trainable_weights]
    walk = _TrainPass(wanted)
    try:
        inputs = [keras.ops.convert_to_tensor(x) for x in tree.flatten(synthetic_inputs(work, 4))]
        walk.run(work, inputs)
    except Exception:  # noqa: BLE001 - train mode is optional; eval constants stay exact
        return {}
    finally:
        for variable, value in saved:
            variable.assign(value)
    return walk.values


def offset_decay(work: keras.Model, default: float) -> float:
    """How fast the masked model forgets stale statistics per train step: one minus the
    largest BatchNormalization momentum (the slowest to forget)."""
    momenta = [float(layer.momentum) for layer in batchnorms(work)]
    return 1.0 - max(momenta) if momenta else default
