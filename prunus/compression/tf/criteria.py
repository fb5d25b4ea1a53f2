"""Importance scores, as pure numpy functions of weights or statistics; lower is pruned.

Every function takes arrays already in the torch layout (see :mod:`.layers`), so each
criterion is written once and agrees with the PyTorch pruners element for element.
"""
from __future__ import annotations

import numpy as np

from ..criteria import geometric_median_distance


def magnitude(weight: np.ndarray) -> np.ndarray:
    """Level: ``|w|`` per element, flattened in torch element order."""
    return np.abs(weight).reshape(-1)


def lp_norm(filters: np.ndarray, p: int) -> np.ndarray:
    """L1 (``p=1``: sum of |w|) or L2 (``p=2``: sqrt of sum of w^2) of each filter row."""
    filters = filters.astype(np.float64)
    if p == 1:
        return np.abs(filters).sum(axis=1)
    return np.sqrt((filters ** 2).sum(axis=1))


def batchnorm_scale(gamma: np.ndarray) -> np.ndarray:
    """Slim: ``|gamma|`` of each BatchNormalization channel."""
    return np.abs(gamma.astype(np.float64)).reshape(-1)


def zero_count(activation: np.ndarray) -> np.ndarray:
    """Per channel (last axis), how many activations are exactly zero (for APoZ)."""
    return (activation.reshape(-1, activation.shape[-1]) == 0).sum(axis=0).astype(np.float64)


def channel_sum(activation: np.ndarray) -> np.ndarray:
    """Per channel (last axis), the sum of activations (for the mean activation)."""
    return activation.reshape(-1, activation.shape[-1]).sum(axis=0, dtype=np.float64)


def taylor_batch(weight_times_grad: np.ndarray) -> np.ndarray:
    """TaylorFO of one batch: per filter row, the sum of ``(w * grad)^2``."""
    return (weight_times_grad.astype(np.float64) ** 2).sum(axis=1)
