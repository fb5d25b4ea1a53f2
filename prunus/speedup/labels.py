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

import torch

from prunus.compression import grouping


class UnionFind(grouping.UnionFind):
    """The core union-find (:class:`prunus.compression.grouping.UnionFind`) with torch
    tensors in and out, since the tracer's channel labels are tensors."""

    def fresh(self, n: int) -> torch.Tensor:
        """Allocate ``n`` new singleton ids and return them as a 1-D int64 tensor."""
        return torch.from_numpy(super().fresh(n))

    def roots(self, ids: torch.Tensor) -> torch.Tensor:
        """Map every id of ``ids`` to its representative (0 stays 0)."""
        return torch.from_numpy(super().roots(ids.numpy())).reshape(ids.shape)


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
