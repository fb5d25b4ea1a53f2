"""Turning importance scores into exactly-sized prune sets, per layer or globally.

Scores are 1-D numpy arrays (one value per weight for unstructured pruning, one per
channel for structured pruning); lower scores are pruned first. Counts are exact:
``round(sparsity * count)`` items are pruned (Python's ``round``, half to even), and ties
are broken deterministically by position (lower index first; across layers, earlier
layer first), so the same scores always give the same masks.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def prune_count(count: int, sparsity: float) -> int:
    """How many of ``count`` items a ``sparsity`` removes: ``round(sparsity * count)``.

    Args:
        count: the number of items (weights or channels).
        sparsity: the fraction to remove.

    Returns:
        The number of items to remove.

    Example::

        >>> prune_count(10, 0.25)
        2
    """
    return int(round(sparsity * count))


def lowest(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` lowest scores, ties broken by lower index.

    Args:
        scores: 1-D scores.
        k: how many indices to return.

    Returns:
        The indices, sorted by score (then index).

    Example::

        >>> lowest(np.array([3.0, 1.0, 1.0, 2.0]), 2).tolist()
        [1, 2]
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.argsort(scores, kind='stable')[:k]


def keep_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """Boolean keep-mask over ``scores`` pruning exactly ``round(sparsity * n)`` lowest.

    Args:
        scores: 1-D scores; the lowest are pruned.
        sparsity: the fraction of items to prune.

    Returns:
        A bool array, True where the item is kept.

    Example::

        >>> keep_mask(np.array([0.5, 0.1, 0.9, 0.3]), 0.5).tolist()
        [True, False, True, False]
    """
    scores = np.asarray(scores).reshape(-1)
    keep = np.ones(scores.shape[0], dtype=bool)
    keep[lowest(scores, prune_count(scores.shape[0], sparsity))] = False
    return keep


def global_keep_masks(scores: Mapping[str, np.ndarray], total_sparsity: float,
                      max_sparsity_per_layer: float | Mapping[str, float] | None = None,
                      where: str = 'config_list', min_keep: int = 0) -> dict[str, np.ndarray]:
    """Ranks all layers' scores together and prunes the lowest ``total_sparsity`` of them.

    Args:
        scores: per layer name, its 1-D scores, in model order.
        total_sparsity: fraction of all items (summed over layers) to prune.
        max_sparsity_per_layer: optional cap, a fraction for every layer or one per name;
            a layer never loses more than ``round(cap * count)`` items.
        where: names the config entry in error messages.
        min_keep: items every layer keeps whatever the caps say (structured pruning
            passes 1: a layer with no channel left cuts the network).

    Raises:
        ValueError: the caps make the total unreachable.

    Example::

        keeps = global_keep_masks({'a': np.array([1.0, 5.0]), 'b': np.array([2.0, 3.0])}, 0.5)
        # {'a': [False, True], 'b': [False, True]}: the two lowest of all four are pruned
    """
    names = list(scores)
    flat = [np.asarray(scores[n], dtype=np.float64).reshape(-1) for n in names]
    sizes = np.array([len(f) for f in flat], dtype=np.int64)
    total = int(sizes.sum())
    target = prune_count(total, total_sparsity)
    if total == 0:
        return {}
    # Rank of each item inside its own layer, so a per-layer cap is a vectorized compare.
    ranks = np.concatenate([np.argsort(np.argsort(f, kind='stable'), kind='stable') for f in flat])
    caps = np.array([max(0, min(_cap_for(n, len(f), max_sparsity_per_layer), len(f) - min_keep))
                     for n, f in zip(names, flat)], dtype=np.int64)
    layer_of = np.repeat(np.arange(len(names)), sizes)
    allowed = ranks < caps[layer_of]
    order = np.argsort(np.concatenate(flat), kind='stable')
    order = order[allowed[order]]
    if len(order) < target:
        limit = "'max_sparsity_per_layer'" if max_sparsity_per_layer is not None else 'keeping one channel per layer'
        raise ValueError(f"{where}: 'total_sparsity' {total_sparsity} asks for {target} of {total} "
                         f"items, but {limit} allows at most {len(order)}.")
    pruned = np.zeros(total, dtype=bool)
    pruned[order[:target]] = True
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return {n: ~pruned[bounds[i]:bounds[i + 1]] for i, n in enumerate(names)}


def _cap_for(name: str, count: int, cap: float | Mapping[str, float] | None) -> int:
    if cap is None:
        return count
    value = cap.get(name, 1.0) if isinstance(cap, Mapping) else cap
    return prune_count(count, value)


def distribute(counts: Sequence[int], sparsity: float) -> list[int]:
    """Per-layer prune counts for a uniform ``sparsity`` (each layer rounded on its own)."""
    return [prune_count(c, sparsity) for c in counts]
