"""The matrix algorithms of post-training pruning: Wanda's and SparseGPT's masks.

Every function here works on one weight matrix ``W`` of shape ``(rows, cols)`` (rows =
output channels, columns = inputs, in the order :func:`prunus.compression.torch.criteria.matrix_view`
uses, so N:M groups run along input channels) and the statistics of that layer's inputs
over the calibration data, with no model around it:

* Wanda (Sun et al., 2023) scores ``|W_ij| * ||X_j||_2`` and drops the lowest scores.
* SparseGPT (Frantar & Alistarh, 2023) walks the columns left to right in blocks of
  ``block_size``; at the start of a block (or of every M-group for N:M) it picks the
  weights with the lowest OBS saliency ``w^2 / [H^-1]_jj^2`` and, column by column, zeroes
  them and moves their error onto the columns not yet visited using the inverse Hessian
  ``H = X^T X / n`` (its upper Cholesky factor), which keeps the layer's output close to
  the dense one.

Counts are exact: a layer of ``n`` weights at sparsity ``s`` loses ``round(s * n)`` of
them (Python's ``round``, as :func:`prunus.compression.allocation.prune_count`). With the
``'row'`` comparison group every row loses its share (rows differ by at most one), with
``'layer'`` the weights compete across rows; SparseGPT's blocks receive their share of
the count by the same cumulative rounding, so the total is exact in both cases. An N:M
pattern drops exactly N of every M consecutive inputs of every row. Ties go to the lower
index (stable sorts), so results are deterministic.

Example::

    >>> W = torch.randn(8, 16); X = torch.randn(100, 16)
    >>> keep = wanda_keep(W, X.pow(2).sum(0).sqrt(), 0.5, None, 'row')
    >>> int((~keep).sum())
    64
"""
from __future__ import annotations

import torch

from ..allocation import prune_count
from ..patterns import NMPattern

#: How often SparseGPT retries a failed Cholesky factorization, with 10x the damping each time.
CHOLESKY_RETRIES = 6


def shares(sizes: list[int], sparsity: float) -> list[int]:
    """How many items each consecutive part of sizes ``sizes`` loses so that the total is
    exactly ``prune_count(sum(sizes), sparsity)`` (cumulative rounding)."""
    counts, done, cumulative = [], 0, 0
    for size in sizes:
        cumulative += size
        target = prune_count(cumulative, sparsity)
        counts.append(target - done)
        done = target
    return counts


def prune_lowest(scores: torch.Tensor, counts: torch.Tensor | int) -> torch.Tensor:
    """A keep mask over ``scores`` (2-D): with an int, the ``counts`` lowest of the whole
    matrix are dropped; with a tensor of one count per row, each row's lowest."""
    rows, cols = scores.shape
    if isinstance(counts, int):
        order = torch.sort(scores.reshape(-1), stable=True).indices
        keep = torch.ones(rows * cols, dtype=torch.bool, device=scores.device)
        keep[order[:counts]] = False
        return keep.reshape(rows, cols)
    order = torch.sort(scores, dim=1, stable=True).indices
    ranks = torch.arange(cols, device=scores.device).expand(rows, cols)
    drop_sorted = ranks < counts.to(scores.device).reshape(-1, 1)
    keep = torch.ones_like(drop_sorted)
    keep.scatter_(1, order, ~drop_sorted)
    return keep


def nm_keep(scores: torch.Tensor, pattern: NMPattern) -> torch.Tensor:
    """Keeps all but the N lowest of every M consecutive scores of each row."""
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // pattern.m, pattern.m)
    order = torch.sort(groups, dim=2, stable=True).indices[:, :, :pattern.n]
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(2, order, False)
    return keep.reshape(rows, cols)


def row_counts(rows: int, cols: int, sparsity: float, device: torch.device | None = None) -> torch.Tensor:
    """Per row, how many of its ``cols`` weights it loses (exact layer total)."""
    return torch.tensor(shares([cols] * rows, sparsity), dtype=torch.long, device=device)


def select(scores: torch.Tensor, sparsity: float, pattern: NMPattern | None, group: str) -> torch.Tensor:
    """The keep mask of one matrix of scores for a pattern and comparison group."""
    if pattern is not None:
        return nm_keep(scores, pattern)
    rows, cols = scores.shape
    if group == 'row':
        return prune_lowest(scores, row_counts(rows, cols, sparsity, scores.device))
    return prune_lowest(scores, prune_count(rows * cols, sparsity))


