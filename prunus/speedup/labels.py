"""Channel labels: which pruning channel each element of a tensor belongs to.

A *label tensor* ``L`` accompanies every traced activation. It has the activation's rank;
along each dimension its size is either the activation's size or 1 (broadcast), and each
entry is a channel id (``>= 1``) or ``0`` for "belongs to no prunable channel" (model
inputs, freshly created tensors). Ids live in a :class:`UnionFind`: two ids in the same
set are *tied*, i.e. they must be removed together or not at all.

Example: a Conv2d with 4 output channels gives its ``(N, 4, H, W)`` output the label tensor
``[[[[7]], [[8]], [[9]], [[10]]]]`` (shape ``(1, 4, 1, 1)``). ``torch.flatten(x, 1)`` of that
output has labels ``(1, 4*H*W)`` with each id repeated ``H*W`` times, which is how a
following Linear learns that its input features come in channel blocks. Adding a second
tensor with ids ``11..14`` unions 7 with 11, 8 with 12 and so on (a residual tie).

Keeping labels broadcast makes the common cases (pointwise ops, pooling, permutes) cost
``O(channels)`` instead of ``O(activation size)``; reshapes expand them fully and
re-compress, which is still cheap at the small example inputs a speedup runs on.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ['UnionFind', 'compress', 'expand_dims', 'none_like', 'broadcast_union',
           'varying_dims']


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

    def fresh(self, n: int) -> torch.Tensor:
        """Allocate ``n`` new singleton ids and return them as a 1-D int64 tensor."""
        start, end = self._size, self._size + n
        if end > len(self._parent):
            grown = np.zeros(max(2 * len(self._parent), end), dtype=np.int64)
            grown[:self._size] = self._parent[:self._size]
            self._parent = grown
        self._parent[start:end] = np.arange(start, end)
        self._size = end
        return torch.arange(start, end, dtype=torch.int64)

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

    def union_many(self, a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> None:
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

    def roots(self, ids: torch.Tensor) -> torch.Tensor:
        """Map every id of ``ids`` to its representative (0 stays 0)."""
        parent = self._flatten()
        return torch.from_numpy(parent[ids.numpy()]).reshape(ids.shape)


def none_like(shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Label tensor of rank ``len(shape)`` that says "no channel" everywhere (shared per
    rank: label tensors are never modified in place)."""
    return _none(len(shape))


@functools.lru_cache(maxsize=None)
def _none(rank: int) -> torch.Tensor:
    return torch.zeros((1,) * rank, dtype=torch.int64)


def varying_dims(labels: torch.Tensor) -> list[int]:
    """Dimensions along which ``labels`` is not broadcast (size > 1)."""
    return [d for d, s in enumerate(labels.shape) if s > 1]


def compress(labels: torch.Tensor) -> torch.Tensor:
    """Shrink every dimension along which ``labels`` is constant to size 1."""
    for d in range(labels.dim()):
        if labels.shape[d] > 1:
            first = labels.narrow(d, 0, 1)
            if torch.equal(labels, first.expand_as(labels)):
                labels = first
    return labels.contiguous()


def expand_dims(labels: torch.Tensor, shape: torch.Size | tuple[int, ...],
                dims: list[int] | None = None) -> torch.Tensor:
    """Expand broadcast dimensions of ``labels`` to ``shape`` (only ``dims`` if given)."""
    target = list(labels.shape)
    for d in range(len(shape)) if dims is None else dims:
        target[d] = shape[d]
    return labels.expand(target).contiguous()


def broadcast_union(uf: UnionFind, labels: list[torch.Tensor]) -> torch.Tensor:
    """Pointwise combination: tie aligned ids and return the output's labels."""
    if len(labels) == 1:
        return labels[0]
    out_shape = torch.broadcast_shapes(*(lab.shape for lab in labels))
    out = None
    for lab in labels:
        if not bool(lab.any()):
            continue
        lab = lab.expand(out_shape)
        if out is None:
            out = lab
            continue
        both = (out > 0) & (lab > 0)
        if bool(both.any()):
            uf.union_many(out[both], lab[both])
        out = torch.where(out > 0, out, lab)
    if out is None:
        return none_like(out_shape)
    return compress(out)
