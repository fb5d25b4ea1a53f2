"""Dependency-aware filter masks: tied layers are scored together and lose the same channels.

Layers whose output channels are tied (residual adds, depthwise convs after their
expansion conv, ...) can only be physically removed when every one of them drops the same
channel. Group scores are the sum of the members' channel scores; the group keeps
``round((1 - sparsity) * size)`` channels, evenly per block for grouped convolutions. The
groups come from :func:`prunus.speedup.dependency_groups` (the speedup's own tracing).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..allocation import keep_mask
from . import layers

__all__ = ['dependency_keeps']


def _produces(module: Any) -> bool:
    """A layer whose own weights make its output channels (not a depthwise conv, which
    follows the channels it is fed)."""
    if not isinstance(module, layers.FILTERED):
        return False
    groups = getattr(module, 'groups', 1)
    return not (groups > 1 and groups == module.in_channels == module.out_channels)


def _warn_untargeted(targeted: list[str], others: list[str]) -> None:
    """Channels tied to a layer the config leaves alone stay: the pruned ones cannot go."""
    if others:
        warnings.warn(f"dependency_aware: {', '.join(repr(n) for n in targeted)} "
                      f"share channels with {', '.join(repr(n) for n in others)}, which "
                      'config_list does not select, so the speedup cannot remove the channels '
                      'pruned there; select those layers too to prune the group.', stacklevel=4)


def dependency_keeps(pruner: Any, scores: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Keep vectors (bool per output channel) for every targeted layer of a tied group of
    ``pruner.bound_model``; the pruner expands them into masks."""
    from prunus.speedup.dependency import dependency_groups  # noqa: PLC0415 (torch-only)

    keeps = {}
    modules = dict(pruner.bound_model.named_modules())
    for group in dependency_groups(pruner.bound_model, pruner.dummy_input):
        names = [n for n in group.names if n in pruner.targets and n in scores
                 and not pruner.is_global(pruner.entry_of[n])]
        if not names:
            continue
        _warn_untargeted(names, [n for n in group.names if n not in pruner.targets
                                 and _produces(modules[n])])
        if len(names) < 2 and group.groups == 1:
            continue
        total = torch.zeros(group.size, dtype=torch.float64)
        for n in names:
            total.index_add_(0, group.channels[n], scores[n].detach().double().cpu().flatten())
        sparsity = max(pruner.sparsity_of(pruner.entry_of[n]) for n in names)
        blocks = total.view(group.groups, -1).numpy()
        keep = np.concatenate([keep_mask(b, sparsity) for b in blocks])
        for n in names:
            keeps[n] = keep[group.channels[n].numpy()]
    return keeps
