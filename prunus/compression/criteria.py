"""Criteria both frameworks compute in one place, so the same weights give the same
scores (and masks) in PyTorch and Keras: numpy, float64, filters in the torch layout."""
from __future__ import annotations

import numpy as np


def geometric_median_distance(filters: np.ndarray) -> np.ndarray:
    """FPGM (He et al., 2019): per filter (row), the summed Euclidean distance to every
    other filter. The filters nearest the geometric median (smallest sum) are the most
    replaceable by the rest, so they are pruned first.

    Computed in float64 from the Gram matrix; the two frameworks call this very
    function on the same rows, so near-ties break the same way in both.
    """
    rows = np.asarray(filters, dtype=np.float64).reshape(len(filters), -1)
    sq = (rows ** 2).sum(axis=1)
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * rows @ rows.T, 0.0)
    np.fill_diagonal(dist2, 0.0)
    return np.sqrt(dist2).sum(axis=1)
