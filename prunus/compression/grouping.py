"""Channel grouping shared by the PyTorch and the Keras speedup: channels that must be
removed together get tied in a union-find over integer channel ids.

Both speedups label every channel of every tensor with an id; an operation that makes two
channels one (a residual add, a BatchNorm, a shared layer) ties their ids, and a group of
tied ids is then kept or removed as a whole. Framework-free: ids are numpy arrays.

The dependency-aware pruners of both frameworks then rank a group as one
(:func:`group_scores`, :func:`group_keep`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .allocation import keep_mask


class UnionFind:
    """Disjoint sets over integer ids ``1..n``; id 0 is reserved for "no channel".

    Parents live in a numpy array and every id's parent is never larger than the id, so
    whole-array pointer jumping finds all roots at once: a residual add ties thousands of
    channel pairs in a few vectorized steps instead of one Python call per pair.
    """

    def __init__(self) -> None:
        self._parent = np.zeros(64, dtype=np.int64)
        self._size = 1
        self._flat = True  # every parent is a root (no union since the last flatten)

    @property
    def parent(self) -> np.ndarray:
        """The parent of every allocated id (a view; index 0 is the "no channel" id)."""
        return self._parent[:self._size]

    def fresh(self, n: int) -> np.ndarray:
        """Allocate ``n`` new singleton ids and return them as a 1-D int64 array."""
        start, end = self._size, self._size + n
        if end > len(self._parent):
            grown = np.zeros(max(2 * len(self._parent), end), dtype=np.int64)
            grown[:self._size] = self._parent[:self._size]
            self._parent = grown
        self._parent[start:end] = np.arange(start, end)
        self._size = end
        return np.arange(start, end, dtype=np.int64)

    def _flatten(self) -> np.ndarray:
        """Point every id straight at its root and return the parent array."""
        parent = self.parent
        if self._flat:
            return parent
        self._flat = True
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent
            parent[:] = grand

    def find(self, i: int) -> int:
        """Return the representative of ``i``."""
        parent = self._parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return int(i)

    def union(self, a: int, b: int) -> None:
        """Tie ids ``a`` and ``b`` (0 is never tied to anything)."""
        if a == 0 or b == 0:
            return
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self._parent[max(ra, rb)] = min(ra, rb)
            self._flat = False

    def union_many(self, a: np.ndarray, b: np.ndarray) -> None:
        """Tie ``a[k]`` with ``b[k]`` for every k (pairs with a 0 are skipped)."""
        a, b = np.asarray(a, dtype=np.int64).ravel(), np.asarray(b, dtype=np.int64).ravel()
        keep = (a != 0) & (b != 0)
        a, b = a[keep], b[keep]
        while a.size:
            parent = self._flatten()
            ra, rb = parent[a], parent[b]
            differ = ra != rb
            if not differ.any():
                return
            lo, hi = np.minimum(ra, rb)[differ], np.maximum(ra, rb)[differ]
            # duplicate roots in hi: one write wins; the loop merges the rest next round
            parent[hi] = lo
            self._flat = False
            a, b = a[differ], b[differ]

    def roots(self, ids: np.ndarray) -> np.ndarray:
        """Map every id of ``ids`` to its representative (0 stays 0), same shape."""
        parent = self._flatten()
        return parent[np.asarray(ids, dtype=np.int64)]


def group_scores(size: int, channels: Mapping[str, np.ndarray], scores: Mapping[str, Any]) -> np.ndarray:
    """A tied group's channel scores: channel ``c`` scores the sum of what its members
    (``channels[name]``: the group channel of each of their own channels) score there."""
    total = np.zeros(size, dtype=np.float64)
    for name, where in channels.items():
        np.add.at(total, np.asarray(where), np.asarray(scores[name], dtype=np.float64).ravel())
    return total


def group_keep(total: np.ndarray, sparsity: float, blocks: np.ndarray) -> np.ndarray:
    """Which of a group's channels stay: in every block (channels sharing a label in
    ``blocks``, the groups of a grouped convolution) the lowest-scoring
    ``round(sparsity * size)`` go, so every block loses the same share."""
    keep = np.zeros(len(total), dtype=bool)
    for label in np.unique(blocks):
        where = np.flatnonzero(blocks == label)
        keep[where] = keep_mask(total[where], sparsity)
    return keep


def even_blocks(size: int, count: int) -> np.ndarray:
    """Block labels of ``size`` channels split into ``count`` equal consecutive blocks."""
    return np.arange(size) // (size // count)
