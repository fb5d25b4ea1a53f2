"""Attention groups for head pruning: the Q/K/V and output projections of each attention.

A :class:`HeadGroup` is one attention module's head layout with fully qualified module
names. Groups come from the user (NNI's ``attention_name_groups``: ``[q, k, v, output]``
module names per attention, the first three equal for a packed ``qkv``), or are found in
the model: every module :func:`~prunus.layers.torch.heads.attention_layout` knows,
and for the layouts whose output projection lives outside the attention module
(Hugging Face BERT-style self-attention), the Linear that reads the attention's output,
found by one traced forward on ``dummy_input``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunus.layers.torch.heads import AttentionLayout, Slice, attention_layout, head_index
from prunus.speedup.trace import trace_model
from .head_gqa import kv_heads_pruned
from .head_unsupported import external_biases



@dataclass
class HeadGroup:
    """One attention's heads: ``name`` (the attention module, or the query projection for
    user groups), its layout with qualified module names, and the member module names."""

    name: str
    layout: AttentionLayout

    @property
    def members(self) -> list[str]:
        lay = self.layout
        names = [s.module for s in (lay.q, lay.k, lay.v, lay.out) if s is not None]
        return list(dict.fromkeys(names))

    @property
    def num_heads(self) -> int:
        return self.layout.num_heads


def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == 'Conv1D' and hasattr(module, 'nf')


def _out_axis(module: nn.Module) -> int:
    return 0 if _is_conv1d(module) else 1  # Conv1D weight is (in, out)


def _proj_slices(modules: dict[str, nn.Module], names: list[str], where: str
                 ) -> tuple[list[Slice], int]:
    for n in names:
        if n not in modules:
            raise ValueError(f"{where} names module '{n}', which the model does not have.")
        if not isinstance(modules[n], nn.Linear) and not _is_conv1d(modules[n]):
            raise ValueError(f"{where}: '{n}' is a {type(modules[n]).__name__}; Q/K/V and "
                             'output projections must be Linear (or transformers Conv1D).')
    q, k, v = (modules[n] for n in names[:3])
    width = [m.weight.shape[1 if _is_conv1d(m) else 0] for m in (q, k, v)]
    packed = names[0] == names[1] == names[2]
    if packed:
        if width[0] % 3:
            raise ValueError(f"{where}: packed projection '{names[0]}' has {width[0]} outputs, "
                             'not a multiple of 3.')
        inner = width[0] // 3
    elif width[1] != width[2] or width[0] % width[1]:
        raise ValueError(f'{where}: Q, K and V have widths {width}; K and V must be equal, and '
                         'Q a multiple of them (grouped-query attention).')
    else:
        inner = width[0]
    slices = []
    for i, (n, m) in enumerate(zip(names[:3], (q, k, v))):
        start = i * inner if packed else 0
        bias = 'bias' if getattr(m, 'bias', None) is not None else None
        w = inner if packed else width[i]  # K and V narrower in grouped-query attention
        slices.append(Slice(n, 'weight', bias, 1 if _is_conv1d(m) else 0, start, start + w))
    return slices, inner


def groups_from_names(model: nn.Module, name_groups: Any, head_dim: int) -> list[HeadGroup]:
    """Groups from NNI's ``attention_name_groups``: a list of ``[q, k, v, output]`` names."""
    if not isinstance(name_groups, (list, tuple)):
        raise TypeError('attention_name_groups must be a list of [q, k, v, output] name lists; '
                        f'got {type(name_groups).__name__}.')
    modules = dict(model.named_modules())
    groups = []
    for index, names in enumerate(name_groups):
        where = f'attention_name_groups[{index}]'
        if not isinstance(names, (list, tuple)) or len(names) != 4 or \
                not all(isinstance(n, str) for n in names):
            raise ValueError(f'{where} must be four module names [q, k, v, output]; got {names!r}.')
        (q, k, v), inner = _proj_slices(modules, list(names), where)
        out_mod = modules[names[3]]
        if not isinstance(out_mod, nn.Linear) and not _is_conv1d(out_mod):
            raise ValueError(f"{where}: output projection '{names[3]}' is a "
                             f'{type(out_mod).__name__}, not a Linear.')
        in_width = out_mod.weight.shape[0 if _is_conv1d(out_mod) else 1]
        if in_width != inner:
            raise ValueError(f"{where}: output projection '{names[3]}' reads {in_width} features, "
                             f'but Q/K/V produce {inner}.')
        if inner % head_dim:
            raise ValueError(f'{where}: the width {inner} is not a multiple of '
                             f'head_hidden_dim={head_dim}.')
        out = Slice(names[3], 'weight', None, _out_axis(out_mod), 0, inner)
        layout = AttentionLayout('named', inner // head_dim, head_dim, q, k, v, out, None)
        groups.append(HeadGroup(names[0], layout))
    return groups


def _consumer(trace: Any, site_name: str) -> str | None:
    """The handled layer whose input channels are exactly ``site_name``'s output channels."""
    site = trace.sites[site_name]
    if site.out_ids is None:
        return None
    mine = trace.uf.roots(site.out_ids)
    found = []
    for name, other in trace.sites.items():
        for call in other.calls:
            if call.in_ids is not None and len(call.in_ids) == len(mine) and \
                    bool((trace.uf.roots(call.in_ids) == mine).all()):
                found.append(name)
                break
    return found[0] if len(found) == 1 else None


def find_groups(model: nn.Module, dummy_input: Any) -> list[HeadGroup]:
    """Every attention module of ``model`` with a known layout, with its output projection;
    ``dummy_input`` (run once) finds the projections outside the attention modules (with
    ``dummy_input=None`` the attentions whose output projection lies outside are left out)."""
    found = [(n, attention_layout(m)) for n, m in model.named_modules()]
    found = [(n, lay) for n, lay in found if lay is not None]
    if dummy_input is None:
        found = [(n, lay) for n, lay in found if lay.out is not None]
    if any(lay.out is None for _, lay in found):
        was_training = model.training
        model.eval()
        try:
            trace = trace_model(model, dummy_input, constants=False)
        finally:
            model.train(was_training)
    outside = external_biases(model, {n: lay.num_heads for n, lay in found})
    if outside:
        raise ValueError('Cannot prune attention heads: ' + '; '.join(outside) + ', which the '
                         'speedup cannot shrink with the heads it feeds.')
    groups = []
    modules = dict(model.named_modules())
    for name, lay in found:
        lay = lay.qualified(name)
        if lay.out is None:
            out = _consumer(trace, name) if name in trace.sites else None
            if out is None or not isinstance(modules[out], nn.Linear):
                continue  # its output goes elsewhere too: no single output projection
            lay.out = Slice(out, 'weight', None, 1, 0, lay.inner)
        groups.append(HeadGroup(name, lay))
    return groups


def tie_scores(groups: list[HeadGroup], scores: dict) -> dict:
    """Scores in which the groups that must keep the same heads have the same scores
    (their sum), so each of them prunes the same heads: attention layers that share a
    per-head position bias (``shared_bias``: T5), tied by their name with the layer
    index left out (``decoder.block.*.layer.1.EncDecAttention``).

    Args:
        groups: the attention groups.
        scores: per group name, a score per head.

    Example::

        scores = tie_scores(pruner.masking_groups, scores)
    """
    ties: dict[str, list[HeadGroup]] = {}
    for g in groups:
        if g.layout.extra.get('shared_bias'):
            ties.setdefault(re.sub(r'\.\d+(?=\.|$)', '.*', g.name), []).append(g)
    out = dict(scores)
    for key, members in ties.items():
        if len({g.num_heads for g in members}) != 1:
            raise ValueError(f"attention layers '{key}' share a per-head position bias but have "
                             f'different head counts {sorted({g.num_heads for g in members})}.')
        total = sum(torch.as_tensor(scores[g.name], dtype=torch.float64) for g in members)
        out.update({g.name: total.clone() for g in members})
    return out


def head_rows(s: Slice, heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Indices along ``s.axis`` of the given heads' rows or columns in slice ``s``."""
    return head_index(s, heads, head_dim)


def mask_heads(model: nn.Module, group: HeadGroup, pruned: Any, masks: dict,
               unit: int | None = None) -> None:
    """Adds to ``masks`` the masks zeroing the ``pruned`` heads' (or, with ``unit=1``, head
    dimensions') Q/K/V rows (and biases) and output columns; slices of one packed weight
    share one mask, and a mask already in ``masks`` gets the zeros too.

    Args:
        model: the model holding the group's modules.
        group: the attention group.
        pruned: the indices of the heads (or dimensions) to zero.
        masks: ``{module: {param: mask}}``, completed in place.
        unit: rows per pruned index (default: the head width).

    Example::

        masks = {}
        mask_heads(model, find_groups(model, (ids,))[0], [0, 3], masks)
    """
    lay = group.layout
    rows = torch.as_tensor(pruned, dtype=torch.long)
    grouped = unit is None and lay.kv_heads != lay.num_heads
    # under grouped-query attention a K/V head goes only when every query head it serves goes
    shared = torch.as_tensor(kv_heads_pruned(lay, rows.tolist()) if grouped else [], dtype=torch.long)
    for s in (lay.q, lay.k, lay.v, lay.out):
        module = model.get_submodule(s.module)
        mine = shared if grouped and s in (lay.k, lay.v) else rows
        index = head_rows(s, mine, unit or lay.head_dim)
        for pname, axis in ((s.weight, s.axis), (s.bias, 0)):
            if pname is None:
                continue
            param = getattr(module, pname)
            entry = masks.setdefault(s.module, {})
            mask = entry.get(pname)
            if mask is None:
                mask = entry[pname] = torch.ones_like(param, dtype=param.dtype)
            if len(index):
                mask.index_fill_(axis, index.to(mask.device), 0)
