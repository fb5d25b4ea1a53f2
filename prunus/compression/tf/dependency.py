"""Dependency-aware filter masks: tied Keras layers are scored together and lose the same
channels.

Layers whose output channels are tied (the convs meeting at a residual ``Add``, an SE
block's expand conv and the depthwise conv it multiplies, ...) can only be physically
removed when every one of them drops the same channel. A group's channel score is the sum
of its pruned members' scores; the group keeps ``round((1 - sparsity) * size)`` channels
(the largest sparsity among its members), the same number in every block of a grouped
convolution that reads or writes it. The groups come from
:func:`prunus.speedup.tf.channel_groups`, the speedup's own channel flow.
"""
from __future__ import annotations

import keras
import numpy as np

from prunus.tf_speedup.dependency import channel_groups

from ..grouping import group_keep, group_scores


def tied_groups(model: keras.Model, owner: str) -> list:
    """The model's channel groups; ValueError naming ``owner`` when it cannot be traced."""
    try:
        return channel_groups(model)
    except ValueError as exc:
        raise ValueError(f'{owner}: dependency_aware=True cannot trace the model: {exc}') from exc


def dependency_keeps(groups: list, scores: dict[str, np.ndarray],
                     sparsity: dict[str, float]) -> dict[str, np.ndarray]:
    """Keep vectors for the scored members of every tied group.

    Args:
        groups: :class:`ChannelGroup` list of the model.
        scores: per-layer output-channel scores of the layers ranked per layer.
        sparsity: the sparsity each of those layers was asked for.

    Returns:
        ``{name: keep}`` for the members of groups with two or more scored members or a
        block constraint; other layers keep their own per-layer masks.
    """
    keeps = {}
    for group in groups:
        names = [n for n in group.names if n in scores]
        if not names or (len(names) < 2 and group.blocks.max(initial=0) == 0):
            continue
        total = group_scores(group.size, {n: group.channels[n] for n in names}, scores)
        keep = group_keep(total, max(sparsity[n] for n in names), group.blocks)
        keeps.update({n: keep[group.channels[n]] for n in names})
    return keeps
