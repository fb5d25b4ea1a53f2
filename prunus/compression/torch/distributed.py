"""Keeping masks identical across processes under torch.distributed.

Scores are averaged over all ranks before masks are computed (so every rank's data counts
for data-driven criteria), and the masks rank 0 computes are then broadcast, so even
floating-point differences between ranks cannot make masks diverge. Without an
initialized process group both functions return their input unchanged.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from prunus.layers.torch.masking import Masks


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def average_scores(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean of each score tensor over all ranks (in model order on every rank).

    Args:
        scores: per layer name, its score tensor.

    Returns:
        The averaged scores (unchanged when not distributed).

    Example::

        scores = average_scores({'conv1': conv1_scores})
    """
    if not _active():
        return scores
    out = {}
    for name in sorted(scores):
        tensor = scores[name].detach().clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        out[name] = tensor / dist.get_world_size()
    return {name: out[name] for name in scores}


@torch.no_grad()
def broadcast_masks(masks: Masks, src: int = 0) -> Masks:
    """Every rank's masks replaced by rank ``src``'s (same names and shapes on all ranks).

    Args:
        masks: this rank's masks.
        src: the rank whose masks win.

    Returns:
        The masks of rank ``src`` (unchanged when not distributed).

    Example::

        masks = broadcast_masks(pruner.get_masks())
    """
    if not _active():
        return masks
    for name in sorted(masks):
        for pname in sorted(masks[name]):
            dist.broadcast(masks[name][pname], src=src)
    return masks
