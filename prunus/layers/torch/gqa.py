"""Grouped-query attention (GQA, MQA): query heads that share key/value heads.

With ``kv`` key/value heads and ``g = num_heads // kv`` query heads per group, query
head ``h`` reads key/value head ``h // g``. A head-pruned GQA attention stays a GQA
attention only if every group it keeps keeps the same number of query heads, so heads
go in two ways, and a mask may use both: whole groups (the key/value rows go with their
query heads) and the same number of query heads from each remaining group (``g``
shrinks). Dead heads that fit neither stay, as zeros (still exact).

The attributes a GQA forward reads are updated with the heads: ``num_key_value_groups``
(``repeat_kv``), ``num_key_value_heads`` / ``num_kv_heads`` / ``kv_heads``, ``kv_dim``,
and, where the forward reads the head count from the shared model config (Phi-3 splits
its fused ``qkv_proj`` at ``config.num_attention_heads * head_dim``), a per-layer copy of
the config with the layer's own counts.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from prunus.layers.torch.heads import AttentionLayout

#: Attributes holding the number of key/value heads.
KV_COUNT_ATTRS = ('num_key_value_heads', 'num_kv_heads', 'kv_heads')


def group_size(lay: AttentionLayout) -> int:
    """Query heads per key/value head (1: plain multi-head attention)."""
    return lay.num_heads // lay.kv_heads


def gqa_keep(dead: torch.Tensor, lay: AttentionLayout) -> torch.Tensor:
    """The query heads to keep, given ``dead`` (bool per query head): groups whose heads
    are all dead go whole; from the others, the same number of dead heads each (the
    fewest any of them has). One group stays, with one head, if everything is dead."""
    g = group_size(lay)
    per_group = dead.view(lay.kv_heads, g)
    alive_groups = ~per_group.all(1)
    if not bool(alive_groups.any()):
        alive_groups[0] = True
        per_group = per_group.clone()
        per_group[0, 0] = False
    drop = int(per_group[alive_groups].sum(1).min())
    keep = []
    for j in alive_groups.nonzero().flatten().tolist():
        heads = torch.arange(j * g, (j + 1) * g)
        dropped = heads[per_group[j]][:drop]
        keep.extend(h for h in heads.tolist() if h not in set(dropped.tolist()))
    return torch.tensor(keep, dtype=torch.long)


def kv_keep(lay: AttentionLayout, keep: torch.Tensor) -> torch.Tensor:
    """The key/value heads that the kept query heads ``keep`` read."""
    return torch.unique(keep // group_size(lay))


def slice_heads(lay: AttentionLayout, which: str, keep: torch.Tensor) -> torch.Tensor:
    """The head indices of slice ``which`` ('q', 'k', 'v' or 'out') to keep."""
    return kv_keep(lay, keep) if which in ('k', 'v') else keep


def update_kv_attrs(module: nn.Module, lay: AttentionLayout, keep: torch.Tensor) -> None:
    """Sets the key/value head counts the forward reads (before ``lay`` changes)."""
    kv_new = len(kv_keep(lay, keep))
    g_old, g_new = group_size(lay), len(keep) // kv_new
    values = module.__dict__
    for attr in KV_COUNT_ATTRS:
        if values.get(attr) == lay.kv_heads:
            setattr(module, attr, kv_new)
    if values.get('num_key_value_groups') == g_old:
        module.num_key_value_groups = g_new
    if values.get('kv_dim') == lay.kv_heads * lay.head_dim:
        module.kv_dim = kv_new * lay.head_dim
    config = values.get('config')
    if lay.extra.get('config_heads') and getattr(config, 'num_attention_heads', None) == lay.num_heads:
        own = copy.copy(config)  # the layers share one config; this layer's counts differ
        own.num_attention_heads = len(keep)
        if getattr(own, 'num_key_value_heads', None) == lay.kv_heads:
            own.num_key_value_heads = kv_new
        module.config = own
