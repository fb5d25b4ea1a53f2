"""Pruners that score filters from data: APoZ, mean activation and first-order Taylor.

Data is given directly: ``data`` is an iterable of batches, where a batch is the model
input ``x`` or an ``(x, y)`` / ``(x, y, sample_weight)`` tuple; a ``tf.data.Dataset``
works as is. The first ``statistics_batch_num`` batches are used (all when None). Statistics are taken in
inference mode (``training=False``) so collecting them never moves BatchNorm statistics.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from ..registry import register_pruner
from . import criteria
from .base import Pruner
from prunus.layers.tf.inputs import call_checked
from prunus.layers.tf.specs import filters_of, spec_of, variables_of


def _split(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
        return batch[0], batch[1]
    return batch, None


class DataDrivenPruner(Pruner):
    """Base of the pruners that need batches of data; see the module docstring.

    Example::

        pruner = ActivationAPoZRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                                data=tf_dataset)
        model = pruner.compress()
    """

    def __init__(self, model: keras.Model, config_list: list[dict[str, Any]], *,
                 data: Iterable[Any] | None = None, statistics_batch_num: int | None = None,
                 dependency_aware: bool = False):
        super().__init__(model, config_list, dependency_aware)
        if statistics_batch_num is not None and (
                not isinstance(statistics_batch_num, int) or statistics_batch_num < 1):
            raise ValueError(f'statistics_batch_num must be an integer >= 1; '
                             f'got {statistics_batch_num!r}.')
        self.data = data
        self.statistics_batch_num = statistics_batch_num

    def batches(self) -> list[tuple[Any, Any]]:
        """The ``(x, y)`` batches to score on (at most ``statistics_batch_num``)."""
        if self.data is None:
            raise ValueError(f'{type(self).__name__} scores filters from data: pass data=<an '
                             'iterable of batches or (x, y) pairs, or a tf.data.Dataset>.')
        try:
            source = iter(self.data)
        except TypeError:
            raise TypeError(f'{type(self).__name__}: data must be an iterable of batches, (x, y) pairs or a '
                            f'tf.data.Dataset; got {type(self.data).__name__}.') from None
        batches = [_split(b) for b in islice(source, self.statistics_batch_num)]
        if not batches:
            raise ValueError(f'{type(self).__name__}: data yielded no batch.')
        return batches

    def compute_scores(self, collected):
        return collected


class ActivationPruner(DataDrivenPruner):
    """Scores each output channel from ``activation(layer output)``, batch by batch."""

    def __init__(self, model, config_list, *, data=None, statistics_batch_num: int | None = None,
                 activation: str | Callable = 'relu', dependency_aware: bool = False):
        super().__init__(model, config_list, data=data, statistics_batch_num=statistics_batch_num,
                         dependency_aware=dependency_aware)
        self.activation = keras.activations.get(activation)

    def channel_score(self, zeros: np.ndarray, sums: np.ndarray, count: int) -> np.ndarray:
        """The score from per-channel zero counts and sums over ``count`` values each."""
        raise NotImplementedError

    def collect(self):
        names = [sel.layer.name for sel in self.selections]
        zeros: dict[str, Any] = defaultdict(float)
        sums: dict[str, Any] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for index, (x, _) in enumerate(self.batches()):
            with _recording(self.layers, names) as outputs:
                call_checked(self.model, x, f'{type(self).__name__}: batch {index} of data', training=False)
            for name in names:
                for out in outputs[name]:
                    act = np.asarray(self.activation(out))
                    zeros[name] = zeros[name] + criteria.zero_count(act)
                    sums[name] = sums[name] + criteria.channel_sum(act)
                    counts[name] += act.size // act.shape[-1]
        missing = [n for n in names if not counts[n]]
        if missing:
            raise ValueError(f"layer '{missing[0]}' produced no output while the model ran on data.")
        return {n: self.channel_score(zeros[n], sums[n], counts[n]) for n in names}


@contextmanager
def _recording(layers: dict[str, keras.layers.Layer], names: list[str]):
    """Records each named layer's outputs while the model runs eagerly."""
    outputs: dict[str, list[Any]] = defaultdict(list)
    originals = {}
    for name in names:
        layer = layers[name]
        originals[name] = layer.call

        def call(*args, _orig=layer.call, _name=name, **kwargs):
            out = _orig(*args, **kwargs)
            outputs[_name].append(out)
            return out
        layer.call = call
    try:
        yield outputs
    finally:
        for name in names:
            del layers[name].call  # drops the instance attribute; the class method shows again


@register_pruner('apoz', framework='tf')
class ActivationAPoZRankFilterPruner(ActivationPruner):
    """Prunes the channels with the highest Average Percentage of Zeros of
    ``activation(output)`` (Hu et al., 2016); the score is ``1 - APoZ``.

    Example::

        ActivationAPoZRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                       data=dataset, statistics_batch_num=4).compress()
    """

    def channel_score(self, zeros, sums, count):
        return 1.0 - zeros / count


@register_pruner('mean_activation', framework='tf')
class ActivationMeanRankFilterPruner(ActivationPruner):
    """Prunes the channels with the lowest mean ``activation(output)`` (Molchanov et al., 2017).

    Example::

        pruner = ActivationMeanRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                                data=[(x[:64], y[:64])])
        model = pruner.compress()
    """

    def channel_score(self, zeros, sums, count):
        return sums / count


@register_pruner('taylorfo', framework='tf')
class TaylorFOWeightFilterPruner(DataDrivenPruner):
    """Prunes the filters with the smallest first-order Taylor importance (Molchanov et
    al., 2019): the sum over a filter's weights of ``(w * dL/dw)^2``, summed over batches.

    ``criterion(y_true, y_pred)`` is the loss; it defaults to the compiled model's loss.

    Example::

        pruner = TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                            data=[(x[:64], y[:64])])
        model = pruner.compress()
    """

    def __init__(self, model, config_list, *, data=None, statistics_batch_num: int | None = None,
                 criterion: Callable | None = None, dependency_aware: bool = False):
        super().__init__(model, config_list, data=data, statistics_batch_num=statistics_batch_num,
                         dependency_aware=dependency_aware)
        if criterion is None and getattr(model, 'loss', None) is not None:
            criterion = keras.losses.get(model.loss)
        if criterion is None:
            raise ValueError('TaylorFOWeightFilterPruner needs criterion=<loss(y_true, y_pred)> '
                             'or a model compiled with a loss.')
        self.criterion = criterion

    def collect(self):
        names = [sel.layer.name for sel in self.selections]
        variables = [variables_of(self.layers[n])[spec_of(self.layers[n]).weight] for n in names]
        totals = {n: 0.0 for n in names}
        for index, (x, y) in enumerate(self.batches()):
            if y is None:
                raise ValueError('TaylorFOWeightFilterPruner needs (x, y) batches to compute a loss.')
            with tf.GradientTape() as tape:
                out = call_checked(self.model, x, f'{type(self).__name__}: batch {index} of data', training=False)
                loss = self.criterion(y, out)
            grads = tape.gradient(loss, variables)
            for name, var, grad in zip(names, variables, grads):
                if grad is None:
                    raise ValueError(f"the loss does not depend on layer '{name}'.")
                wg = filters_of(var.numpy() * np.asarray(grad), spec_of(self.layers[name]))
                totals[name] = totals[name] + criteria.taylor_batch(wg)
        return totals
