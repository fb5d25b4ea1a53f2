"""Hardware-aware widths: ``round_to=N`` keeps channel counts a multiple of N.

Vector units and GPU kernels run fastest on widths that are multiples of 8, 16 or 32; a
layer cut to 37 channels can be slower than one left at 40. With ``round_to`` the number
of channels a layer (or a tied group) keeps is rounded to the nearest multiple of N (at
least N, at most all of them); the channels added or dropped to get there are the best
scored pruned ones or the worst scored kept ones.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np



def check_round_to(owner: str, round_to: Any) -> None:
    if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int)
                                 or round_to < 1):
        raise ValueError(f'{owner}: round_to must be a positive integer or None; '
                         f'got {round_to!r}.')


def rounded_count(kept: int, size: int, round_to: int | None, blocks: int = 1) -> int:
    """``kept`` rounded to a multiple of ``round_to`` that ``blocks`` divide evenly."""
    if not round_to or round_to == 1 and blocks == 1:
        return kept
    step = round_to * blocks // math.gcd(round_to, blocks)
    if size < step:
        return size  # too narrow to round: never cut it below one step
    return int(min(max(step, step * round(kept / step)), size - size % step))


def round_keep(keep: np.ndarray, scores: np.ndarray, round_to: int | None,
               blocks: int = 1) -> np.ndarray:
    """``keep`` (bool) with its count rounded, evenly per block: add the best pruned or
    drop the worst kept channels of each block."""
    if not round_to:
        return keep
    keep = np.array(keep, dtype=bool).reshape(blocks, -1)
    scores = np.asarray(scores, dtype=np.float64).reshape(blocks, -1)
    target = rounded_count(int(keep.sum()), keep.size, round_to, blocks) // blocks
    for b in range(blocks):
        order = np.argsort(-scores[b], kind='stable')  # best first
        row = np.zeros(keep.shape[1], dtype=bool)
        kept_first = sorted(order, key=lambda i: not keep[b, i])  # kept (best first), then pruned
        row[kept_first[:target]] = True
        keep[b] = row
    return keep.reshape(-1)
