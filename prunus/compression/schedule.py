"""Sparsity schedules shared by the training-aware pruners of every framework."""
from __future__ import annotations


def agp_sparsity(epoch: int, initial: float, final: float, start: int, end: int,
                 frequency: int = 1) -> float:
    """Target sparsity at ``epoch`` on the cubic schedule of Zhu & Gupta (2017).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3`` with ``t0 = start``,
    ``n * dt = end - start``; the sparsity changes only every ``frequency`` epochs, equals
    ``initial`` before ``start`` and ``final`` from ``end`` on.

        >>> round(agp_sparsity(5, 0.0, 0.8, 0, 10), 6)
        0.7
    """
    if epoch < start:
        return initial
    span = end - start
    if span <= 0:
        return final
    step = start + ((epoch - start) // frequency) * frequency
    progress = min(step - start, span) / span
    return final + (initial - final) * (1.0 - progress) ** 3


__all__ = ['agp_sparsity']
