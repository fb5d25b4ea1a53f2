"""Sparsity patterns: how element scores become prunable items and back, in numpy.

A layer's weight is seen as a 2-D matrix ``(rows, cols)``: rows are output channels and
columns run along the input dimension (for a convolution, input channels vary fastest,
so ``cols = kh * kw * in_channels``). A pattern maps that matrix's element scores to one
score per *item* (what is pruned as a unit) and an item keep-vector back to an element
keep-matrix:

=================  ==============================================================
``unstructured``   every element is an item
``NxM``            blocks of N rows by M columns (``4x1``, ``2x2``); ``channel`` as N
                   or M spans the whole extent: ``1xchannel`` removes output channels
                   (rows), ``channelx1`` input columns. Block score = mean of its scores.
``N:M``            in every group of M consecutive columns of a row, N elements are
                   pruned. An item is a group; its score is the sum of its N smallest
                   scores (what pruning it loses). A fully pruned layer is exactly N:M.
=================  ==============================================================

Example::

    >>> import numpy as np
    >>> pattern = parse_pattern('2:4')
    >>> keep = pattern.expand(np.arange(8.0).reshape(1, 8), np.array([True, False]))
    >>> keep.astype(int).tolist()
    [[1, 1, 1, 1, 0, 0, 1, 1]]
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_BLOCK = re.compile(r'^(\d+|channel)x(\d+|channel)$')
_NM = re.compile(r'^(\d+):(\d+)$')
_PREFIXES = ('oc_pattern_', 'ic_pattern_', 'tile_pattern_')


class Pattern:
    """Base of the patterns: ``reduce`` element scores to items, ``expand`` items back.

    Example::

        pattern = parse_pattern('4x1')
        items = pattern.reduce(scores)          # one score per 4x1 block
        mask = pattern.expand(scores, keep)     # back to the weight's shape
    """

    name = 'unstructured'
    #: fraction of a pruned item's elements that are zeroed (1 except for N:M).
    item_density_loss = 1.0

    def check(self, shape: tuple[int, int], layer: str) -> None:
        """Raises ValueError when a ``(rows, cols)`` matrix does not fit the pattern."""

    def reduce(self, scores: np.ndarray) -> np.ndarray:
        """One score per item (block, group, channel) from element scores."""
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def expand(self, scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The element-level keep mask (shaped like ``scores``) from the per-item ``keep``."""
        return np.asarray(keep, dtype=bool).reshape(np.shape(scores))

    def item_sparsity(self, sparsity: float) -> float:
        """The fraction of items to prune for an element ``sparsity``."""
        return sparsity

    def __repr__(self) -> str:
        return f'Pattern({self.name!r})'


