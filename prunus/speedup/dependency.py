"""Which layers' output channels are tied, for dependency-aware channel pruning.

``channel_groups(model, x)`` traces the model once (the same tracing the speedup uses) and
partitions the layers with per-channel weights (Conv, ConvTranspose, Linear, Embedding, and
the depthwise convs and norms that follow them) into groups whose output channels are tied: a residual ``a + b`` ties channel ``i`` of the conv
before ``a`` to channel ``i`` of the conv before ``b``; a depthwise conv ties its channels
to the layer feeding it. A pruner that scores a group as a whole and masks the same
channels in every member lets the speedup remove all of them.

Example (a residual block)::

    conv1 -> bn1 -> relu --+--> add -> conv3
    conv2 -> bn2 ----------+
    channel_groups(model, x)  ->  [['conv1', 'bn1', 'conv2', 'bn2'], ['conv3']]
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.speedup.cache import remember
from prunus.layers.torch.handlers import Handler, check_custom_handlers
from prunus.layers.torch.inputs import blame_inputs
from prunus.speedup.structure import trace_structure


@dataclass
class ChannelGroup:
    """Layers whose output channels are tied.

    Attributes:
        names: member layers (qualified names), in execution order.
        channels: name -> LongTensor mapping each output channel of that layer to a
            group channel in ``0..size-1``; members' channels with the same group channel
            must be pruned together. For plain ties (residual adds) this is ``arange``.
        size: number of group channels.
        groups: the group channels must be pruned evenly over this many contiguous
            blocks (grouped convolutions); 1 when unconstrained.
        blocked: bool per group channel: the speedup cannot remove it (used by an
            operation that needs all channels, or part of the model output).
        consumers: name of a layer reading group channels (its input channels; not tied)
            -> (its input indices that are group channels, their group channels). A
            Linear after a flatten reads each channel at several indices.

    Example::

        for group in dependency_groups(model, x):
            print(group.names, group.size)
    """

    names: list[str]
    channels: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int = 0
    groups: int = 1
    blocked: torch.Tensor | None = None
    consumers: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


@dataclass
class EvenSplit:
    """A tensor split into ``pieces`` equal chunks along its channels (``x.chunk(2, 1)`` in
    a ShuffleNet block): every piece must lose the same number of channels.

    Attributes:
        where: the operation, for messages.
        group: per channel of the split tensor, the index of the :class:`ChannelGroup` it
            belongs to (-1: none, e.g. a channel of the model input).
        position: per channel, its group channel in that group.
        pieces: the number of chunks.

    Example::

        groups, splits = dependency_structure(torchvision.models.shufflenet_v2_x1_0(), x)
        [(split.where, split.pieces) for split in splits]
    """

    where: str
    group: np.ndarray
    position: np.ndarray
    pieces: int


def dependency_groups(model: nn.Module, dummy_input: Any,
                      custom_handlers: dict[type, Handler] | None = None
                      ) -> list[ChannelGroup]:
    """Trace ``model`` on ``dummy_input`` and return its :class:`ChannelGroup` list.

    Args:
        model: the model.
        dummy_input: an input to trace it on.
        custom_handlers: ``{LayerType: Handler()}`` for layers the table does not know.

    Example::

        dependency_groups(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    """
    return dependency_structure(model, dummy_input, custom_handlers)[0]


def dependency_structure(model: nn.Module, dummy_input: Any,
                         custom_handlers: dict[type, Handler] | None = None
                         ) -> tuple[list[ChannelGroup], list[EvenSplit]]:
    """The :class:`ChannelGroup` list and the :class:`EvenSplit` constraints across them.

    Args:
        model: the model.
        dummy_input: an input to trace it on.
        custom_handlers: ``{LayerType: Handler()}`` for layers the table does not know.

    Example::

        dependency_structure(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    """
    with blame_inputs(model, dummy_input, 'dummy_input'):
        trace = trace_structure(model, dummy_input, check_custom_handlers(custom_handlers))
    remember(model, dummy_input, custom_handlers, trace)  # the speedup may reuse it
    uf = trace.uf
    roots = {}
    for n, s in trace.sites.items():
        if _keeps_all(s):
            continue
        if s.out_ids is not None:
            roots[n] = uf.roots(s.out_ids).numpy()
        elif s.handler.tied(s.module) and s.calls and s.calls[0].in_ids is not None:
            # depthwise convs and norms follow the channels they are tied to
            roots[n] = uf.roots(s.calls[0].in_ids).numpy()
    # owner[r]: the group that first claimed class r (-1: none yet); a layer joins the
    # group owning the first of its classes that has one
    owner = np.full(len(uf.parent), -1, dtype=np.int64)
    groups: list[ChannelGroup] = []
    for name, r in roots.items():
        claimed = owner[r]
        hits = claimed[claimed >= 0]
        hit = int(hits[0]) if len(hits) else len(groups)
        if hit == len(groups):
            groups.append(ChannelGroup([]))
        groups[hit].names.append(name)
        owner[r[claimed < 0]] = hit
    blocked = np.zeros(len(uf.parent), dtype=bool)
    blocked[[uf.find(i) for i in trace.blocked]] = True
    position = np.full(len(uf.parent), -1, dtype=np.int64)
    owned_at = np.full(len(uf.parent), -1, dtype=np.int64)  # position in the owning group
    for gi, g in enumerate(groups):
        every = np.concatenate([roots[n] for n in g.names])
        _, first = np.unique(every, return_index=True)
        order = every[np.sort(first)]  # classes in order of first appearance
        position[order] = np.arange(len(order))
        mine = owner[order] == gi
        owned_at[order[mine]] = np.arange(len(order))[mine]
        g.channels = {n: torch.from_numpy(position[roots[n]]) for n in g.names}
        g.size = len(order)
        g.blocked = torch.from_numpy(blocked[order])
    _group_constraints(trace, roots, owner, groups)
    _consumers(trace, owner, owned_at, groups)
    splits = []
    for where, ids, pieces in trace.uniform:
        r = uf.roots(ids).numpy()
        group = np.where(ids.numpy() != 0, owner[r], -1)
        splits.append(EvenSplit(where, group, np.where(group >= 0, owned_at[r], -1), pieces))
    return groups, splits


def _keeps_all(site) -> bool:
    """A handler's ``keeps_all``: a flag, or (nn.MultiheadAttention) a method of the module."""
    keeps = getattr(site.handler, 'keeps_all', False)
    return bool(keeps(site.module) if callable(keeps) else keeps)


def _consumers(trace, owner, owned_at, groups) -> None:
    """Record, per group, which input channels of which non-tied layers it feeds."""
    for name, site in trace.sites.items():
        if site.handler.tied(site.module) or _keeps_all(site):
            continue
        call = next((c for c in site.calls if c.in_ids is not None), None)
        if call is None:
            continue
        ids = call.in_ids.reshape(-1).numpy()
        r = trace.uf.roots(call.in_ids.reshape(-1)).numpy()
        grp = np.where(ids != 0, owner[r], -1)
        for gi in np.unique(grp[grp >= 0]).tolist():
            idx = np.flatnonzero(grp == gi)
            groups[gi].consumers[name] = (torch.from_numpy(idx),
                                          torch.from_numpy(owned_at[r[idx]]))


def _group_constraints(trace, roots, owner, groups) -> None:
    for name, site in trace.sites.items():
        g_in, g_out, _ = site.handler.groups(site.module)
        sides = [(roots.get(name), g_out)]
        call = next((c for c in site.calls if c.in_ids is not None), None)
        if call is not None:
            sides.append((trace.uf.roots(call.in_ids).numpy(), g_in))
        for r, g in sides:
            if r is None or g <= 1:
                continue
            claimed = owner[r]
            claimed = claimed[claimed >= 0]
            if len(claimed):
                grp = groups[int(claimed[0])]
                if grp.size % g == 0:
                    grp.groups = grp.groups * g // math.gcd(grp.groups, g)


def channel_groups(model: nn.Module, dummy_input: Any,
                   custom_handlers: dict[type, Handler] | None = None) -> list[list[str]]:
    """Names of the channel-producing layers, grouped by tied output channels.

    Every Conv/ConvTranspose/Linear/Embedding that runs on ``dummy_input``, and every
    BatchNorm/depthwise conv fed by one, appears in exactly one group (singletons included). See :func:`dependency_groups` for the index
    mapping and grouped-convolution constraints.

    Args:
        model: the model.
        dummy_input: an input to trace it on.
        custom_handlers: ``{LayerType: Handler()}`` for layers the table does not know.

    Example::

        channel_groups(torchvision.models.resnet18(), torch.randn(1, 3, 64, 64))
    """
    return [g.names for g in dependency_groups(model, dummy_input, custom_handlers)]
