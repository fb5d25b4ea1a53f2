"""Which Keras layers' output channels are tied, for dependency-aware channel pruning.

``channel_groups(model)`` runs the speedup's own channel-flow analysis once and partitions
the layers with per-channel weights (Conv, Dense, DepthwiseConv, BatchNormalization, ...)
into groups whose output channels are tied: ``Add([bn_a, bn_b])`` ties channel ``i`` of the
conv before ``bn_a`` to channel ``i`` of the conv before ``bn_b``; a depthwise conv and a
BatchNorm carry the channels of the layer feeding them. A pruner that masks the same
channels in every member lets the speedup remove all of them.

Example (a residual block)::

    conv_a -> bn_a -> relu --+--> Add -> conv_c
    conv_b -> bn_b ----------+
    [g.names for g in channel_groups(model)]
    ->  [['conv_a', 'bn_a', 'conv_b', 'bn_b'], ['conv_c']]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import keras
import numpy as np

from prunus.layers.tf.specs import WEIGHT_SPECS, iter_layers
from .analysis import Analysis
from prunus.layers.tf.handlers import HANDLERS, LayerHandler


@dataclass
class ChannelGroup:
    """Layers whose output channels are tied.

    Attributes:
        names: member layers (qualified names), in model order.
        channels: name -> int array mapping each output channel of that layer to a group
            channel in ``0..size-1``; equal group channels must be pruned together.
        size: number of group channels.
        blocks: block label per group channel. A grouped convolution reads or writes the
            group: prune the same number of channels from every block so its groups stay
            equal (all zeros when unconstrained).

    Example::

        for group in channel_groups(model):
            print(group.names, group.size)
    """

    names: list[str]
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    size: int = 0
    blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def channel_groups(model: keras.Model,
                   custom_handlers: Mapping[str, LayerHandler] | None = None) -> list[ChannelGroup]:
    """The :class:`ChannelGroup` partition of ``model``'s per-channel layers.

    Raises:
        SpeedupError: the model is subclassed, or a layer cannot be run on its input shape.

    Args:
        model: a Functional or Sequential model.
        custom_handlers: extra handlers by Keras class name.

    Returns:
        The groups.

    Example::

        [g.names for g in channel_groups(model) if len(g.names) > 1]
    """
    analysis = Analysis({**HANDLERS, **(custom_handlers or {})})
    analysis.run(model)
    roots: dict[str, list[int]] = {}
    for name, layer in iter_layers(model):
        plan = analysis.plans.get(id(layer))
        if type(layer).__name__ in WEIGHT_SPECS and plan is not None and plan.out_ids is not None:
            roots[name] = [analysis.find(i) for i in plan.out_ids.tolist()]
    owner: dict[int, int] = {}
    groups: list[ChannelGroup] = []
    for name, rs in roots.items():
        hit = next((owner[r] for r in rs if r in owner), None)
        if hit is None:
            hit = len(groups)
            groups.append(ChannelGroup([]))
        groups[hit].names.append(name)
        for r in rs:
            owner.setdefault(r, hit)
    orders: list[dict[int, int]] = [{} for _ in groups]
    for name, rs in roots.items():
        order = orders[owner[rs[0]]] if rs else {}
        for r in rs:
            order.setdefault(r, len(order))
    for group, order in zip(groups, orders):
        group.channels = {n: np.array([order[r] for r in roots[n]], np.int64) for n in group.names}
        group.size = len(order)
        group.blocks = np.zeros(len(order), np.int64)
    _block_constraints(analysis, owner, groups, orders)
    return groups


def _block_constraints(analysis: Analysis, owner, groups, orders) -> None:
    """Labels group channels by the blocks of every grouped convolution reading or writing them."""
    for plan in analysis.plans.values():
        g = plan.handler.groups(plan.layer) if plan.handler is not None and plan.role != 'pin' else 1
        if g <= 1:
            continue
        for ids in (plan.in_ids[0], plan.out_ids):
            rs = [analysis.find(i) for i in ids.tolist()]
            hit = next((owner[r] for r in rs if r in owner), None)
            if hit is None or len(rs) % g:
                continue
            group, order = groups[hit], orders[hit]
            block_of = np.arange(len(rs)) // (len(rs) // g)
            extra = np.zeros(group.size, np.int64)
            for r, b in zip(rs, block_of):
                if r in order:
                    extra[order[r]] = b
            # Combine with earlier constraints: each pair of labels is one new block.
            _, group.blocks = np.unique(group.blocks * g + extra, return_inverse=True)
