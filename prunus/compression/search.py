"""Framework-agnostic pieces of the automatic pruners: budgets, annealing, bisection.

An *allocation* maps a layer name to the fraction of that layer to prune. A *measure*
is any callable ``measure(allocation) -> float`` that tells which fraction of the
budgeted resource (weights, FLOPs, ...) an allocation removes; it must grow with every
layer's sparsity. Everything here works on those two notions only::

    >>> sizes = {'a': 100, 'b': 300}
    >>> measure = lambda alloc: sum(sizes[k] * v for k, v in alloc.items()) / 400
    >>> scale_to_budget({'a': 0.2, 'b': 0.6}, measure, 0.6)['b'] > 0.6
    True
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from .registry import is_registered

Allocation = dict[str, float]
Measure = Callable[[Mapping[str, float]], float]


def _scaled(raw: Mapping[str, float], factor: float, max_sparsity: float) -> Allocation:
    return {name: float(min(max_sparsity, max(0.0, value * factor))) for name, value in raw.items()}


def scale_to_budget(raw: Mapping[str, float], measure: Measure, target: float,
                    max_sparsity: float = 0.95, steps: int = 40) -> Allocation:
    """Scales every layer's sparsity by one factor so the allocation removes ``target``.

    The factor is found by bisection; since pruning whole channels makes ``measure`` a
    step function, the result is whichever of the two allocations around ``target`` is
    nearer to it (within half a step). An all-zero ``raw`` is treated as uniform.

    Raises:
        ValueError: ``target`` is not reachable with ``max_sparsity`` per layer.
    """
    if not raw:
        raise ValueError('scale_to_budget needs at least one layer.')
    if all(v <= 0 for v in raw.values()):
        raw = {name: 1.0 for name in raw}
    ceiling = _scaled(raw, float('inf'), max_sparsity)
    if measure(ceiling) < target - 1e-12:
        raise ValueError(f'a budget of {target:.4f} is unreachable: pruning every selected layer to '
                         f'{max_sparsity} removes only {measure(ceiling):.4f}.')
    low, high = 0.0, max_sparsity / max(min(v for v in raw.values() if v > 0), 1e-9)
    for _ in range(steps):
        mid = (low + high) / 2
        if measure(_scaled(raw, mid, max_sparsity)) >= target:
            high = mid
        else:
            low = mid
    below, above = _scaled(raw, low, max_sparsity), _scaled(raw, high, max_sparsity)
    # Whole channels make the measure a step function: take the nearer side of the target.
    return below if target - measure(below) < measure(above) - target else above


def refine_to_budget(allocation: Mapping[str, float], units: Mapping[str, int], measure: Measure,
                     target: float, max_sparsity: float = 0.95, rounds: int = 50,
                     floor: Mapping[str, float] | None = None) -> Allocation:
    """Moves single units (one channel more or fewer in one layer) while that brings the
    measure nearer to ``target``, so coarse layers combine to land close to the budget.

    ``units[name]`` is the layer's number of prunable units; values become exact
    multiples of ``1 / units[name]`` and never go below ``floor`` (default 0).
    """
    floor = floor or {}
    current = {n: round(v * units[n]) / units[n] for n, v in allocation.items()}
    gap = abs(measure(current) - target)
    for _ in range(rounds):
        best_move, best_gap = None, gap
        for name in current:
            for step in (-1, 1):
                value = current[name] + step / units[name]
                if not floor.get(name, 0.0) - 1e-12 <= value <= max_sparsity + 1e-12:
                    continue
                moved = abs(measure({**current, name: value}) - target)
                if moved < best_gap - 1e-12:
                    best_move, best_gap = (name, value), moved
        if best_move is None:
            break
        current[best_move[0]], gap = best_move[1], best_gap
    return current


def solve_layer(allocation: Mapping[str, float], layer: str, measure: Measure, target: float,
                max_sparsity: float = 0.95, steps: int = 40) -> float | None:
    """The smallest sparsity of ``layer`` alone (others fixed) whose allocation reaches
    ``target``; ``None`` when even ``max_sparsity`` falls short (NetAdapt skips the layer)."""
    trial = dict(allocation)
    trial[layer] = max_sparsity
    if measure(trial) < target:
        return None
    low, high = allocation[layer], max_sparsity
    for _ in range(steps):
        trial[layer] = (low + high) / 2
        if measure(trial) >= target:
            high = trial[layer]
        else:
            low = trial[layer]
    return float(high)


@dataclass(frozen=True)
class AnnealingSchedule:
    """Geometric cooling from ``start_temperature`` down to ``stop_temperature``.

    Example::

        >>> [round(t, 1) for t in AnnealingSchedule(100, 70, 0.9)]
        [100.0, 90.0, 81.0, 72.9]
    """

    start_temperature: float = 100.0
    stop_temperature: float = 20.0
    cool_down_rate: float = 0.9

    def __post_init__(self):
        if not 0 < self.stop_temperature < self.start_temperature:
            raise ValueError('need 0 < stop_temperature < start_temperature; got '
                             f'start_temperature={self.start_temperature}, '
                             f'stop_temperature={self.stop_temperature}.')
        if not 0 < self.cool_down_rate < 1:
            raise ValueError(f'cool_down_rate must be in (0, 1); got {self.cool_down_rate}.')

    def __iter__(self) -> Iterator[float]:
        temperature = float(self.start_temperature)
        while temperature > self.stop_temperature:
            yield temperature
            temperature *= self.cool_down_rate

    def __len__(self) -> int:
        return sum(1 for _ in self)


def guided(values: Sequence[float], sizes: Sequence[int]) -> list[float]:
    """Reorders ``values`` so larger layers get larger sparsities (the AutoCompress prior:
    layers with more weights tolerate more pruning)."""
    order = np.argsort(np.asarray(sizes), kind='stable')
    result = [0.0] * len(values)
    for rank, index in enumerate(order):
        result[int(index)] = float(sorted(values)[rank])
    return result


def perturb(values: Sequence[float], magnitude: float, rng: np.random.Generator,
            max_sparsity: float = 0.95) -> list[float]:
    """Adds uniform noise in ``[-magnitude, magnitude]`` to each value and clips."""
    noise = rng.uniform(-magnitude, magnitude, size=len(values))
    return [float(np.clip(v + n, 0.0, max_sparsity)) for v, n in zip(values, noise)]


def acceptance_probability(candidate: float, current: float, temperature: float,
                           start_temperature: float, scale: float, maximize: bool = True) -> float:
    """Metropolis rule: 1 for an improvement, else ``exp(-drop / tau)`` where
    ``tau = scale * temperature / start_temperature`` is in score units, so a drop of
    ``scale`` is accepted with probability 1/e at the start temperature."""
    drop = (current - candidate) if maximize else (candidate - current)
    if drop <= 0:
        return 1.0
    tau = scale * temperature / start_temperature
    return math.exp(-drop / tau) if tau > 0 else 0.0


def better(a: float, b: float | None, maximize: bool = True) -> bool:
    """Whether score ``a`` beats ``b`` (``None`` is beaten by anything)."""
    return b is None or (a > b if maximize else a < b)


def check_optimize_mode(owner: str, optimize_mode: str) -> bool:
    """True for 'maximize', False for 'minimize'; anything else is an error."""
    if optimize_mode not in ('maximize', 'minimize'):
        known = is_registered(optimize_mode)
        hint = (f" (it names a pruner: the legacy signature puts optimize_mode before base_algo; "
                f"pass base_algo={optimize_mode!r} by keyword)" if known else '')
        raise ValueError(f"{owner}: optimize_mode must be 'maximize' or 'minimize'; got {optimize_mode!r}{hint}.")
    return optimize_mode == 'maximize'
