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
    """Query heads to prune (``already`` included) so that about ``count`` are pruned.

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
    if count % g == 0 and count // g < kv and _groups_fit(already, g, count // g):
        order = torch.argsort(scores.view(kv, g).sum(1), stable=True)[:count // g]
        return {j * g + i for j in order.tolist() for i in range(g)}
    per = min(max(round(count / kv), max((_per_group(already, g) or [0]))), g - 1)
    chosen = set()
    for j in range(kv):
        part = scores[j * g:(j + 1) * g]
        chosen |= {j * g + int(i) for i in torch.argsort(part, stable=True)[:per]}
    return chosen


def _per_group(heads: set[int], g: int) -> list[int]:
    counts: dict[int, int] = {}
    for h in heads:
        counts[h // g] = counts.get(h // g, 0) + 1
    return list(counts.values())


def _groups_fit(already: set[int], g: int, groups: int) -> bool:
    """Earlier pruned heads are whole groups, no more than ``groups`` of them."""
    counts = _per_group(already, g)
    return all(c == g for c in counts) and len(counts) <= groups


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
