"""Attention heads asked for through ``config_list``: entries with ``'granularity': 'head'``.

The filter pruners (L1, L2, FPGM, APoZ, mean activation, Taylor FO; AGP with any of
them) and the automatic searches read this key. An entry such as
``{'granularity': 'head', 'sparsity': 0.5, 'op_types': ['Linear']}`` prunes whole
attention heads instead of output channels:

* which attentions: every attention module with a known head layout
  (:func:`prunus.layers.torch.heads.attention_layout`) that the entry selects, either
  itself (``op_types: ['BertSelfAttention']`` or ``['MultiheadAttention']``, ``op_names``
  naming it) or through one of its Q/K/V/output projections (``op_types: ['Linear']``).
  The entry's other layers are not pruned by it. An output projection that lies outside
  its attention module (BERT) is found by tracing the pruner's ``dummy_input``;
* how much: ``sparsity`` is the fraction of each attention's heads removed,
  ``total_sparsity`` ranks the heads of all the entry's attentions together
  (``max_sparsity_per_layer`` caps one attention); every attention keeps one head at
  least. Counts are ``round(sparsity * heads)``;
* which heads: the pruner's own channel criterion on the head's Q, K and V rows, summed
  over them (weight criteria score a packed or ``Conv1D`` weight's rows directly);
* masks: the head's Q/K/V rows and biases and its output-projection columns, as
  :class:`~prunus.compression.torch.TransformerHeadPruner` masks them, so the masked model
  already computes what the head-removed model computes and the speedup removes them.

The Q/K/V projections of a head-pruned attention are pruned by heads only: a channel
entry selecting them as well leaves them alone. Its output projection may also be a
channel target of another entry (its output rows); the two masks multiply.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..allocation import global_keep_masks, keep_mask
from ..config import ConfigEntry
from ..errors import ConfigValueError
from ..selection import LayerRef, select_layers
from prunus.layers.torch import specs
from prunus.layers.torch.heads import attention_layout
from prunus.layers.torch.masking import Masks
from .head_groups import HeadGroup, find_groups, mask_heads

KEY = 'granularity'


@dataclass
class HeadTarget:
    """An attention group pruned by heads and the config entry that asks for it.

    Example::

        [(t.group.name, t.entry.get('sparsity')) for t in select_heads(model, entries, x, 'L1')]
    """

    group: HeadGroup
    entry: ConfigEntry

    @property
    def projections(self) -> list[str]:
        """The Q/K/V modules (one for a packed projection), in order."""
        lay = self.group.layout
        return list(dict.fromkeys(s.module for s in (lay.q, lay.k, lay.v)))


def is_head_entry(entry: ConfigEntry) -> bool:
    """Whether ``entry`` asks for attention heads (``'granularity': 'head'``).

    Args:
        entry: a validated config entry.

    Example::

        is_head_entry(validate_config_list([{'sparsity': 0.5, 'op_types': ['Linear'],
                                             'granularity': 'head'}], spec)[0])   # True
    """
    return entry.get(KEY) == 'head'


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == 'Conv1D' and hasattr(module, 'nf')


def _refs(model: nn.Module) -> list[LayerRef]:
    refs = []
    for name, module in model.named_modules():
        kinds = tuple(t.__name__ for t in specs.FILTERED if isinstance(module, t) and type(module) is not t)
        refs.append(LayerRef(name, type(module).__name__, kinds))
    return refs


def _unfound(model: nn.Module, groups: list[HeadGroup], owner: Mapping[str, ConfigEntry],
             dummy_input: Any, pruner: str) -> None:
    """An attention the entries select but whose output projection was not found: an
    error without ``dummy_input`` (it is needed to find it), else a warning."""
    found = {g.name for g in groups}
    for name, module in model.named_modules():
        lay = attention_layout(module) if name not in found else None
        if lay is None:
            continue
        lay = lay.qualified(name)
        picked = [owner[n] for n in (name, lay.q.module, lay.k.module, lay.v.module) if n in owner]
        if not picked:
            continue
        if dummy_input is None:
            raise ConfigValueError(f"{picked[0].where}['{KEY}'] is 'head' and selects attention '{name}', "
                                   f'whose output projection lies outside it: {pruner} needs dummy_input= '
                                   'to find it.')
        warnings.warn(f"{pruner}: attention '{name}' has no single output projection (its output feeds "
                      'several layers), so its heads are not pruned.', stacklevel=4)


def _excluded(entries: Sequence[ConfigEntry], refs: list[LayerRef], supported: Sequence[str],
              default: Sequence[str], label: str) -> set[str]:
    """The modules the exclude entries select (wherever they stand)."""
    names: set[str] = set()
    for entry in entries:
        if not entry.exclude:
            continue
        selecting = ConfigEntry(entry.index, {**entry.values, 'exclude': False})
        try:
            chosen = select_layers([selecting], refs, supported_types=supported, default_types=default,
                                   pruner=label)
        except ConfigValueError:
            continue  # it excludes nothing a head entry could select
        names |= {s.layer.name for s in chosen}
    return names


def select_heads(model: nn.Module, entries: Sequence[ConfigEntry], dummy_input: Any,
                 pruner: str) -> list[HeadTarget]:
    """The attention groups the head entries of ``entries`` select, in model order. The
    last entry selecting a module wins; an exclude entry that takes back the attention or
    one of its projections keeps all of that attention's heads.

    Args:
        model: the model.
        entries: the whole validated config list.
        dummy_input: an example input, to find output projections outside attentions.
        pruner: the pruner's name, for messages.

    Returns:
        One :class:`HeadTarget` per selected attention; empty without head entries.

    Raises:
        ValueError: a head entry selects no attention, or two entries split one attention.

    Example::

        targets = select_heads(bert, entries, (input_ids,), 'L1FilterPruner')
    """
    heads = [e for e in entries if is_head_entry(e) or e.exclude]
    if not any(is_head_entry(e) for e in heads):
        return []
    modules = dict(model.named_modules())
    kinds = sorted({type(m).__name__ for m in modules.values() if attention_layout(m) is not None})
    # torch's own attention may be named on any model, as Conv2d may on one without convs
    supported = specs.names(specs.FILTERED) + ('Conv1D',) + tuple(sorted({*kinds, 'MultiheadAttention'}))
    refs, label = _refs(model), f"{pruner} ('{KEY}': 'head')"
    chosen = select_layers(heads, refs, supported_types=supported, default_types=tuple(kinds) or supported,
                           pruner=label)
    owner = {s.layer.name: s.entry for s in chosen}
    excluded = _excluded(heads, refs, supported, tuple(kinds) or supported, label) - set(owner)
    groups = find_groups(model, dummy_input)
    _unfound(model, groups, owner, dummy_input, pruner)
    targets = []
    for group in groups:
        if excluded & {group.name, *group.members}:
            continue  # excluding the attention or one of its projections keeps all its heads
        picks = {owner[n].index: owner[n] for n in [group.name, *group.members] if n in owner}
        if len(picks) > 1:
            raise ConfigValueError(f"attention '{group.name}' is selected by config_list entries "
                                   f'{sorted(picks)} asking for heads; one entry must select it.')
        if picks:
            targets.append(HeadTarget(group, next(iter(picks.values()))))
    for entry in entries:
        if is_head_entry(entry) and not any(t.entry is entry for t in targets):
            raise ConfigValueError(f"{entry.where}['{KEY}'] is 'head', but the entry selects no attention "
                                   f'module with a known head layout (attention types in the model: '
                                   f"{', '.join(kinds) or 'none'}).")
    return targets


def check_data_scorable(targets: Sequence[HeadTarget], model: nn.Module, pruner: str) -> None:
    """Data-driven criteria score heads from the Q/K/V Linear layers they watch; a head
    held in another weight (nn.MultiheadAttention's packed ``in_proj_weight``, GPT-2's
    ``Conv1D``) cannot be watched, so it is refused up front.

    Args:
        targets: the selected head targets.
        model: the model.
        pruner: the pruner's name, for messages.

    Example::

        check_data_scorable(select_heads(model, entries, x, 'TaylorFO'), model, 'TaylorFO')
    """
    for target in targets:
        lay = target.group.layout
        for s in (lay.q, lay.k, lay.v):
            if s.weight != 'weight' or not isinstance(model.get_submodule(s.module), nn.Linear):
                raise ConfigValueError(
                    f"{target.entry.where}['{KEY}'] is 'head', but {pruner} scores heads from the "
                    f"Q/K/V Linear layers it watches, and attention '{target.group.name}' keeps them in "
                    f"'{s.module}.{s.weight}'; use a weight criterion (L1, L2, FPGM) or "
                    'TransformerHeadPruner(ranking_criterion=...) for it.')


def _slice_scores(model: nn.Module, s: Any, scores: Mapping[str, torch.Tensor],
                  criterion: Callable | None) -> torch.Tensor:
    module = model.get_submodule(s.module)
    if s.module in scores and s.weight == 'weight' and isinstance(module, nn.Linear):
        return scores[s.module].detach().double().cpu().reshape(-1)[s.start:s.stop]
    weight = getattr(module, s.weight).detach()
    rows = weight.movedim(s.axis, 0)[s.start:s.stop]
    return criterion(rows.reshape(rows.shape[0], -1)).detach().double().cpu().reshape(-1)


def head_scores(model: nn.Module, group: HeadGroup, scores: Mapping[str, torch.Tensor],
                criterion: Callable | None = None) -> torch.Tensor:
    """Per head: the channel scores of its Q, K and V rows, summed.

    Args:
        model: the model.
        group: the attention group.
        scores: the pruner's channel scores per module (used for Linear projections).
        criterion: ``criterion(rows) -> scores`` for rows held elsewhere (packed weights).

    Example::

        head_scores(model, target.group, pruner.compute_scores(None), criteria.l1_filter)
    """
    lay = group.layout
    total = torch.zeros(lay.num_heads, dtype=torch.float64)
    for s in (lay.q, lay.k, lay.v):
        total += _slice_scores(model, s, scores, criterion).reshape(lay.num_heads, lay.head_dim).sum(1)
    return total


def _at_least_one(keep: np.ndarray, scores: np.ndarray) -> np.ndarray:
    if not keep.any():
        keep[int(np.argmax(scores))] = True  # a layer without heads would cut the model
    return keep


def head_keeps(targets: Sequence[HeadTarget], scores: Mapping[str, torch.Tensor],
               sparsity_of: Callable[[ConfigEntry], float],
               is_global: Callable[[ConfigEntry], bool]) -> dict[str, np.ndarray]:
    """Which heads survive, per attention group name (bool per head).

    Args:
        targets: the head targets.
        scores: per group name, its head scores (higher is kept).
        sparsity_of: the fraction an entry asks for now.
        is_global: whether an entry ranks its attentions' heads together.

    Example::

        head_keeps(targets, {t.group.name: s for ...}, pruner.sparsity_of, pruner.is_global)
    """
    keeps: dict[str, np.ndarray] = {}
    entries = list(dict.fromkeys(t.entry.index for t in targets))
    for index in entries:
        mine = [t for t in targets if t.entry.index == index]
        entry = mine[0].entry
        flat = {t.group.name: scores[t.group.name].numpy() for t in mine}
        if is_global(entry):
            keeps.update(global_keep_masks(flat, sparsity_of(entry), entry.get('max_sparsity_per_layer'),
                                           entry.where, min_keep=1))
        else:
            keeps.update({n: _at_least_one(keep_mask(s, sparsity_of(entry)), s) for n, s in flat.items()})
    return keeps


def masks_of_heads(model: nn.Module, targets: Sequence[HeadTarget], keeps: Mapping[str, np.ndarray],
                   masks: Masks | None = None) -> Masks:
    """``masks`` (default: none) with the pruned heads' masks multiplied in.

    Args:
        model: the model.
        targets: the head targets.
        keeps: per group name, which heads survive.
        masks: channel masks to combine with (not modified).

    Example::

        masks = masks_of_heads(model, targets, head_keeps(targets, scores, sparsity_of, is_global))
    """
    heads: Masks = {}
    for target in targets:
        keep = keeps.get(target.group.name)
        if keep is not None:
            mask_heads(model, target.group, np.flatnonzero(~np.asarray(keep)).tolist(), heads)
    out = {n: dict(m) for n, m in (masks or {}).items()}
    for name, per_param in heads.items():
        mine = out.setdefault(name, {})
        for pname, mask in per_param.items():
            mine[pname] = mask if pname not in mine else mine[pname] * mask
    return out
