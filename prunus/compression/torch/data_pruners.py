"""Filter pruners whose criterion needs the model to run: APoZ, mean activation, Taylor FO.

Three ways to feed them, so code written for any NNI release keeps working:

* ``data=batches`` (prunus): ``compress()`` runs the batches itself, in eval mode, and
  leaves the model's BatchNorm statistics and ``.grad`` fields as they were. A batch is
  ``x``, ``(x, y)`` or a dict of keyword inputs; Taylor also needs ``criterion``.
* ``trainer=fn, criterion=...`` (NNI >= 2.3): ``compress()`` calls
  ``trainer(model, optimizer=..., criterion=..., epoch=0)`` and records its first
  ``sparsifying_training_batches`` batches.
* neither (NNI 1.x): ``compress()`` returns at once with all-ones masks; statistics are
  recorded while you train, and after ``statistics_batch_num`` batches the masks are
  computed at the next forward call or optimizer step.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..registry import register_pruner
from . import criteria
from .base import Scores
from .collect import (ActivationCollector, Collector, TaylorCollector, resolve_activation,
                      run_backward, run_forward)
from prunus.layers.torch.masking import apply_masks
from .group_importance import check_group_options
from .pruners import FilterPruner
from .taylor_group import GroupTaylorCollector
from prunus.speedup.dependency import dependency_structure


def _check_count(owner: str, key: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f'{owner}: {key} must be an integer >= 1; got {value!r}.')


def check_collected(owner: str, collector: Collector) -> None:
    """A clear error instead of a KeyError when a target layer recorded nothing."""
    if collector.batches == 0:
        raise ValueError(f'{owner} saw no batch: the data or trainer ran none through the model.')
    missing = collector.missing()
    if missing:
        raise ValueError(f"{owner}: layer(s) {', '.join(repr(n) for n in missing)} recorded nothing in "
                         f'the {collector.batches} batch(es) seen; they did not run (or got no gradient).')


class DataDrivenFilterPruner(FilterPruner):
    """Shared calling styles of the data-driven filter pruners (see the module doc).
    Head entries (``'granularity': 'head'``) score a head by the statistics of its Q/K/V
    Linear rows."""

    needs_gradients = False
    needs_data = True

    def __init__(self, model: nn.Module, config_list: list[dict], *, optimizer: Any = None,
                 trainer: Callable | None = None, criterion: Callable | None = None,
                 sparsifying_training_batches: int | None = None, dependency_aware: bool = False,
                 dummy_input: Any = None, statistics_batch_num: int | None = None, data: Any = None):
        owner = type(self).__name__
        _check_count(owner, 'sparsifying_training_batches', sparsifying_training_batches)
        _check_count(owner, 'statistics_batch_num', statistics_batch_num)
        if trainer is not None and not callable(trainer):
            raise TypeError(f'{owner}: trainer must be callable as trainer(model, optimizer, '
                            f'criterion, epoch); got {type(trainer).__name__}.')
        if criterion is not None and not callable(criterion):
            raise TypeError(f'{owner}: criterion must be callable; got {type(criterion).__name__}.')
        if data is not None and not hasattr(data, '__iter__'):
            raise TypeError(f'{owner}: data must be an iterable of batches; got {type(data).__name__}.')
        super().__init__(model, config_list, optimizer, dependency_aware, dummy_input)
        self.trainer, self.criterion = trainer, criterion
        self.data = [data] if isinstance(data, torch.Tensor) else data
        self.batch_limit = statistics_batch_num or sparsifying_training_batches
        self._pending: Collector | None = None
        self._legacy_handles: list[Any] = []

    def make_collector(self, limit: int | None) -> Collector:
        raise NotImplementedError

    def run_batches(self, limit: int | None) -> None:
        runner = run_backward if self.needs_gradients else run_forward
        args = (self.criterion, type(self).__name__) if self.needs_gradients else (type(self).__name__,)
        runner(self.bound_model, self.data, limit, *args)

    def collect(self) -> Collector:
        if self.data is not None:
            collector = self.make_collector(None).start()
            try:
                self.run_batches(self.batch_limit)
            finally:
                collector.stop()
        else:
            collector = self.make_collector(self.batch_limit or 1).start()
            try:
                self.trainer(self.bound_model, optimizer=self.optimizer, criterion=self.criterion, epoch=0)
            finally:
                collector.stop()
        check_collected(type(self).__name__, collector)
        return collector

    def compress(self) -> nn.Module:
        if self.data is not None or self.trainer is not None:
            return super().compress()
        return self._compress_while_training()

    # -- NNI 1.x style: statistics gathered during the user's own training ------------
    def _compress_while_training(self) -> nn.Module:
        ones = {name: self.expand_keep(name, torch.ones(scores.shape[0], dtype=torch.bool))
                for name, scores in ((n, self.filters(n)) for n in self.targets)}
        apply_masks(self.bound_model, ones)
        self._pending = self.make_collector(self.batch_limit or 1).start()
        self._legacy_handles.append(self.bound_model.register_forward_pre_hook(
            lambda module, args: self._finish_if_ready()))
        if self.optimizer is not None:
            self._legacy_handles.append(self.optimizer.register_step_post_hook(
                lambda optimizer, args, kwargs: self._finish_if_ready()))
        return self.bound_model

    def _finish_if_ready(self) -> None:
        # Runs only between steps (before a forward, after an optimizer step), when
        # changing weights in place cannot invalidate a pending backward pass.
        if self._pending is None or not self._pending.done:
            return
        collector, self._pending = self._pending, None
        collector.stop()
        check_collected(type(self).__name__, collector)
        for handle in self._legacy_handles:
            handle.remove()
        self._legacy_handles.clear()
        apply_masks(self.bound_model, self.generate_masks(self.compute_scores(collector)))

    def get_masks(self):
        self._finish_if_ready()
        return super().get_masks()


class ActivationFilterPruner(DataDrivenFilterPruner):
    """Base of the activation-statistics pruners; ``activation`` is applied to each output."""

    def __init__(self, model: nn.Module, config_list: list[dict], *, activation: str | Callable = 'relu',
                 **options: Any):
        self.activation = resolve_activation(activation, type(self).__name__)
        super().__init__(model, config_list, **options)

    def make_collector(self, limit: int | None) -> Collector:
        return ActivationCollector(self.targets, limit, self.activation, self.bound_model)


@register_pruner('apoz', framework='torch')
class ActivationAPoZRankFilterPruner(ActivationFilterPruner):
    """Prunes the channels whose activations are most often zero (APoZ, Hu et al. 2016).

    Example::

        pruner = ActivationAPoZRankFilterPruner(model, config_list, data=loader)
        model = pruner.compress()
    """

    def compute_scores(self, collected: ActivationCollector) -> Scores:
        return {n: criteria.apoz_score(collected.zeros[n], collected.counts[n]) for n in self.targets}


@register_pruner('mean_activation', framework='torch')
class ActivationMeanRankFilterPruner(ActivationFilterPruner):
    """Prunes the channels with the smallest mean activation (Molchanov et al. 2017).

    Example::

        pruner = ActivationMeanRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                                data=calibration_batches)
        model = pruner.compress()
    """

    def compute_scores(self, collected: ActivationCollector) -> Scores:
        return {n: criteria.mean_activation_score(collected.sums[n], collected.counts[n])
                for n in self.targets}


@register_pruner('taylorfo', framework='torch')
class TaylorFOWeightFilterPruner(DataDrivenFilterPruner):
    """Prunes the filters with the smallest first-order Taylor importance
    sum((w * dL/dw)^2), accumulated over batches (Molchanov et al. 2019). With
    ``global_sort=True`` the contributions are ranked across all of an entry's layers (its
    ``sparsity`` is then one budget, as ``total_sparsity`` is), as in NNI 2.x.

    ``importance='group'`` (with ``dependency_aware=True`` and ``dummy_input``) scores each
    channel instead by the squared first-order loss change of removing all of it, per
    batch: ``(sum w * dL/dw)^2`` over its producing rows and biases, norm scale and shift
    and every consumer's input slice (an FFN neuron: its up-projection row and bias and its
    down-projection column); see :mod:`prunus.compression.torch.taylor_group`. Without
    labels, use ``criterion=RandomProjectionLoss(...)``.

    Example::

        pruner = TaylorFOWeightFilterPruner(model, config_list, data=loader,
                                            criterion=nn.CrossEntropyLoss())
    """

    needs_gradients = True

    def __init__(self, model: nn.Module, config_list: list[dict], *, global_sort: bool = False,
                 importance: str = 'filter', **options: Any):
        owner = type(self).__name__
        if not isinstance(global_sort, bool):
            raise TypeError(f'{owner}: global_sort must be a bool; got {global_sort!r}.')
        check_group_options(owner, importance, 'mean', None, options.get('dependency_aware', False))
        if importance == 'group' and options.get('dummy_input') is None:
            raise ValueError(f"{owner}: importance='group' needs dummy_input to find the groups.")
        self.global_sort, self.importance = global_sort, importance
        self._group_collector: GroupTaylorCollector | None = None
        super().__init__(model, config_list, **options)

    def is_global(self, entry) -> bool:
        """With ``global_sort`` (NNI 2.x), filters are ranked across all of an entry's layers."""
        return self.global_sort or super().is_global(entry)

    def make_collector(self, limit: int | None) -> Collector:
        """The collector of ``(w * dL/dw)^2`` per filter (``importance='group'``: of the
        signed ``w * dL/dw`` sums of every coupled slice) over at most ``limit`` batches."""
        if self.importance != 'group':
            return TaylorCollector(self.targets, limit, self.bound_model)
        groups, _ = dependency_structure(self.bound_model, self.dummy_input)
        mine = [g for g in groups if any(n in self.targets for n in g.names)]
        return GroupTaylorCollector(self.targets, mine, self.bound_model, limit)

    def compute_scores(self, collected: Collector) -> Scores:
        if not isinstance(collected, GroupTaylorCollector):
            return {n: collected.contributions[n] for n in self.targets}
        self._group_collector = collected
        scores = {}
        for group in collected.groups:  # a layer's channels score as their group's
            total = collected.group_scores(group)
            for n in group.names:
                if n in self.targets:
                    scores[n] = total[group.channels[n]]
        missing = [n for n in self.targets if n not in scores]
        if missing:
            raise ValueError(f"{type(self).__name__}: importance='group' found no channel group for "
                             f"{', '.join(repr(n) for n in missing)} in the traced model.")
        return scores

    def group_channel_scores(self, group: Any) -> torch.Tensor | None:
        """Group Taylor scores per channel of ``group`` (``importance='group'``), else None."""
        if self._group_collector is None:
            return None
        return self._group_collector.group_scores(group)
