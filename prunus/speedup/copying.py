"""A faster ``copy.deepcopy`` for models: one ``clone()`` per parameter and buffer.

``copy.deepcopy`` of a model spends most of its time in the per-tensor Python path
(``Parameter.__deepcopy__``, storage copies, attribute dicts): about 60 ms for a
ResNet-50 whose tensors clone in 9 ms. The speedup copies the user's model twice (once to
trace it for the dependency-aware pruner, once to shrink it), so it pre-fills deepcopy's
memo with plain clones and lets deepcopy copy only the module structure.
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

__all__ = ['copy_model']


def _clone(t: torch.Tensor) -> torch.Tensor | None:
    """A detached clone of a plain tensor or parameter; None for anything unusual
    (tensor subclasses, tensors with Python attributes), which deepcopy then handles."""
    if t.__dict__ or type(t) not in (torch.Tensor, nn.Parameter):
        return None
    data = t.detach().clone(memory_format=torch.preserve_format)
    if type(t) is nn.Parameter:
        return nn.Parameter(data, t.requires_grad)
    return data


def copy_model(model: nn.Module) -> nn.Module:
    """An independent copy of ``model``, like ``copy.deepcopy(model)`` but without
    gradients: tensors are cloned directly, everything else is deep-copied."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        if id(t) not in memo:
            clone = _clone(t)
            if clone is not None:
                memo[id(t)] = clone
    return copy.deepcopy(model, memo)
