"""What a comparison measures on a Keras 3 model: copies, masks, FLOPs, speedup, latency."""
from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np

from prunus.speedup.tf import SpeedupError, speedup


_PRODUCERS = ('Conv1D', 'Conv2D', 'Conv3D', 'DepthwiseConv2D', 'SeparableConv2D',
              'Conv2DTranspose', 'Dense')


def _walk(model: keras.Model, prefix: str = ''):
    for layer in model.layers:
        name = f'{prefix}{layer.name}'
        if isinstance(layer, keras.Model):
            yield from _walk(layer, f'{name}/')
        else:
            yield name, layer


def layer_flops(model: keras.Model) -> dict[str, int]:
    """FLOPs (2 per multiply-add) of each conv and dense layer for one sample."""
    flops = {}
    for name, layer in _walk(model):
        kernels = [w for w in layer.weights if 'kernel' in w.path.split('/')[-1]]
        if not kernels or type(layer).__name__ not in _PRODUCERS:
            continue
        try:
            out_shape = tuple(layer.output.shape)
        except (AttributeError, ValueError):
            continue
        positions = int(np.prod([d for d in out_shape[1:-1] if d is not None], dtype=np.int64))
        macs = sum(int(np.prod(k.shape)) for k in kernels)
        if type(layer).__name__ == 'Conv2DTranspose':
            in_shape = tuple(layer.input.shape)
            positions = int(np.prod([d for d in in_shape[1:-1] if d is not None], dtype=np.int64))
        flops[name] = 2 * positions * macs
    return flops


class KerasBackend:
    """The Keras side of :func:`prunus.compare`."""

    framework = 'tf'

    def __init__(self, model: keras.Model, example_inputs: Any, latency_seconds: float) -> None:
        self.example = example_inputs
        self.latency_seconds = latency_seconds
        self.dense_flops = layer_flops(model)

    @staticmethod
    def example_from(data: Any) -> Any:
        batch = next(iter(data))
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return np.asarray(x[:1])

    def copy(self, model: keras.Model) -> keras.Model:
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    @staticmethod
    def output_layer(model: keras.Model) -> str | None:
        names = [n for n, layer in _walk(model) if type(layer).__name__ in _PRODUCERS]
        return names[-1] if names else None

    @staticmethod
    def masks(model: keras.Model, pruner: Any) -> dict[str, dict[str, Any]]:
        return pruner.get_masks()

    @staticmethod
    def layer_sparsity(masks: dict) -> dict[str, float]:
        return {n: 1.0 - float(np.mean(np.asarray(e['weight']) != 0)) for n, e in masks.items()
                if 'weight' in e}

    @staticmethod
    def nonzero_params(model: keras.Model) -> int:
        return sum(int(np.count_nonzero(keras.ops.convert_to_numpy(w))) for w in model.weights
                   if w.trainable)

    @staticmethod
    def params(model: keras.Model) -> int:
        return int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))

    def flops(self, masks: dict) -> int:
        total = sum(self.dense_flops.values())
        for name, sparsity in self.layer_sparsity(masks).items():
            total -= round(self.dense_flops.get(name, 0) * sparsity)
        return int(total)

    def shrink(self, model: keras.Model, masks: dict) -> tuple[keras.Model, int, int]:
        small = speedup(model, masks)
        return small, self.params(small), int(sum(layer_flops(small).values()))

    def latency(self, model: keras.Model) -> tuple[float, float]:
        """Median and interquartile range of one inference call, in milliseconds: timed in
        blocks like torch.utils.benchmark, after a warm-up that traces the function."""
        run = keras.backend.backend() == 'tensorflow' and _compiled(model)
        call = run or (lambda x: model(x, training=False))
        for _ in range(3):
            call(self.example)
        block, times = 1, []  # type: tuple[int, list[float]]
        deadline = time.perf_counter() + self.latency_seconds
        while time.perf_counter() < deadline or len(times) < 5:
            start = time.perf_counter()
            for _ in range(block):
                call(self.example)
            elapsed = time.perf_counter() - start
            times.append(elapsed / block)
            if elapsed < 1e-3:
                block *= 2
        q1, median, q3 = np.percentile(times, [25, 50, 75])
        return 1000 * float(median), 1000 * float(q3 - q1)


def _compiled(model: keras.Model):
    import tensorflow as tf
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


SHRINK_ERRORS = (SpeedupError, ValueError, TypeError, NotImplementedError)
Backend = KerasBackend
