"""Sparsity schedules of the training-aware pruners, as pure functions of the step.

Two families, both framework-agnostic:

* AGP (Zhu & Gupta, 2017): sparsity rises from ``s_i`` to ``s_f`` between steps ``t0`` and
  ``t0 + n*dt`` as ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n*dt))**3``: fast at first,
  while the network has many redundant weights, then slowly.
* Decay types of the training API (``sparsity_decay_type``), with progress
  ``p = (step - start) / (end - start)`` in [0, 1]:

  ======  ======================================================================
  linear  ``s = s_i + (s_f - s_i) * p``
  cos     ``s = s_i + (s_f - s_i) * (1 - cos(pi * p)) / 2`` (half a cosine period)
  exp     density decays geometrically: ``1 - s = (1 - s_i) * ((1 - s_f) / (1 - s_i))**p``
  cube    ``s = s_f + (s_i - s_f) * (1 - p)**3`` (the AGP curve)
  ======  ======================================================================

Every curve starts at ``s_i`` and ends *exactly* at ``s_f`` (``p = 1`` is special-cased
so no floating-point residue is left at the end step). Example::

    >>> schedule = StepSchedule(start=0, end=100, frequency=10, final=0.9, decay='cube')
    >>> schedule.is_update_step(20), round(schedule.sparsity_at(20), 4)
    (True, 0.4392)
    >>> schedule.sparsity_at(100)
    0.9
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

DECAY_TYPES = ('linear', 'cos', 'exp', 'cube')


def check_agp_entry(entry: Any, final: float, default_end: int) -> None:
    """The AGP schedule rules of one config entry, shared by both frameworks:
    ``end_epoch >= start_epoch`` and ``initial_sparsity <= final``."""
    if entry.exclude:
        return
    start, end = entry.get('start_epoch', 0), entry.get('end_epoch', default_end)
    if end < start:
        raise ValueError(f"{entry.where}['end_epoch'] ({end}) must be >= 'start_epoch' ({start}).")
    if final is not None and entry.get('initial_sparsity', 0.0) > final:
        raise ValueError(f"{entry.where}['initial_sparsity'] must not exceed the final sparsity.")


def agp_sparsity(t: float, t0: float, span: float, initial: float, final: float) -> float:
    """The AGP sparsity at time ``t`` for a schedule from ``t0`` lasting ``span`` (= n*dt).

    Before ``t0`` the result is ``initial``; from ``t0 + span`` on it is ``final``.

    Args:
        t: the current time (epoch or step).
        t0: when pruning starts.
        span: how long it lasts.
        initial: the sparsity at ``t0``.
        final: the sparsity from ``t0 + span`` on.

    Returns:
        ``final + (initial - final) * (1 - (t - t0) / span) ** 3`` within the span.

    Example::

        >>> round(agp_sparsity(5, 0, 10, 0.0, 0.8), 4)
        0.7
    """
    if span <= 0 or t >= t0 + span:
        return final
    if t <= t0:
        return initial
    return final + (initial - final) * (1.0 - (t - t0) / span) ** 3


def _linear(p: float, initial: float, final: float) -> float:
    return initial + (final - initial) * p


def _cos(p: float, initial: float, final: float) -> float:
    return initial + (final - initial) * (1.0 - math.cos(math.pi * p)) / 2.0


def _exp(p: float, initial: float, final: float) -> float:
    return 1.0 - (1.0 - initial) * ((1.0 - final) / (1.0 - initial)) ** p


def _cube(p: float, initial: float, final: float) -> float:
    return final + (initial - final) * (1.0 - p) ** 3


_DECAY: dict[str, Callable[[float, float, float], float]] = {
    'linear': _linear, 'cos': _cos, 'exp': _exp, 'cube': _cube}


def decay_sparsity(decay: str, progress: float, initial: float, final: float) -> float:
    """The sparsity of decay type ``decay`` at ``progress`` in [0, 1] (clamped).

    Args:
        decay: one of ``'exp'``, ``'linear'``, ``'cos'``, ``'cube'``.
        progress: the schedule's progress.
        initial: the sparsity at progress 0.
        final: the sparsity at progress 1.

    Returns:
        The sparsity.

    Example::

        >>> decay_sparsity('linear', 0.5, 0.0, 0.8)
        0.4
    """
    if decay not in _DECAY:
        raise ValueError(f"sparsity_decay_type must be one of {', '.join(DECAY_TYPES)}; got {decay!r}.")
    if progress >= 1.0:
        return final
    return _DECAY[decay](max(progress, 0.0), initial, final)


@dataclass(frozen=True)
class StepSchedule:
    """When to update masks and to which sparsity, counted in steps.

    One-shot when ``start == end``: a single update at ``start`` to ``final``. Otherwise
    updates happen at ``start, start + frequency, ...`` and always at ``end``.

    Attributes:
        start: first step that updates masks.
        end: step at which ``final`` is reached; no update after it.
        frequency: steps between updates.
        final: the target sparsity.
        initial: the sparsity the curve starts from (0 for the training API).
        decay: one of :data:`DECAY_TYPES`.

    Example::

        schedule = StepSchedule(start=0, end=10, frequency=5, final=0.8, decay='cube')
        [s for s in range(12) if schedule.is_update_step(s)]   # [0, 5, 10]
    """

    start: int
    end: int
    frequency: int = 1
    final: float = 0.0
    initial: float = 0.0
    decay: str = 'exp'

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f'end_step ({self.end}) must be >= start_step ({self.start}).')
        if self.frequency < 1:
            raise ValueError(f'the update frequency must be an integer >= 1; got {self.frequency}.')
        if self.decay not in _DECAY:
            raise ValueError(f"sparsity_decay_type must be one of {', '.join(DECAY_TYPES)}; "
                             f'got {self.decay!r}.')

    @property
    def one_shot(self) -> bool:
        """Whether the schedule is a single update (``start == end``)."""
        return self.start == self.end

    def is_update_step(self, step: int) -> bool:
        """Whether masks are updated at ``step``."""
        if step < self.start or step > self.end:
            return False
        return step == self.end or (step - self.start) % self.frequency == 0

    def progress(self, step: int) -> float:
        """How far ``step`` is from ``start`` to ``end``, in [0, 1]."""
        if self.one_shot:
            return 1.0 if step >= self.end else 0.0
        return min(max((step - self.start) / (self.end - self.start), 0.0), 1.0)

    def sparsity_at(self, step: int) -> float:
        """The target sparsity of an update made at ``step``."""
        if self.one_shot or step >= self.end:
            return self.final if step >= self.start else self.initial
        return decay_sparsity(self.decay, self.progress(step), self.initial, self.final)

    def update_steps(self) -> list[int]:
        """Every step at which masks are updated, in order."""
        steps = list(range(self.start, self.end, self.frequency))
        return steps + [self.end]


def lottery_round_sparsity(final: float, rounds: int, round_index: int) -> float:
    """Overall sparsity after ``round_index`` of ``rounds`` lottery-ticket rounds.

    Each round prunes ``1 - (1 - final)**(1/rounds)`` of the surviving weights, so after
    ``k`` rounds ``1 - (1 - final)**(k/rounds)`` of all weights are pruned.

    Args:
        final: the sparsity after the last round.
        rounds: the number of rounds.
        round_index: rounds done so far.

    Returns:
        The overall sparsity.

    Example::

        >>> round(lottery_round_sparsity(0.75, 2, 1), 4)
        0.5
    """
    if round_index >= rounds:
        return final
    return 1.0 - (1.0 - final) ** (round_index / rounds)
