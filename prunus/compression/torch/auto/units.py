"""Tied channel groups as single search variables.

A residual stream ties the output channels of several convs (a ResNet stage's stem or
downsample conv and every block's last conv; MobileNetV2's projection convs): the
speedup removes a channel only when *every* one of them drops it. A search over single
layers therefore has to leave them alone. A :class:`SearchUnit` turns such a group into
one variable: its channels are scored as a group (the members' base-criterion channel
scores summed, as ``dependency_aware=True`` pruning does) and a sparsity ``s`` removes
the same ``round(s * size)`` channels from every member and from their BatchNorm and
depthwise followers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ...allocation import keep_mask
from ...grouping import group_scores
from ..base import to_numpy


@dataclass
class SearchUnit:
    """A group of tied layers searched as one.

    Attributes:
        key: the allocation key, the first member in execution order.
        members: the conv/linear layers losing channels (execution order).
        index: for each member and follower, which unit channel each of its output
            channels carries (``-1``: a channel from outside the unit, never pruned).
        size: number of unit channels.
    """

    key: str
    members: list[str]
    index: dict[str, torch.Tensor] = field(default_factory=dict)
    size: int = 0

    @property
    def followers(self) -> dict[str, torch.Tensor]:
        """The BatchNorm/depthwise layers carrying the unit's channels."""
        return {n: i for n, i in self.index.items() if n not in self.members}

    def scores(self, scores: Mapping[str, Any]) -> np.ndarray:
        """Group channel scores: the sum of the members' channel scores."""
        channels, values = {}, {}
        for name in self.members:
            index = self.index[name].numpy()
            mine = index >= 0  # channels outside the unit (see _unit)
            channels[name] = index[mine]
            values[name] = np.asarray(to_numpy(scores[name]), dtype=np.float64).ravel()[mine]
        return group_scores(self.size, channels, values)

    def keep(self, scores: Mapping[str, Any], sparsity: float) -> torch.Tensor:
        """Which unit channels survive ``sparsity`` (a bool vector of ``size``)."""
        return torch.from_numpy(keep_mask(self.scores(scores), sparsity))


def _unit(group: Any, members: list[str]) -> SearchUnit:
    """The unit of ``group``: the group channels some member produces, renumbered."""
    covered = torch.zeros(group.size, dtype=torch.bool)
    for name in members:
        covered[group.channels[name]] = True
    # group channels no member produces (e.g. the model input through a residual add)
    # cannot be removed by pruning the members, so they are outside the unit
    renumber = torch.full((group.size,), -1, dtype=torch.long)
    renumber[covered] = torch.arange(int(covered.sum()))
    index = {n: renumber[group.channels[n]] for n in group.names}
    return SearchUnit(members[0], members, index, int(covered.sum()))


def tied_units(groups: Iterable[Any], modules: Mapping[str, nn.Module], names: list[str],
               shared: set[str], mixing: Any) -> dict[str, SearchUnit]:
    """The groups of ``groups`` (:class:`prunus.speedup.ChannelGroup`) that become units.

    A group qualifies when it has more than one conv/linear member (``mixing(module)``),
    all of them in ``names`` (a unit must not prune a layer the user did not select),
    none called more than once (``shared``), it is not blocked (model output, an op
    needing every channel) and not split into blocks by a grouped conv.
    """
    units: dict[str, SearchUnit] = {}
    for group in groups:
        members = [n for n in group.names if mixing(modules[n])]
        blocked = group.blocked is not None and bool(group.blocked.any())
        if (len(members) < 2 or blocked or group.groups != 1 or shared & set(members)
                or not set(members) <= set(names)):
            continue
        unit = _unit(group, members)
        if unit.size:
            units[unit.key] = unit
    return units
