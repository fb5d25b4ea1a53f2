"""Dependency-aware filter masks: tied layers are scored together and lose the same channels.

Layers whose output channels are tied (residual adds, depthwise convs after their
expansion conv, ...) can only be physically removed when every one of them drops the same
channel. Group scores are the sum of the members' channel scores (or, with
``importance='group'``, :mod:`.group_importance` over every coupled parameter); the group
keeps ``round((1 - sparsity) * size)`` channels (a multiple of ``round_to`` if given),
evenly per block for grouped convolutions. The
groups come from :func:`prunus.speedup.dependency_structure` (the speedup's own tracing).
Where a tensor is chunked evenly (ShuffleNet), every chunk must lose as many channels as
the others; pruned channels are given back (highest scores first) until they do.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from prunus.speedup.dependency import dependency_structure

from ..grouping import even_blocks, group_keep, group_scores
from ..widths import round_keep
from prunus.layers.torch import specs
from .group_importance import group_importance


def _warn_untargeted(targeted: list[str], others: list[str]) -> None:
    """Channels tied to a layer the config leaves alone stay: the pruned ones cannot go."""
    if others:
        warnings.warn(f"dependency_aware: {', '.join(repr(n) for n in targeted)} "
                      f"share channels with {', '.join(repr(n) for n in others)}, which "
                      'config_list does not select, so the speedup cannot remove the channels '
                      'pruned there; select those layers too to prune the group.', stacklevel=4)


def dependency_keeps(pruner: Any, scores: dict[str, torch.Tensor],
                     keeps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``keeps`` (bool per output channel, per targeted layer) with tied layers of
    ``pruner.bound_model`` keeping the same channels, and chunks kept even; the pruner
    expands them into masks."""
    keeps = dict(keeps)
    by_group = getattr(pruner, 'importance', 'filter') == 'group'
    round_to = getattr(pruner, 'round_to', None)
    modules = dict(pruner.bound_model.named_modules())
    groups, splits = dependency_structure(pruner.bound_model, pruner.dummy_input)
    for group in groups:
        names = [n for n in group.names if n in pruner.targets and n in scores
                 and not pruner.is_global(pruner.entry_of[n])]
        if not names:
            continue
        _warn_untargeted(names, [n for n in group.names if n not in pruner.targets
                                 and specs.mixes_channels(modules[n])])
        if len(names) < 2 and group.groups == 1 and not by_group:
            continue  # the layer's own keep stands
        if by_group:
            total = group_channel_scores(pruner, group, modules)
        else:
            total = _group_scores(group, names, scores)
        sparsity = max(pruner.sparsity_of(pruner.entry_of[n]) for n in names)
        keep = group_keep(total, sparsity, even_blocks(group.size, group.groups))
        keep = round_keep(keep, total, round_to, group.groups)
        for n in names:
            keeps[n] = keep[group.channels[n].numpy()]
    if splits:
        _even_splits(groups, splits, keeps, scores,
                     {n for n, m in modules.items() if specs.mixes_channels(m)})
    return keeps


def group_channel_scores(pruner: Any, group: Any, modules: dict) -> np.ndarray:
    """The pruner's own group score (``pruner.group_channel_scores``, e.g. group Taylor)
    or :func:`group_importance` over the coupled weights."""
    own = getattr(pruner, 'group_channel_scores', None)
    scores = own(group) if own is not None else None
    if scores is not None:
        return scores.detach().double().cpu().numpy()
    return group_importance(group, modules, pruner.group_p, pruner.group_reduction,
                            pruner.group_normalization).numpy()


def _group_scores(group: Any, names: list[str], scores: dict[str, torch.Tensor]) -> np.ndarray:
    """A group channel's score: the sum of its members' channel scores."""
    return group_scores(group.size, {n: group.channels[n].numpy() for n in names},
                        {n: scores[n].detach().double().cpu().numpy() for n in names})


def _even_splits(groups: list, splits: list, keeps: dict[str, np.ndarray],
                 scores: dict[str, torch.Tensor], producers: set[str]) -> None:
    """Give pruned channels back until every chunk of an evenly split tensor loses as many
    as the others (a ShuffleNet block's ``x.chunk(2, 1)``): the speedup could not remove
    the excess anyway, and the masked model then keeps what the smaller one keeps."""
    def members(gi):
        return [n for n in groups[gi].names if n in producers]

    def removed(gi):
        # a group channel goes only when no producer keeps a channel of it
        size = groups[gi].size
        covered, kept = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
        for n in members(gi):
            channels = groups[gi].channels[n].numpy()
            covered[channels] = True
            kept[channels if n not in keeps else channels[keeps[n]]] = True
        return covered & ~kept

    def restore(gi, pos):
        for n in (m for m in members(gi) if m in keeps):
            hit = np.isin(groups[gi].channels[n].numpy(), pos)
            keeps[n] = keeps[n] | hit

    def score(gi):
        return _group_scores(groups[gi], [n for n in members(gi) if n in scores], scores)

    group_scores = {gi: score(gi) for split in splits for gi in set(split.group.tolist()) if gi >= 0}
    changed = True
    while changed:
        changed = False
        for split in splits:
            gone_by_group = {gi: removed(gi) for gi in group_scores}
            gone = np.array([g >= 0 and gone_by_group[g][p]
                             for g, p in zip(split.group.tolist(), split.position.tolist())])
            pieces = gone.reshape(split.pieces, -1)
            target = int(pieces.sum(1).min())
            for k, piece in enumerate(pieces):
                extra = int(piece.sum()) - target
                if extra <= 0:
                    continue
                idx = np.flatnonzero(piece) + k * pieces.shape[1]
                vals = np.array([group_scores[split.group[i]][split.position[i]] for i in idx])
                for i in idx[np.argsort(-vals, kind='stable')[:extra]]:
                    restore(split.group[i], [split.position[i]])
                changed = True
