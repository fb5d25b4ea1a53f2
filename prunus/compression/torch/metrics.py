"""Importance criteria as pure functions of tensors: lower score = pruned first.

Each takes what its criterion needs (weights, a layer's filter matrix, collected
statistics) and returns one score per weight or per output channel, so every criterion
can be tested on hand-built tensors without a model.
"""
from __future__ import annotations

import torch

from ..criteria import geometric_median_distance


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """Unstructured magnitude |w| (Level pruning)."""
    return weight.detach().abs()


def l1_filter(filters: torch.Tensor) -> torch.Tensor:
    """Sum of absolute weights of each filter (rows of ``filters``); Li et al. 2017."""
    return filters.detach().abs().sum(dim=1)


def l2_filter(filters: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each filter."""
    return filters.detach().float().pow(2).sum(dim=1).sqrt()


def fpgm(filters: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to all others (He et al. 2019).

    Filters closest to the geometric median have the smallest sum: they are the most
    replaceable by the rest, so they are pruned first. Computed by the shared core
    (float64), so Keras' FPGMPruner gives the same scores on the same weights.
    """
    rows = filters.detach().to('cpu', torch.float64).numpy()
    return torch.from_numpy(geometric_median_distance(rows))


def bn_scale(gamma: torch.Tensor) -> torch.Tensor:
    """|gamma| of a BatchNorm layer (network slimming, Liu et al. 2017)."""
    return gamma.detach().abs()


def apoz_score(zero_count: torch.Tensor, total_count: torch.Tensor | int) -> torch.Tensor:
    """1 - APoZ: channels whose activations are most often zero score lowest (Hu et al. 2016)."""
    return 1.0 - zero_count.double() / total_count


def mean_activation_score(activation_sum: torch.Tensor, total_count: torch.Tensor | int) -> torch.Tensor:
    """Mean activation per channel (Molchanov et al. 2017, sec. 2.2)."""
    return activation_sum.double() / total_count


def taylor_fo_contribution(filters: torch.Tensor, filter_grads: torch.Tensor) -> torch.Tensor:
    """One batch's first-order Taylor contribution per filter: sum over its weights of (w*g)^2.

    Summed over batches this is the filter importance of Molchanov et al. (2019).
    """
    return (filters.detach().float() * filter_grads.detach().float()).pow(2).sum(dim=1)


__all__ = ['magnitude', 'l1_filter', 'l2_filter', 'fpgm', 'bn_scale', 'apoz_score',
           'mean_activation_score', 'taylor_fo_contribution']
