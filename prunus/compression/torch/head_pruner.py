"""NNI legacy's ``TransformerHeadPruner``: prunes whole attention heads.

Each attention group's heads are ranked by a criterion and the lowest go: their rows of
Q, K and V (weights and biases) and their columns of the output projection are masked,
so a pruned head contributes exactly nothing and the masked model already computes what
the model with the heads removed computes (``prunus.speedup.speedup`` then removes them).

Criteria (``ranking_criterion``):

* ``l1_weight`` / ``l2_weight``: the mean over Q, K, V of the L1 / L2 norm of the head's rows;
* ``l1_activation``: sum of |x| over the head's part of the output projection's input;
* ``l2_activation``: sum over tokens of the L2 norm of the head's part of that input;
* ``taylorfo``: sum of |x * dL/dx| there (Michel et al. 2019, Molchanov et al. 2017);
* ``taylorfo_group`` (prunus): the squared first-order loss change of removing the head,
  per batch, summed: ``(sum w * dL/dw)^2`` over its V rows and biases and its output
  columns, the slices whose zeroing removes it (Molchanov et al. 2019;
  :mod:`prunus.compression.torch.taylor_group`). Without
  labels, have ``forward_runner`` back-propagate a
  :class:`~prunus.compression.torch.taylor_group.RandomProjectionLoss`.

The activation criteria run ``forward_runner(model)``; ``taylorfo`` also needs gradients,
so its ``forward_runner`` calls ``loss.backward()`` (or ``trainer`` runs one epoch).

Example::

    pruner = TransformerHeadPruner(bert, [{'sparsity': 0.5, 'op_types': ['Linear']}],
                                   head_hidden_dim=64, dummy_input=(input_ids,))
    pruner.compress()
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import nn

from ..allocation import prune_count
from ..config import ConfigSpec, validate_config_list
from ..registry import register_pruner
from ..selection import LayerRef, select_layers
from .base import Pruner, Scores
from .head_gqa import choose_gqa_heads
from .head_unsupported import unsupported_attention
from .head_groups import HeadGroup, find_groups, groups_from_names, mask_heads, tie_scores
from .head_scores import HeadStatistics, HeadTaylorGroup, weight_scores
from prunus.layers.torch.masking import Masks, apply_masks

CRITERIA = ('l1_weight', 'l2_weight', 'l1_activation', 'l2_activation', 'taylorfo',
            'taylorfo_group')
_SUPPORTED = ('Linear', 'Conv1D', 'MultiheadAttention')


def _check_int(owner: str, key: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f'{owner}: {key} must be an integer >= {low}; got {value!r}.')


@register_pruner('transformer_head', framework='torch')
class TransformerHeadPruner(Pruner):
    """Prunes attention heads of Transformers (NNI legacy API).

    Args:
        model: the model.
        config_list: ``sparsity`` is the fraction of each group's heads to prune; the
            entry that selects a group's projections applies to it.
        head_hidden_dim: the width of one head (64 for BERT-base).
        attention_name_groups: ``[[q, k, v, output], ...]`` module names, one list per
            attention; found from ``dummy_input`` when None.
        dummy_input: an example input, to find the attention groups.
        ranking_criterion: one of ``l1_weight``, ``l2_weight``, ``l1_activation``,
            ``l2_activation``, ``taylorfo``, ``taylorfo_group``.
        global_sort: rank the heads of all groups of an entry together (every group
            keeps one head at least) instead of each group on its own.
        num_iterations: prune in this many steps of growing sparsity.
        epochs_per_iteration: training epochs (``trainer``) between the steps.
        optimizer: the optimizer given to ``trainer``.
        trainer: ``trainer(model, optimizer, criterion, epoch)`` trains one epoch.
        criterion: the loss given to ``trainer``.
        forward_runner: ``forward_runner(model)`` runs the data the activation and
            Taylor criteria are computed on.
        prune_head_dims: (prunus) prune ``sparsity`` of every head's dimensions instead of
            whole heads, the same number in each head; the speedup then narrows the heads
            (the softmax scale stays that of the original width).

    Example::

        pruner = TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], 64,
                                       attention_name_groups=[['q', 'k', 'v', 'o']])
        model = pruner.compress()
    """

    conformance = False  # needs head groups; tested in tests/pt/test_head_pruner.py
    structured = True
    config_spec = ConfigSpec(targets=('sparsity',), extra=())

    def __init__(self, model: nn.Module, config_list: list[dict], head_hidden_dim: int,
                 attention_name_groups: list | None = None, dummy_input: Any = None,
                 ranking_criterion: str = 'l1_weight', global_sort: bool = False,
                 num_iterations: int = 1, epochs_per_iteration: int = 1, optimizer: Any = None,
                 trainer: Callable | None = None, criterion: Callable | None = None,
                 forward_runner: Callable | None = None, *, prune_head_dims: bool = False):
        owner = type(self).__name__
        if not isinstance(prune_head_dims, bool):
            raise TypeError(f'{owner}: prune_head_dims must be a bool; got {prune_head_dims!r}.')
        if prune_head_dims and global_sort:
            raise ValueError(f'{owner}: prune_head_dims=True prunes the same number of dimensions '
                             'in every head of a group, so global_sort must be False.')
        self.prune_head_dims = prune_head_dims
        if not isinstance(model, nn.Module):
            raise TypeError(f'{owner} needs a torch.nn.Module as model; got {type(model).__name__}.')
        _check_int(owner, 'head_hidden_dim', head_hidden_dim, 1)
        _check_int(owner, 'num_iterations', num_iterations, 1)
        _check_int(owner, 'epochs_per_iteration', epochs_per_iteration, 0)
        if ranking_criterion not in CRITERIA:
            raise ValueError(f"{owner}: ranking_criterion must be one of {', '.join(CRITERIA)}; "
                             f'got {ranking_criterion!r}.')
        if not isinstance(global_sort, bool):
            raise TypeError(f'{owner}: global_sort must be a bool; got {global_sort!r}.')
        for key, fn in (('trainer', trainer), ('forward_runner', forward_runner),
                        ('criterion', criterion)):
            if fn is not None and not callable(fn):
                raise TypeError(f'{owner}: {key} must be callable; got {type(fn).__name__}.')
        if ranking_criterion.endswith('activation') and forward_runner is None:
            raise ValueError(f"{owner}: ranking_criterion='{ranking_criterion}' needs forward_runner "
                             'to run data through the model.')
        if ranking_criterion.startswith('taylorfo') and forward_runner is None and trainer is None:
            raise ValueError(f"{owner}: ranking_criterion='{ranking_criterion}' needs forward_runner (calling "
                             'loss.backward()) or trainer to compute gradients.')
        if num_iterations > 1 and epochs_per_iteration > 0 and trainer is None:
            raise ValueError(f'{owner}: num_iterations={num_iterations} with epochs_per_iteration='
                             f'{epochs_per_iteration} needs trainer to train between iterations.')
        if attention_name_groups is None and dummy_input is None:
            raise ValueError(f'{owner} needs attention_name_groups or dummy_input to find the '
                             'attention heads.')
        self.bound_model, self.config_list, self.optimizer = model, config_list, optimizer
        self.head_hidden_dim, self.ranking_criterion = head_hidden_dim, ranking_criterion
        self.global_sort, self.num_iterations = global_sort, num_iterations
        self.epochs_per_iteration = epochs_per_iteration
        self.trainer, self.criterion, self.forward_runner = trainer, criterion, forward_runner
        self.dummy_input = dummy_input
        self.entries = validate_config_list(config_list, self.config_spec, owner)
        self._select(model)
        groups = (groups_from_names(model, attention_name_groups, head_hidden_dim)
                  if attention_name_groups is not None else find_groups(model, dummy_input))
        if not groups:
            why = unsupported_attention(model, [])[:3]
            raise ValueError(f'{owner} found no attention module with a known head layout in '
                             f'{type(model).__name__}' + (': ' + '; '.join(why) if why else '') +
                             '; pass attention_name_groups=[[q, k, v, output], ...].')
        if attention_name_groups is None:
            for line in unsupported_attention(model, [g.name for g in groups]):
                logging.getLogger('prunus.pruning').warning(
                    '%s: not pruning the heads of %s.', owner, line)
        self.masking_groups = self._bind_groups(groups)
        self.pruned_heads: list[set[int]] = [set() for _ in self.masking_groups]
        #: with ``prune_head_dims``: per group, bool (heads, head_dim) of pruned dimensions
        self.pruned_dims = [torch.zeros(g.num_heads, g.layout.head_dim, dtype=torch.bool)
                            for g in self.masking_groups]

    def _select(self, model: nn.Module) -> None:
        refs = [LayerRef(n, type(m).__name__, ('Linear',) if isinstance(m, nn.Linear) else ())
                for n, m in model.named_modules()]
        selections = select_layers(self.entries, refs, supported_types=_SUPPORTED,
                                   default_types=_SUPPORTED, pruner=type(self).__name__)
        modules = dict(model.named_modules())
        self.targets = {s.layer.name: modules[s.layer.name] for s in selections}
        self.entry_of = {s.layer.name: s.entry for s in selections}

    def _bind_groups(self, groups: list[HeadGroup]) -> list[HeadGroup]:
        """The groups a config entry selects, each with its head count checked."""
        bound, self.group_entry = [], []
        for group in groups:
            chosen = {self.entry_of[m].index for m in group.members if m in self.entry_of}
            if not chosen:
                continue
            if len(chosen) > 1:
                raise ValueError(f"attention group '{group.name}' is selected by config_list "
                                 f'entries {sorted(chosen)}; one entry must select it.')
            lay = group.layout
            if lay.inner % self.head_hidden_dim:
                raise ValueError(f"{type(self).__name__}: attention '{group.name}' has width "
                                 f'{lay.inner}, not a multiple of head_hidden_dim='
                                 f'{self.head_hidden_dim}.')
            kv_inner = lay.k.stop - lay.k.start
            if kv_inner % self.head_hidden_dim:
                raise ValueError(f"{type(self).__name__}: attention '{group.name}' has key/value "
                                 f'width {kv_inner}, not a multiple of head_hidden_dim='
                                 f'{self.head_hidden_dim}.')
            lay.num_heads, lay.head_dim = lay.inner // self.head_hidden_dim, self.head_hidden_dim
            if lay.num_heads % lay.kv_heads:
                raise ValueError(f"{type(self).__name__}: attention '{group.name}' has "
                                 f'{lay.num_heads} query heads and {lay.kv_heads} key/value heads '
                                 f'of head_hidden_dim={self.head_hidden_dim}; the query heads must '
                                 'share the key/value heads evenly.')
            if lay.q.stride and self.prune_head_dims:
                raise ValueError(f"{type(self).__name__}: attention '{group.name}' interleaves Q, K "
                                 'and V per head in one weight; prune_head_dims=True is for heads '
                                 'stored one after the other: prune whole heads.')
            if lay.kv_heads != lay.num_heads and self.prune_head_dims:
                raise ValueError(f"{type(self).__name__}: attention '{group.name}' shares "
                                 f'{lay.kv_heads} key/value heads among {lay.num_heads} query heads '
                                 '(grouped-query attention); prune_head_dims=True cannot narrow '
                                 'shared heads: prune whole heads.')
            bound.append(group)
            self.group_entry.append(self.entry_of[next(m for m in group.members if m in self.entry_of)])
        if not bound:
            raise ValueError(f'{type(self).__name__}: config_list selects no attention group; '
                             'select the Q/K/V/output projections (e.g. op_types: [Linear]).')
        return bound

    # -- stages ----------------------------------------------------------------------
    def collect(self) -> HeadStatistics | HeadTaylorGroup | None:
        if self.ranking_criterion.endswith('weight'):
            return None
        if self.ranking_criterion == 'taylorfo_group':
            stats = HeadTaylorGroup(self.bound_model, self.masking_groups, self.prune_head_dims).start()
        else:
            stats = HeadStatistics(self.bound_model, self.masking_groups, self.ranking_criterion,
                                   self.prune_head_dims).start()
        try:
            if self.forward_runner is not None:
                self.forward_runner(self.bound_model)
            else:
                self.trainer(self.bound_model, optimizer=self.optimizer, criterion=self.criterion,
                             epoch=0)
        finally:
            stats.stop()
        if stats.batches == 0:
            raise ValueError(f"{type(self).__name__}: forward_runner ran no data through the "
                             'output projections, so no head could be scored.')
        return stats

    def compute_scores(self, collected: HeadStatistics | HeadTaylorGroup | None) -> Scores:
        if collected is None:
            p = 1 if self.ranking_criterion == 'l1_weight' else 2
            return {g.name: weight_scores(self.bound_model, g, p, self.prune_head_dims)
                    for g in self.masking_groups}
        return {g.name: collected.scores(i) for i, g in enumerate(self.masking_groups)}

    def _choose(self, scores: Scores, fraction: float) -> None:
        """Adds heads to ``pruned_heads`` until each group (or entry) reaches ``fraction``
        of its own sparsity; a group always keeps one head."""
        by_entry: dict[int, list[int]] = {}
        for i, entry in enumerate(self.group_entry):
            by_entry.setdefault(entry.index, []).append(i)
        for entry_index, members in by_entry.items():
            sparsity = self.group_entry[members[0]].get('sparsity', 0.0) * fraction
            for i in [i for i in members if self._grouped_kv(i)]:
                group = self.masking_groups[i]  # GQA: whole K/V groups or even per group
                self.pruned_heads[i] = choose_gqa_heads(
                    scores[group.name], group.layout, prune_count(group.num_heads, sparsity),
                    self.pruned_heads[i])
            members = [i for i in members if not self._grouped_kv(i)]
            if self.global_sort:
                total = sum(prune_count(self.masking_groups[i].num_heads, sparsity) for i in members)
                self._take(members, scores, total)
            else:
                for i in members:
                    self._take([i], scores, prune_count(self.masking_groups[i].num_heads, sparsity))

    def _grouped_kv(self, i: int) -> bool:
        lay = self.masking_groups[i].layout
        return lay.kv_heads != lay.num_heads

    def _take(self, members: list[int], scores: Scores, total: int) -> None:
        pruned = sum(len(self.pruned_heads[i]) for i in members)
        ranked = sorted((float(scores[self.masking_groups[i].name][h]), i, h) for i in members
                        for h in range(self.masking_groups[i].num_heads)
                        if h not in self.pruned_heads[i])
        for _, i, h in ranked:
            if pruned >= total:
                break
            if len(self.pruned_heads[i]) < self.masking_groups[i].num_heads - 1:
                self.pruned_heads[i].add(h)
                pruned += 1

    def _choose_dims(self, scores: Scores, fraction: float) -> None:
        """Each head of each group loses its lowest dimensions, the same number in every head."""
        for i, group in enumerate(self.masking_groups):
            sparsity = self.group_entry[i].get('sparsity', 0.0) * fraction
            total = min(prune_count(group.layout.head_dim, sparsity), group.layout.head_dim - 1)
            pruned = self.pruned_dims[i]
            for h in range(group.num_heads):
                order = [j for j in torch.argsort(scores[group.name][h], stable=True).tolist()
                         if not pruned[h, j]]
                for j in order[:max(total - int(pruned[h].sum()), 0)]:
                    pruned[h, j] = True

    def generate_masks(self, scores: Scores) -> Masks:
        masks: Masks = {}
        scores = tie_scores(self.masking_groups, scores)
        if self.prune_head_dims:
            self._choose_dims(scores, self._fraction)
            for i, group in enumerate(self.masking_groups):
                mask_heads(self.bound_model, group, self.pruned_dims[i].reshape(-1).nonzero().flatten(),
                             masks, unit=1)
            return masks
        self._choose(scores, self._fraction)
        for i, group in enumerate(self.masking_groups):
            mask_heads(self.bound_model, group, sorted(self.pruned_heads[i]), masks)
        return masks

    # -- public verbs ----------------------------------------------------------------
    def calc_masks(self) -> Masks:
        self._fraction = 1.0
        return super().calc_masks()

    def compress(self) -> nn.Module:
        """Prunes in ``num_iterations`` steps (training in between) and attaches the masks."""
        for step in range(1, self.num_iterations + 1):
            if step > 1 and self.trainer is not None:
                for epoch in range(self.epochs_per_iteration):
                    self.trainer(self.bound_model, optimizer=self.optimizer,
                                 criterion=self.criterion, epoch=epoch)
            self._fraction = step / self.num_iterations
            masks = self.generate_masks(self.compute_scores(self.collect()))
            apply_masks(self.bound_model, masks, owned=True)
        return self.bound_model

    def get_pruned_heads(self) -> dict[str, list[int]]:
        """Pruned head indices by attention group name."""
        return {g.name: sorted(self.pruned_heads[i]) for i, g in enumerate(self.masking_groups)}

    def __repr__(self) -> str:
        return f'{type(self).__name__}({len(self.masking_groups)} attention groups)'
