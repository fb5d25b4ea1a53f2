"""One-shot pruners whose criterion reads only the weights: Level, L1/L2 filter, FPGM, Slim."""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from ..config import ConfigEntry, ConfigSpec
from ..registry import register_pruner
from ..widths import check_round_to, round_keep
from prunus.layers.torch import specs
from . import criteria
from .base import Pruner, Scores
from .dependency import dependency_keeps
from .group_importance import check_group_options
from .head_entries import (check_data_scorable, head_keeps, head_scores, is_head_entry,
                           masks_of_heads, select_heads)
from prunus.layers.torch.masking import Masks
from .regularization import BatchNormL1Subgradient


@register_pruner('level', framework='torch')
class LevelPruner(Pruner):
    """Unstructured magnitude pruning: the smallest |w| of each layer are masked.

    Example::

        pruner = LevelPruner(model, [{'sparsity': 0.8, 'op_types': ['default']}])
        model = pruner.compress()
    """

    def __init__(self, model: nn.Module, config_list: list[dict], optimizer: Any = None):
        super().__init__(model, config_list, optimizer)

    def compute_scores(self, collected: Any) -> Scores:
        return {name: criteria.magnitude(module.weight) for name, module in self.targets.items()}


def check_dependency_args(owner: str, dependency_aware: Any, dummy_input: Any) -> None:
    if not isinstance(dependency_aware, bool):
        raise TypeError(f'{owner}: dependency_aware must be a bool; got {dependency_aware!r}.')
    if dependency_aware and dummy_input is None:
        raise ValueError(f'{owner}: dependency_aware=True needs dummy_input to trace the model.')


class FilterPruner(Pruner):
    """Base of structured pruners: removes whole output channels of Conv/ConvTranspose/Linear
    layers (and the bias of every removed channel).

    ``round_to=N`` (keyword) keeps every layer's and tied group's channel count a multiple
    of N (see :mod:`prunus.compression.widths`).

    A config entry with ``'granularity': 'head'`` prunes whole attention heads of the
    attentions it selects instead (``sparsity``: the fraction of each attention's heads,
    ``total_sparsity``: ranked over all of them; the pruner's criterion on the heads'
    Q/K/V rows; see :mod:`prunus.compression.torch.head_entries`). An output projection
    outside its attention module (BERT) is found by tracing ``dummy_input``.
    ``round_to`` and ``dependency_aware`` apply to the channel entries.
    """

    supported_types = specs.FILTERED
    default_types = specs.CONV + specs.CONV_TRANSPOSE
    structured = True
    importance = 'filter'
    config_spec = ConfigSpec(extra=('max_sparsity_per_layer', 'granularity'))
    #: Whether the criterion reads data (a head held in a packed weight cannot be scored).
    needs_data = False

    def __init__(self, model: nn.Module, config_list: list[dict], optimizer: Any = None,
                 dependency_aware: bool = False, dummy_input: Any = None, *,
                 round_to: int | None = None):
        check_dependency_args(type(self).__name__, dependency_aware, dummy_input)
        check_round_to(type(self).__name__, round_to)
        self.dummy_input = dummy_input
        super().__init__(model, config_list, optimizer)
        self.dependency_aware = dependency_aware
        self.round_to = round_to

    def select_targets(self, model: nn.Module, entries: list[ConfigEntry]) -> None:
        """Channel entries select layers as usual; head entries select attentions, whose
        Q/K/V Linear layers become targets scored by the criterion (see the class doc)."""
        owner = type(self).__name__
        self.head_targets = select_heads(model, entries, getattr(self, 'dummy_input', None), owner)
        channel = [e for e in entries if not is_head_entry(e)]
        if any(not e.exclude for e in channel):
            super().select_targets(model, channel)
        else:
            self.selections, self.targets, self.entry_of = [], {}, {}
        if not self.head_targets:
            return
        if self.needs_data:
            check_data_scorable(self.head_targets, model, owner)
        projections = {n: t.entry for t in self.head_targets for n in t.projections}
        self.targets = {n: m for n, m in self.targets.items() if n not in projections}
        self.entry_of = {n: e for n, e in self.entry_of.items() if n not in projections}
        for name, entry in projections.items():
            module = model.get_submodule(name)
            if isinstance(module, nn.Linear):
                self.targets[name], self.entry_of[name] = module, entry

    @property
    def head_projections(self) -> set[str]:
        """The targets scored for heads, not pruned as channels."""
        return {n for t in self.head_targets for n in t.projections}

    def generate_masks(self, scores: Scores) -> Masks:
        """Channel masks of the channel entries, with the head entries' head masks."""
        heads = self.head_projections
        masks = super().generate_masks({n: s for n, s in scores.items() if n not in heads})
        if not self.head_targets:
            return masks
        criterion = getattr(type(self), 'filter_criterion', None)
        per_head = {t.group.name: head_scores(self.bound_model, t.group, scores, criterion)
                    for t in self.head_targets}
        keeps = head_keeps(self.head_targets, per_head, self.sparsity_of, self.is_global)
        return masks_of_heads(self.bound_model, self.head_targets, keeps, masks)

    def generate_keeps(self, scores: Scores) -> dict[str, np.ndarray]:
        """Per-layer keeps; with ``dependency_aware`` tied layers share their channels."""
        keeps = super().generate_keeps(scores)
        if self.round_to:
            keeps = {n: round_keep(k, scores[n].detach().double().cpu().numpy().reshape(-1),
                                   self.round_to) if n in scores else k
                     for n, k in keeps.items()}
        if self.dependency_aware:
            keeps = dependency_keeps(self, scores, keeps)
        return keeps

    def filters(self, name: str) -> torch.Tensor:
        module = self.targets[name]
        return specs.filter_matrix(module, module.weight)


