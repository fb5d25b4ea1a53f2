"""Choosing the heads of a grouped-query attention (GQA/MQA) to prune.

Pruned heads must leave a layout the speedup can remove exactly
(:mod:`prunus.layers.torch.gqa`): whole key/value groups, or the same number of query
heads from every group. Whole groups are preferred (their key/value rows go too) when
the count allows it; otherwise each group loses its lowest-scoring query heads evenly.
"""
from __future__ import annotations

import torch

from prunus.layers.torch.gqa import group_size
from prunus.layers.torch.heads import AttentionLayout


def choose_gqa_heads(scores: torch.Tensor, lay: AttentionLayout, count: int,
                     already: set[int]) -> set[int]:
    """Query heads to prune (``already`` included), as close to ``count`` as a removable
    layout allows: whole groups, or the same number from each group, whichever comes
    closer (whole groups on a tie: their K/V rows go too); an earlier iteration's choice
    fixes the way.

    Args:
        scores: importance per query head (low goes first).
        lay: the attention's layout (``num_heads``, ``kv_heads``).
        count: how many query heads to prune in all.
        already: heads pruned in an earlier iteration; they stay pruned.

    Example::

        pruned = choose_gqa_heads(torch.rand(8), layout, 4, set())
    """
    g, kv = group_size(lay), lay.kv_heads
    scores = scores.double().clone()
    scores[list(already)] = float('-inf')
    counts = _per_group(already, g)
    least = 1 if count > 0 else 0  # prune something when something was asked for
    whole = min(max(round(count / g), len(counts), least), kv - 1)
    even = min(max(round(count / kv), max(counts, default=0), least), g - 1)
    options = [(abs(whole * g - count), 0, 'whole'), (abs(even * kv - count), 1, 'even')]
    if already:  # keep the way the heads were pruned before
        options = [o for o in options if (o[2] == 'whole') == all(c == g for c in counts)]
    way = min(options)[2]
    if way == 'whole':
        order = torch.argsort(scores.view(kv, g).sum(1), stable=True)[:whole]
        return {j * g + i for j in order.tolist() for i in range(g)}
    chosen = set()
    for j in range(kv):
        part = scores[j * g:(j + 1) * g]
        chosen |= {j * g + int(i) for i in torch.argsort(part, stable=True)[:even]}
    return chosen


def _per_group(heads: set[int], g: int) -> list[int]:
    counts: dict[int, int] = {}
    for h in heads:
        counts[h // g] = counts.get(h // g, 0) + 1
    return list(counts.values())


def kv_heads_pruned(lay: AttentionLayout, pruned: list[int]) -> list[int]:
    """Key/value heads all of whose query heads are pruned (their K/V rows can go).

    Args:
        lay: the attention's layout.
        pruned: pruned query heads.

    Example::

        kv_heads_pruned(layout, [0, 1])   # [0] when two query heads share a K/V head
    """
    g, gone = group_size(lay), set(pruned)
    return [j for j in range(lay.kv_heads) if all(j * g + i in gone for i in range(g))]