def wanda_keep(weight: torch.Tensor, column_norms: torch.Tensor, sparsity: float,
               pattern: NMPattern | None, group: str) -> torch.Tensor:
    """Wanda's keep mask: drop the lowest ``|W_ij| * ||X_j||``."""
    scores = weight.detach().abs().float() * column_norms.float().reshape(1, -1)
    return select(scores, sparsity, pattern, group)


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """The upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1``.

    Inputs that never fired (zero diagonal) get a unit diagonal so H stays invertible;
    a factorization that still fails is retried with ten times the damping.
    """
    hessian = hessian.clone()
    diagonal = torch.diagonal(hessian)
    diagonal[diagonal == 0] = 1.0
    scale = float(diagonal.mean())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    for attempt in range(CHOLESKY_RETRIES):
        lower, info = torch.linalg.cholesky_ex(hessian + (damp * 10 ** attempt) * scale * eye)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(lower)
            upper, info = torch.linalg.cholesky_ex(inverse, upper=True)
            if int(info) == 0:
                return upper
    raise RuntimeError('SparseGPT could not factor the Hessian of a layer even with '
                       f'{damp * 10 ** (CHOLESKY_RETRIES - 1)} relative damping; '
                       'are its calibration inputs finite?')


def _block_counts(rows: int, starts: list[tuple[int, int]], cols: int, sparsity: float,
                  group: str) -> list[torch.Tensor | int]:
    """Each column block's share of the count: per row (tensor) or over the block (int)."""
    widths = [end - start for start, end in starts]
    if group == 'layer':
        return shares([rows * w for w in widths], sparsity)
    per_row = row_counts(rows, cols, sparsity).tolist()
    table = torch.tensor([shares(widths, count / cols) if cols else [] for count in per_row],
                         dtype=torch.long).reshape(rows, len(widths))
    # shares() of count/cols can round one off; correct the last block to the row's count.
    table[:, -1] += torch.tensor(per_row) - table.sum(dim=1)
    return [table[:, b] for b in range(len(widths))]


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern: NMPattern | None,
              group: str, block_size: int = 128, damp: float = 0.01, update: bool = True,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one matrix: returns ``(new_weight, keep_mask)``.

    Args:
        weight: ``(rows, cols)``; not modified.
        hessian: ``(cols, cols)``, the mean of ``x x^T`` over the calibration inputs.
        update: apply the OBS weight update (False: mask choice only, weights just zeroed).
        keep: a fixed mask to reconstruct around instead of choosing one (e.g. Wanda's).
    """
    W = weight.detach().float().clone()
    rows, cols = W.shape
    factor = inverse_hessian_factor(hessian.float().to(W.device), damp)
    blocks = [(start, min(start + block_size, cols)) for start in range(0, cols, block_size)]
    counts = _block_counts(rows, blocks, cols, sparsity, group) if pattern is None and keep is None else None
    out_keep = torch.ones(rows, cols, dtype=torch.bool, device=W.device)
    for b, (start, end) in enumerate(blocks):
        W1, F1 = W[:, start:end].clone(), factor[start:end, start:end]
        d = torch.diagonal(F1)
        if keep is not None:
            keep1 = keep[:, start:end].to(W.device)
        elif pattern is None:
            keep1 = prune_lowest(W1.pow(2) / d.pow(2).reshape(1, -1), counts[b])
        else:
            keep1 = torch.ones_like(W1, dtype=torch.bool)
        errors = torch.zeros_like(W1)
        for i in range(end - start):
            if pattern is not None and keep is None and i % pattern.m == 0:
                span = slice(i, i + pattern.m)
                keep1[:, span] = nm_keep(W1[:, span].pow(2) / d[span].pow(2).reshape(1, -1), pattern)
            column = W1[:, i]
            pruned = torch.where(keep1[:, i], column, torch.zeros_like(column))
            error = (column - pruned) / F1[i, i]
            if update:
                W1[:, i:] -= error.unsqueeze(1) * F1[i, i:].unsqueeze(0)
            W1[:, i] = pruned
            errors[:, i] = error
        W[:, start:end] = W1
        out_keep[:, start:end] = keep1
        if update:
            W[:, end:] -= errors @ factor[start:end, end:]
    W[~out_keep] = 0
    return W.to(weight.dtype), out_keep

