"""Working copies of the user's model that copy no tensor data until they must.

A speedup must never change the user's model, so it works on a copy. ``copy.deepcopy``
copies every weight up front (and prunus' mask buffers, as large again): on a ResNet-50
that is ~200 MB of fresh memory, slower than the forward pass the speedup needs. Most of
those copies are thrown away, because pruning replaces each pruned weight by a smaller
slice anyway. So the work happens on a *shared copy*: its own module objects, sharing
every parameter and buffer with the original. Code working on it replaces tensors and
never writes into them (handlers assign new parameters); :func:`unshare` clones what is
still shared at the end, so the result is independent of the user's model.
"""
from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from prunus.compression.torch import masking

__all__ = ['shared_copy', 'unshare']


def _drop_mask_machinery(model: nn.Module) -> None:
    """Remove prunus mask buffers, hooks and markers from ``model``'s own module objects,
    leaving the (shared) parameters alone: ``masking.strip`` would bake the masks into
    them in place and unregister them from the optimizer hook of the original."""
    for module in model.modules():
        for pname in getattr(module, masking._MASKED_ATTR, ()):
            module._buffers.pop(f'{pname}_mask', None)
        module.__dict__.pop(masking._MASKED_ATTR, None)
        for hooks in (module._forward_pre_hooks, module._forward_hooks,
                      module._load_state_dict_post_hooks):
            for key, hook in list(hooks.items()):
                fn = getattr(hook, '__wrapped__', hook)
                if (getattr(fn, '__module__', '') or '').startswith('prunus.compression'):
                    del hooks[key]
                    getattr(module, '_forward_hooks_always_called', {}).pop(key, None)


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s module tree sharing every parameter and buffer with it,
    without prunus masks (the mask buffers and hooks are gone; weights are as stored).

    Replace its tensors freely; never modify them in place.
    """
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    work = copy.deepcopy(model, memo)
    _drop_mask_machinery(work)
    return work


def _clone(t: torch.Tensor) -> torch.Tensor:
    data = t.detach().clone(memory_format=torch.preserve_format)
    if isinstance(t, nn.Parameter):
        return nn.Parameter(data, t.requires_grad)
    return data


def unshare(work: nn.Module, original: nn.Module) -> None:
    """Clone every parameter and buffer of ``work`` that is still one of ``original``'s."""
    theirs = {id(t) for t in itertools.chain(original.parameters(), original.buffers())}
    clones: dict[int, torch.Tensor] = {}  # a tensor shared by two modules stays shared
    for module in work.modules():
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is not None and id(t) in theirs:
                    if id(t) not in clones:
                        clones[id(t)] = _clone(t)
                    table[name] = clones[id(t)]
