"""Framework-free pieces of least-squares layer reconstruction (``reconstruct`` on PyTorch
and Keras): the per-layer report and the masked ridge solve in float64 numpy.

A layer is seen as ``y = W x + b``; with the pruned model's input columns ``X`` (a ones
column appended for a bias) and the residual ``R = y_dense - y_pruned``, the update solves
``min ||X dW^T - R||^2 + lambda ||dW||^2`` over the entries the mask keeps, one solve per
distinct row support, ``lambda = ridge * mean diagonal of X^T X``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Refit:
    """One layer's relative output error ``||y_dense - y|| / ||y_dense||`` on the
    calibration data, before and after its refit (over the output features its masks keep).

    Example::

        for name, refit in reconstruct(model, dense, batches).items():
            print(f'{name}: {refit.before:.3f} -> {refit.after:.3f}')
    """
    before: float
    after: float


def check_ridge(ridge: object, owner: str) -> float:
    """``ridge`` as a float, or a ValueError naming ``owner``."""
    if not isinstance(ridge, (int, float)) or isinstance(ridge, bool) or not ridge >= 0:
        raise ValueError(f'{owner}: ridge must be a number >= 0; got {ridge!r}.')
    return float(ridge)


def solve_update(gram: np.ndarray, cross: np.ndarray, keep: np.ndarray, ridge: float,
                 bias: bool) -> np.ndarray:
    """The update ``(rows, cols [+ bias])`` from ``X^T X``, ``X^T R`` and the bool
    ``keep`` (rows, cols [+ bias]) of entries that may change."""
    rows, size = cross.shape[1], gram.shape[0]
    cols = size - 1 if bias else size
    update = np.zeros((rows, size))
    energy = float(np.diagonal(gram)[:cols].mean()) if cols else 0.0
    # a floor keeps all-zero columns (inputs a removed channel left at zero) solvable
    strength = (ridge + 1e-9) * energy if energy > 0 else 1.0
    patterns, which = np.unique(keep, axis=0, return_inverse=True)
    which = which.reshape(-1)
    for p, pattern in enumerate(patterns):
        idx = np.flatnonzero(pattern)
        members = np.flatnonzero(which == p)
        if idx.size == 0:
            continue
        a = gram[np.ix_(idx, idx)] + strength * np.eye(idx.size)
        step = np.linalg.solve(a, cross[np.ix_(idx, members)])
        update[np.ix_(members, idx)] = step.T
    return update


def keep_row_lengths(old: np.ndarray, update: np.ndarray) -> np.ndarray:
    """``update`` rescaled so that each row of ``old + update`` keeps ``old``'s length
    (rows: a head's output weights with its bias as the last column): the refit then
    chooses a head's rows' directions only, which fine-tunes better than letting a
    classifier's rows grow to fit the dense logits from fewer features."""
    new = old + update
    length = np.linalg.norm(old, axis=1, keepdims=True)
    grown = np.linalg.norm(new, axis=1, keepdims=True)
    scale = np.where(grown > 0, length / np.maximum(grown, 1e-30), 1.0)
    return new * scale - old


def residual_left(residual: float, gram: np.ndarray, cross: np.ndarray, update: np.ndarray) -> float:
    """``||R - X dW^T||^2 = ||R||^2 - 2 <dW, (X^T R)^T> + <dW, dW X^T X>``."""
    left = residual - 2 * float((update * cross.T).sum()) + float(((update @ gram) * update).sum())
    return max(left, 0.0)
