"""Automated gradual pruning (Zhu & Gupta, 2017) with any registered algorithm."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from ..config import ConfigEntry, ConfigSpec, validate_config_list
from ..registry import register_pruner
from ..schedules import agp_sparsity, check_agp_entry, nni_agp_sparsity
from prunus.layers.torch import specs
from .base import Pruner
from .collect import Collector
from .data_pruners import DataDrivenFilterPruner
from .delegate import build_algorithm
from .distributed import average_scores, broadcast_masks
from prunus.layers.torch.masking import apply_masks

_DEFAULT_END_EPOCH = 10


@register_pruner('agp', framework='torch')
class AGPPruner(Pruner):
    """Raises sparsity along the cubic AGP curve while the model trains.

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3`` with ``t0 = start_epoch``,
    ``n * dt = ((end_epoch - start_epoch - 1) // frequency) * frequency`` (NNI 1.x's span,
    so the last update epoch before ``end_epoch`` is at ``s_f``) and masks updated every
    ``frequency`` epochs.
    Each update recomputes the masks with ``pruning_algorithm`` (any registered name).

    Two calling styles:

    * NNI 1.x: config keys ``initial_sparsity``, ``final_sparsity`` (or ``sparsity``),
      ``start_epoch``, ``end_epoch`` (default 10), ``frequency``; call ``compress()`` once,
      then ``pruner.update_epoch(epoch)`` at the start of every epoch of your own loop.

    The final sparsity may instead be given as ``total_sparsity`` (optionally with
    ``max_sparsity_per_layer``): every point of the curve is then a budget over all the
    entry's layers together, ranked globally, so small layers such as the first conv and
    the classifier keep the weights that matter instead of losing the same fraction as the
    big ones. That is the form to use for high sparsity over ``op_types: ['default']``.
    With a filter algorithm (``'l1'``, ``'l2'``, ``'fpgm'``, ``'apoz'``,
    ``'mean_activation'``, ``'taylorfo'``), an entry with ``'granularity': 'head'`` raises
    the fraction of attention heads removed along the curve (see
    :mod:`prunus.compression.torch.head_entries`); ``dummy_input`` finds the output
    projections that lie outside their attention modules.
    * NNI >= 2.3: pass ``trainer`` and ``criterion``; ``compress()`` runs
      ``num_iterations`` rounds, each pruning to the next point of the curve and then
      training ``epochs_per_iteration`` epochs with
      ``trainer(model, optimizer=..., criterion=..., epoch=...)``.

    Example::

        config_list = [{'initial_sparsity': 0, 'final_sparsity': 0.8, 'start_epoch': 0,
                        'end_epoch': 10, 'frequency': 1, 'op_types': ['default']}]
        pruner = AGPPruner(model, config_list, optimizer, pruning_algorithm='level')
        pruner.compress()
        for epoch in range(20):
            pruner.update_epoch(epoch)
            train_one_epoch(model, optimizer)
    """

    config_spec = ConfigSpec(targets=('final_sparsity', 'sparsity', 'total_sparsity'),
                             extra=('initial_sparsity', 'start_epoch', 'end_epoch', 'frequency',
                                    'max_sparsity_per_layer', 'granularity'))
    schedules_itself = True

    def __init__(self, model: nn.Module, config_list: list[dict], *, optimizer: Any = None,
                 trainer: Callable | None = None, criterion: Callable | None = None,
                 num_iterations: int = 10, epochs_per_iteration: int = 1,
                 pruning_algorithm: str = 'level', dummy_input: Any = None):
        owner = type(self).__name__
        for key, value in (('num_iterations', num_iterations), ('epochs_per_iteration', epochs_per_iteration)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f'{owner}: {key} must be an integer >= 1; got {value!r}.')
        if trainer is not None and not callable(trainer):
            raise TypeError(f'{owner}: trainer must be callable as trainer(model, optimizer, criterion, '
                            f'epoch); got {type(trainer).__name__}.')
        if trainer is not None and optimizer is None:
            raise ValueError(f'{owner}: training with trainer= needs optimizer=.')
        self.entries = validate_config_list(config_list, self.config_spec, owner)
        for entry in self.entries:
            self._check_schedule(entry)
        self.algorithm = build_algorithm(pruning_algorithm, owner, model, config_list, optimizer,
                                         trainer, criterion, dummy_input=dummy_input)
        self.bound_model, self.config_list, self.optimizer = model, config_list, optimizer
        self.targets, self.entry_of = self.algorithm.targets, self.algorithm.entry_of
        # The masks are the algorithm's, so is their granularity.
        self.structured, self.global_by_default = self.algorithm.structured, self.algorithm.global_by_default
        self.trainer, self.criterion = trainer, criterion
        self.num_iterations, self.epochs_per_iteration = num_iterations, epochs_per_iteration
        self.pruning_algorithm = pruning_algorithm
        self.applied: dict[int, float] = {}
        self.now_epoch = 0
        self._collector: Collector | None = None

    @staticmethod
    def _check_schedule(entry: ConfigEntry) -> None:
        check_agp_entry(entry, None if entry.exclude else AGPPruner.final_of(entry), _DEFAULT_END_EPOCH)

    @staticmethod
    def final_of(entry: ConfigEntry) -> float:
        for key in ('final_sparsity', 'sparsity', 'total_sparsity'):
            if key in entry:
                return entry.get(key)
        return 0.0

    # -- the schedule -----------------------------------------------------------------
    def sparsity_at_epoch(self, entry: ConfigEntry, epoch: int) -> float:
        """The AGP curve of ``entry`` at ``epoch`` (NNI 1.x style, in epochs)."""
        start, end = entry.get('start_epoch', 0), entry.get('end_epoch', _DEFAULT_END_EPOCH)
        return nni_agp_sparsity(epoch, start, end, entry.get('frequency', 1),
                                entry.get('initial_sparsity', 0.0), self.final_of(entry))

    def compute_target_sparsity(self, config: dict) -> float:
        """NNI's name: the scheduled sparsity of a config entry (a dict of ``config_list``)
        at the current epoch."""
        index = next((i for i, c in enumerate(self.config_list) if c is config), None)
        if index is None:
            index = next((i for i, c in enumerate(self.config_list) if c == config), None)
        entry = self.entries[index] if index is not None else None
        if entry is None:
            entry = validate_config_list([config], self.config_spec, type(self).__name__)[0]
        return self.sparsity_at_epoch(entry, self.now_epoch)

    def _updates_at(self, entry: ConfigEntry, epoch: int) -> bool:
        start, end = entry.get('start_epoch', 0), entry.get('end_epoch', _DEFAULT_END_EPOCH)
        if epoch < start:
            return False
        if epoch >= end:
            return self.applied.get(entry.index) != self.final_of(entry)
        return (epoch - start) % entry.get('frequency', 1) == 0

    def sparsity_of(self, entry: ConfigEntry) -> float:
        return self.applied.get(entry.index, 0.0)

    # -- masks --------------------------------------------------------------------------
    def _collect(self) -> Any:
        algo = self.algorithm
        if not isinstance(algo, DataDrivenFilterPruner) or self.trainer is not None:
            return algo.collect()
        collector, self._collector = self._collector, algo.make_collector(None).start()
        if collector is None or collector.batches == 0:
            raise RuntimeError(f"{type(self).__name__}: '{self.pruning_algorithm}' scores channels from "
                               'batches seen while you train, and no batch ran through the pruned '
                               'layers since the last update; train between update_epoch() calls.')
        collector.stop()
        return collector

    def _apply(self, sparsities: dict[int, float]) -> None:
        scheduled = {**self.applied, **sparsities}
        self.algorithm.scheduled = scheduled
        try:
            if all(value == 0.0 for value in scheduled.values()):
                masks = {n: self.algorithm.expand_keep(n, torch.ones(self._items(n), dtype=torch.bool))
                         for n in self.targets}
            else:
                # Averaged so that every rank's batches count for data-driven scores; the
                # broadcast below then removes any floating-point disagreement.
                scores = average_scores(self.algorithm.compute_scores(self._collect()))
                masks = self.algorithm.generate_masks(scores)
        except Exception:
            self.algorithm.scheduled = dict(self.applied)  # a failed update changes nothing
            raise
        apply_masks(self.bound_model, broadcast_masks(masks))
        self.applied = scheduled

    def _items(self, name: str) -> int:
        module = self.targets[name]
        return specs.out_channels(module) if self.algorithm.structured else module.weight.numel()

    def update_epoch(self, epoch: int) -> None:
        """Moves the schedule to ``epoch``; masks are recomputed on update epochs."""
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f'{type(self).__name__}.update_epoch: epoch must be an integer >= 0; got {epoch!r}.')
        self.now_epoch = epoch
        due = {e.index: self.sparsity_at_epoch(e, epoch) for e in self.entries
               if not e.exclude and self._updates_at(e, epoch)}
        if due:
            self._apply(due)

    def compress(self) -> nn.Module:
        """NNI 1.x: attaches the masks of epoch 0. With a trainer: prunes and trains to the end."""
        if self.trainer is None:
            if isinstance(self.algorithm, DataDrivenFilterPruner):
                self._collector = self.algorithm.make_collector(None).start()
            self._apply({e.index: 0.0 for e in self.entries if not e.exclude})
            self.update_epoch(0)
            return self.bound_model
        epoch = 0
        for iteration in range(1, self.num_iterations + 1):
            self._apply({e.index: agp_sparsity(iteration, 0, self.num_iterations,
                                               e.get('initial_sparsity', 0.0), self.final_of(e))
                         for e in self.entries if not e.exclude})
            for _ in range(self.epochs_per_iteration):
                self.trainer(self.bound_model, optimizer=self.optimizer, criterion=self.criterion, epoch=epoch)
                epoch += 1
        return self.bound_model