class WeightFilterPruner(FilterPruner):
    """A filter pruner scored by a function of each layer's filter matrix alone.

    Keywords beyond NNI's: ``importance='filter'`` (NNI's criterion on each layer's filters,
    the default) or ``'group'`` (with ``dependency_aware=True``: a channel's score over every
    parameter coupled to it, the producing filters, BatchNorm scale and shift and the
    consumers' input slices, combined by ``group_reduction`` in ``'mean'`` (default),
    ``'sum'``, ``'max'``, ``'first'`` after ``group_normalization`` in None (default: raw
    magnitudes), ``'max'``, ``'mean'``, ``'sum'``; see :mod:`prunus.compression.torch.group_importance`); ``round_to``.
    """

    filter_criterion: ClassVar[Callable[[torch.Tensor], torch.Tensor]]
    group_p: ClassVar[int] = 1  # the norm of the group scores

    def __init__(self, model: nn.Module, config_list: list[dict], *, dependency_aware: bool = False,
                 dummy_input: Any = None, optimizer: Any = None, importance: str = 'filter',
                 group_reduction: str = 'mean', group_normalization: str | None = None,
                 round_to: int | None = None):
        check_group_options(type(self).__name__, importance, group_reduction,
                            group_normalization, dependency_aware)
        super().__init__(model, config_list, optimizer, dependency_aware, dummy_input,
                         round_to=round_to)
        self.importance = importance
        self.group_reduction, self.group_normalization = group_reduction, group_normalization

    def compute_scores(self, collected: Any) -> Scores:
        return {name: type(self).filter_criterion(self.filters(name)) for name in self.targets}


@register_pruner('l1', framework='torch')
class L1FilterPruner(WeightFilterPruner):
    """Prunes the filters with the smallest sum of absolute weights (Li et al., 2017).

    Example::

        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']},
                                 {'exclude': True, 'op_names': ['fc']}])
        model = pruner.compress()
    """

    filter_criterion = staticmethod(criteria.l1_filter)


@register_pruner('l2', framework='torch')
class L2FilterPruner(WeightFilterPruner):
    """Prunes the filters with the smallest L2 norm.

    Example::

        pruner = L2FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']},
                                 {'exclude': True, 'op_names': ['fc']}])
        model = pruner.compress()
    """

    filter_criterion = staticmethod(criteria.l2_filter)
    group_p = 2


@register_pruner('fpgm', framework='torch')
class FPGMPruner(WeightFilterPruner):
    """Prunes the filters nearest the geometric median of their layer (He et al., 2019).

    Example::

        pruner = FPGMPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']},
                                 {'exclude': True, 'op_names': ['fc']}])
        model = pruner.compress()
    """

    filter_criterion = staticmethod(criteria.fpgm)
    group_p = 2


@register_pruner('slim', framework='torch')
class SlimPruner(Pruner):
    """Network slimming (Liu et al., 2017): BatchNorm channels with the smallest |gamma|,
    ranked globally over the selected BatchNorm layers; weight and bias are both masked.

    Given ``trainer`` (and ``optimizer``), ``compress()`` first trains for
    ``sparsifying_training_epochs`` epochs with the L1 penalty ``scale * sum|gamma|``
    applied as a subgradient before each optimizer step, as the paper prescribes. For your
    own loop, add :func:`prunus.compression.torch.bn_l1_penalty` to the loss instead.

    Example::

        pruner = SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNorm2d']}])
        model = pruner.compress()
    """

    supported_types = specs.BATCH_NORM
    default_types = specs.BATCH_NORM
    structured = True
    global_by_default = True

    def __init__(self, model: nn.Module, config_list: list[dict], optimizer: Any = None,
                 trainer: Callable | None = None, criterion: Callable | None = None,
                 sparsifying_training_epochs: int = 10, scale: float = 0.0001,
                 dependency_aware: bool = False, dummy_input: Any = None):
        owner = type(self).__name__
        check_dependency_args(owner, dependency_aware, dummy_input)
        if trainer is not None and not callable(trainer):
            raise TypeError(f'{owner}: trainer must be callable as trainer(model, optimizer, '
                            f'criterion, epoch); got {type(trainer).__name__}.')
        if trainer is not None and optimizer is None:
            raise ValueError(f'{owner}: sparsity training with trainer= needs optimizer=.')
        if not isinstance(sparsifying_training_epochs, int) or sparsifying_training_epochs < 0:
            raise ValueError(f'{owner}: sparsifying_training_epochs must be an integer >= 0; '
                             f'got {sparsifying_training_epochs!r}.')
        if not isinstance(scale, (int, float)) or scale < 0:
            raise ValueError(f'{owner}: scale must be a number >= 0; got {scale!r}.')
        super().__init__(model, config_list, optimizer)
        self.trainer, self.criterion = trainer, criterion
        self.training_epochs, self.scale = sparsifying_training_epochs, scale
        self.dependency_aware, self.dummy_input = dependency_aware, dummy_input

    def collect(self) -> Any:
        if self.trainer is None:
            return None
        with BatchNormL1Subgradient(self.optimizer, list(self.targets.values()), self.scale):
            for epoch in range(self.training_epochs):
                self.trainer(self.bound_model, optimizer=self.optimizer, criterion=self.criterion,
                             epoch=epoch)
        return None

    def compute_scores(self, collected: Any) -> Scores:
        return {name: criteria.bn_scale(module.weight) for name, module in self.targets.items()}
