"""Sparsity schedules of the training-aware pruners, as pure functions of the step.

Two families, both framework-agnostic:

* AGP (Zhu & Gupta, 2017): sparsity rises from ``s_i`` to ``s_f`` between steps ``t0`` and
  ``t0 + n*dt`` as ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n*dt))**3``: fast at first,
  while the network has many redundant weights, then slowly.
* Decay types of the training API (``sparsity_decay_type``), with progress
  ``p = (step - start) / (end - start)`` in [0, 1]:

  ======  ======================================================================
  linear  ``s = s_i + (s_f - s_i) * p``
  cos     ``s = s_i + (s_f - s_i) * (1 - cos(p * pi / 2))`` (a quarter cosine period)
  exp     density decays geometrically: ``1 - s = (1 - s_i) * ((1 - s_f) / (1 - s_i))**p``
  cube    ``s = s_i + (s_f - s_i) * p**3`` (slow at first, fast at the end)
  ======  ======================================================================

These are Intel Neural Compressor's iterative-scheduler formulas, so a schedule written for
it reaches the same sparsity at every update (at 60% of a 0 -> 0.8 schedule: linear 0.48,
cos 0.330, exp 0.620, cube 0.173). Every curve starts at ``s_i`` and ends *exactly* at ``s_f`` (``p = 1`` is special-cased
so no floating-point residue is left at the end step). Example::

    >>> schedule = StepSchedule(start=0, end=100, frequency=10, final=0.9, decay='cube')
    >>> schedule.is_update_step(20), round(schedule.sparsity_at(20), 4)
    (True, 0.0072)
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


def nni_agp_sparsity(epoch: int, start: int, end: int, frequency: int, initial: float,
                     final: float) -> float:
    """NNI 1.x's AGP sparsity at ``epoch``: the cubic curve over the span
    ``((end - start - 1) // frequency) * frequency``, so the last update epoch before
    ``end`` already reaches ``final`` (0 -> 0.8 with ``end_epoch=10`` is 0.8 at epoch 9)."""
    if end <= start or initial >= final or epoch >= end:
        return final
    span = ((end - start - 1) // frequency) * frequency
    if epoch <= start:
        return initial
    return agp_sparsity(epoch, start, span, initial, final)


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
    return initial + (final - initial) * (1.0 - math.cos(p * math.pi / 2.0))


def _exp(p: float, initial: float, final: float) -> float:
    return 1.0 - (1.0 - initial) * ((1.0 - final) / (1.0 - initial)) ** p


def _cube(p: float, initial: float, final: float) -> float:
    return initial + (final - initial) * p ** 3


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
    """When to update masks and to which sparsity, counted in steps, on Intel Neural
    Compressor's grid.

    Updates happen at ``start, start + frequency, ...`` up to ``end``; the k-th of the
    ``n = (end - start) // frequency`` updates after the first is at progress ``k / n``, so
    the first update is at ``initial`` and the last (at ``final_step``, the last grid point
    not after ``end``) is exactly at ``final``. One-shot when ``n == 0`` (``start == end``,
    or a frequency longer than the schedule): a single update at ``start`` to ``final``.

    Attributes:
        start: first step that updates masks.
        end: no update after it.
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
    def updates(self) -> int:
        """Updates after the first one (INC's ``total_prune_cnt``)."""
        return (self.end - self.start) // self.frequency

    @property
    def one_shot(self) -> bool:
        """True when the schedule makes a single update (straight to ``final``)."""
        return self.updates == 0

    @property
    def final_step(self) -> int:
        """The step whose update reaches ``final``."""
        return self.start + self.updates * self.frequency

    def is_update_step(self, step: int) -> bool:
        """Whether masks are updated at ``step``."""
        return self.start <= step <= self.final_step and (step - self.start) % self.frequency == 0

    def progress(self, step: int) -> float:
        """How far ``step`` is along the update grid, in [0, 1]."""
        if step < self.start:
            return 0.0
        if self.one_shot:
            return 1.0
        return min((step - self.start) // self.frequency, self.updates) / self.updates

    def sparsity_at(self, step: int) -> float:
        """The target sparsity of an update made at ``step``."""
        if step < self.start:
            return self.initial
        return decay_sparsity(self.decay, self.progress(step), self.initial, self.final)

    def update_steps(self) -> list[int]:
        """Every step at which masks are updated, in order."""
        return list(range(self.start, self.final_step + 1, self.frequency))


@dataclass(frozen=True)
class EpochSchedule:
    """An epoch schedule followed at each epoch's start, as LPOT's pruners did.

    Masks are recomputed at every epoch of ``[start, end]``; the progress moves in steps of
    ``frequency`` epochs (a fraction such as 0.1 moves every epoch): at epoch ``e`` it is
    ``floor((e - start) / frequency) * frequency / (end - start)``, capped at 1, so with
    ``linear`` decay the sparsity rises linearly with the epochs and is ``final`` at ``end``.
    """

    start: int
    end: int
    frequency: float = 1
    final: float = 0.0
    initial: float = 0.0
    decay: str = 'linear'

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f'end_epoch ({self.end}) must be >= start_epoch ({self.start}).')
        if not self.frequency > 0:
            raise ValueError(f'the update frequency must be > 0 epochs; got {self.frequency}.')
        if self.decay not in _DECAY:
            raise ValueError(f"sparsity_decay_type must be one of {', '.join(DECAY_TYPES)}; "
                             f'got {self.decay!r}.')

    def is_update_epoch(self, epoch: int) -> bool:
        return self.start <= epoch <= self.end

    def sparsity_at(self, epoch: int) -> float:
        if epoch < self.start:
            return self.initial
        if self.start == self.end or epoch >= self.end:
            return self.final
        # The small epsilon keeps 1 // 0.1 from being 9 in floating point.
        moves = math.floor((epoch - self.start) / self.frequency + 1e-9)
        progress = min(moves * self.frequency / (self.end - self.start), 1.0)
        return decay_sparsity(self.decay, progress, self.initial, self.final)


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