@dataclass(frozen=True, repr=False)
class BlockPattern(Pattern):
    """``NxM`` blocks; ``None`` for a side means the whole extent (``channel``).

    Example::

        BlockPattern(4, 1).name        # '4x1'
        BlockPattern(1, None).name     # '1xchannel'
    """

    rows: int | None
    cols: int | None

    @property
    def name(self) -> str:  # type: ignore[override]
        """The pattern's name as configs write it (``'4x1'``, ``'1xchannel'``)."""
        return f"{self.rows or 'channel'}x{self.cols or 'channel'}"

    def _sides(self, shape: tuple[int, int]) -> tuple[int, int]:
        return self.rows or shape[0], self.cols or shape[1]

    def check(self, shape: tuple[int, int], layer: str) -> None:
        bh, bw = self._sides(shape)
        if shape[0] % bh or shape[1] % bw:
            raise ValueError(f"pattern '{self.name}' needs the weight of '{layer}' (as a "
                             f'{shape[0]}x{shape[1]} matrix, rows = output channels) to split '
                             f'into {bh}x{bw} blocks; exclude the layer or choose another pattern.')

    def reduce(self, scores: np.ndarray) -> np.ndarray:
        """The summed score of every block."""
        rows, cols = scores.shape
        bh, bw = self._sides((rows, cols))
        blocks = np.asarray(scores, dtype=np.float64).reshape(rows // bh, bh, cols // bw, bw)
        return blocks.mean(axis=(1, 3)).reshape(-1)

    def expand(self, scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Each block's keep decision spread over its elements."""
        rows, cols = scores.shape
        bh, bw = self._sides((rows, cols))
        grid = np.asarray(keep, dtype=bool).reshape(rows // bh, cols // bw)
        return np.repeat(np.repeat(grid, bh, axis=0), bw, axis=1)


@dataclass(frozen=True, repr=False)
class NMPattern(Pattern):
    """``N:M``: N of every M consecutive elements along the input dimension are pruned.

    Example::

        parse_pattern('2:4')    # NMPattern(n=2, m=4): half of every 4 inputs pruned
    """

    n: int
    m: int

    @property
    def name(self) -> str:  # type: ignore[override]
        """The pattern's name as configs write it (``'2:4'``)."""
        return f'{self.n}:{self.m}'

    @property
    def item_density_loss(self) -> float:  # type: ignore[override]
        """The fraction of a group's elements one pruned item removes."""
        return self.n / self.m

    def check(self, shape: tuple[int, int], layer: str) -> None:
        if shape[1] % self.m:
            raise ValueError(f"pattern '{self.name}' needs the input dimension of '{layer}' "
                             f'({shape[1]} weights per output channel) to be a multiple of '
                             f'{self.m}; exclude the layer or choose another pattern.')

    def _groups(self, scores: np.ndarray) -> np.ndarray:
        rows, cols = scores.shape
        return np.asarray(scores, dtype=np.float64).reshape(rows, cols // self.m, self.m)

    def reduce(self, scores: np.ndarray) -> np.ndarray:
        """One score per element group of ``m`` consecutive inputs."""
        smallest = np.sort(self._groups(scores), axis=2, kind='stable')[:, :, :self.n]
        return smallest.sum(axis=2).reshape(-1)

    def expand(self, scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """The element-level keep mask: the ``n`` lowest of every ``m`` inputs are dropped."""
        groups = self._groups(scores)
        order = np.argsort(groups, axis=2, kind='stable')[:, :, :self.n]
        drop = np.zeros(groups.shape, dtype=bool)
        np.put_along_axis(drop, order, True, axis=2)
        drop &= ~np.asarray(keep, dtype=bool).reshape(groups.shape[:2])[:, :, None]
        return ~drop.reshape(scores.shape)

    def item_sparsity(self, sparsity: float) -> float:
        """The sparsity a fully pruned set of groups reaches (``n / m``)."""
        return min(sparsity / self.item_density_loss, 1.0)


def parse_pattern(text: str) -> Pattern:
    """A pattern from its name: ``'unstructured'``, ``'4x1'``, ``'1xchannel'``, ``'2:4'``
    (an ``oc_pattern_`` prefix, as in older configs, is accepted).

    Args:
        text: the pattern's name.

    Returns:
        The :class:`Pattern`.

    Raises:
        ValueError: the name is not a known pattern.

    Example::

        parse_pattern('2:4').name    # '2:4'
    """
    if not isinstance(text, str):
        raise TypeError(f"a pattern must be a string such as '4x1' or '2:4'; got {text!r}.")
    name = text.strip()
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name in ('unstructured', '1x1'):
        return Pattern()
    block, nm = _BLOCK.match(name), _NM.match(name)
    if block:
        rows, cols = (None if g == 'channel' else int(g) for g in block.groups())
        if rows == 0 or cols == 0:
            raise ValueError(f'pattern {text!r} has a zero-sized block.')
        return BlockPattern(rows, cols)
    if nm:
        n, m = int(nm.group(1)), int(nm.group(2))
        if not 0 < n < m:
            raise ValueError(f'pattern {text!r} must prune N of M with 0 < N < M.')
        return NMPattern(n, m)
    raise ValueError(f"unknown pattern {text!r}; use 'unstructured', 'NxM' (e.g. '4x1', "
                     "'1xchannel') or 'N:M' (e.g. '2:4').")
