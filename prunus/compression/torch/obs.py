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


def _drop_by_threshold(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Drop mask of the ``counts[r]`` lowest scores of each row ``r``, ties to the lower
    index: what a stable sort would drop, found with ``kthvalue`` (linear time, several
    times faster than sorting)."""
    rows, cols = scores.shape
    threshold = torch.full((rows,), float('-inf'), dtype=scores.dtype, device=scores.device)
    for k in torch.unique(counts).tolist():
        if k > 0:
            chosen = counts == k
            threshold[chosen] = torch.kthvalue(scores[chosen], k, dim=1).values
    drop = scores < threshold.unsqueeze(1)
    ties = scores == threshold.unsqueeze(1)
    need = (counts - drop.sum(dim=1)).unsqueeze(1)
    return drop | (ties & (ties.cumsum(dim=1) <= need))


def prune_lowest(scores: torch.Tensor, counts: torch.Tensor | int) -> torch.Tensor:
    """A keep mask over ``scores`` (2-D): with an int, the ``counts`` lowest of the whole
    matrix are dropped; with a tensor of one count per row, each row's lowest. Ties go to
    the lower (row-major) index."""
    rows, cols = scores.shape
    if isinstance(counts, int):
        flat = scores.reshape(1, -1)
        count = torch.tensor([counts], device=scores.device)
        return ~_drop_by_threshold(flat, count).reshape(rows, cols)
    return ~_drop_by_threshold(scores, counts.to(scores.device))


#: Largest N for which N:M selection takes N successive minima instead of sorting groups.
ARGMIN_N = 4


def nm_keep(scores: torch.Tensor, pattern: NMPattern, dim: int = 1) -> torch.Tensor:
    """Keeps all but the N lowest of every M consecutive scores along ``dim`` (1: of each
    row; 0: of each column); ties go to the lower index."""
    if dim == 0:
        return nm_keep(scores.t(), pattern).t()
    rows, cols = scores.shape
    groups = scores.reshape(rows, cols // pattern.m, pattern.m)
    keep = torch.ones_like(groups, dtype=torch.bool)
    if pattern.n <= ARGMIN_N and bool(torch.isfinite(groups).all()):
        # argmin returns the first of equal minima; a dropped score becomes +inf
        work = groups.clone()
        for _ in range(pattern.n):
            lowest = work.argmin(dim=2, keepdim=True)
            keep.scatter_(2, lowest, False)
            work.scatter_(2, lowest, float('inf'))
        return keep.reshape(rows, cols)
    order = torch.sort(groups, dim=2, stable=True).indices[:, :, :pattern.n]
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
    """The upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1 = U^T U``.

    Inputs that never fired (zero diagonal) get a unit diagonal so H stays invertible;
    a factorization that fails is retried with ten times the damping. One factorization
    and one triangular inverse: with ``P`` the reversal permutation and ``P H P = L L^T``,
    ``U = P L^-1 P`` (instead of inverting H and factoring the inverse again). At most
    three ``cols x cols`` matrices are alive at once besides ``hessian``.
    """
    work = hessian.flip(0, 1)  # a copy: P H P
    diagonal = torch.diagonal(work)
    diagonal[diagonal == 0] = 1.0
    scale = float(diagonal.mean())
    added = 0.0
    for attempt in range(CHOLESKY_RETRIES):
        target = damp * 10 ** attempt * scale
        diagonal.add_(target - added)
        added = target
        lower, info = torch.linalg.cholesky_ex(work)
        if int(info) == 0:
            del work, diagonal
            eye = torch.eye(lower.shape[0], dtype=lower.dtype, device=lower.device)
            inverse = torch.linalg.solve_triangular(lower, eye, upper=False, out=eye)
            del lower
            return inverse.flip(0, 1)
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


def _group_keep(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Keep mask of one N:M group of columns seen as rows ``(M, rows)``: drops the N
    lowest of every column, ties to the lower index (SparseGPT's inner loop)."""
    lowest = torch.sort(scores, dim=0, stable=True).indices[:n]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(0, lowest, False)


def sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, pattern: NMPattern | None,
              group: str, block_size: int = 128, damp: float = 0.01, update: bool = True,
              keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one matrix: returns ``(new_weight, keep_mask)``.

    Args:
        weight: ``(rows, cols)``; not modified.
        hessian: ``(cols, cols)``, the mean of ``x x^T`` over the calibration inputs.
        sparsity: the share of the matrix's weights to drop (exact count).
        pattern: an N:M pattern, or None for unstructured.
        group: ``'row'`` or ``'layer'`` (unstructured only).
        block_size: columns per block (a multiple of M for N:M).
        damp: relative dampening of the Hessian's diagonal.
        update: apply the OBS weight update (False: mask choice only, weights just zeroed).
        keep: a fixed mask to reconstruct around instead of choosing one (e.g. Wanda's).

    Example::

        >>> W = torch.randn(8, 16); X = torch.randn(100, 16)
        >>> new, keep = sparsegpt(W, X.t() @ X / 100, 0.5, None, 'layer', block_size=8)
        >>> int((~keep).sum()), bool((new[~keep] == 0).all())
        (64, True)
    """
    rows, cols = weight.shape
    # Columns as rows (cols, rows): every per-column step below reads and writes contiguous memory.
    Wt = weight.detach().float().t().contiguous()
    factor = inverse_hessian_factor(hessian.float().to(Wt.device), damp)
    blocks = [(start, min(start + block_size, cols)) for start in range(0, cols, block_size)]
    counts = _block_counts(rows, blocks, cols, sparsity, group) if pattern is None and keep is None else None
    keep_t = torch.ones(cols, rows, dtype=torch.bool, device=Wt.device)
    for b, (start, end) in enumerate(blocks):
        block, F1 = Wt[start:end], factor[start:end, start:end]
        inverse_d = 1.0 / torch.diagonal(F1)
        if keep is not None:
            keep_t[start:end] = keep[:, start:end].t().to(Wt.device)
        elif pattern is None:
            saliency = block.pow(2) * inverse_d.pow(2).unsqueeze(1)
            keep_t[start:end] = prune_lowest(saliency.t(), counts[b]).t()
        # error of dropping column i = its value / [U]_ii where dropped, 0 where kept
        scale = (~keep_t[start:end]).float() * inverse_d.unsqueeze(1)
        errors = torch.empty_like(block)
        for i in range(end - start):
            if pattern is not None and keep is None and i % pattern.m == 0:
                span = slice(i, i + pattern.m)
                chosen = _group_keep(block[span].pow(2) * inverse_d[span].pow(2).unsqueeze(1), pattern.n)
                keep_t[start + i:start + i + pattern.m] = chosen
                scale[span] = (~chosen).float() * inverse_d[span].unsqueeze(1)
            torch.mul(block[i], scale[i], out=errors[i])
            if update:
                block[i:].addr_(F1[i, i:], errors[i], alpha=-1.0)
        if update and end < cols:
            Wt[end:].addmm_(factor[start:end, end:].t(), errors, alpha=-1.0)
    Wt[~keep_t] = 0
    return Wt.t().to(weight.dtype), keep_t.t()
