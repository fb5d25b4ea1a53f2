"""Framework-agnostic pieces of AMC's DDPG agent: replay memory, exploration, embeddings.

The networks and their updates live with the framework (``torch/auto/ddpg.py``); what
is plain bookkeeping lives here and is seeded by a numpy ``Generator``::

    >>> rng = np.random.default_rng(0)
    >>> memory = ReplayMemory(capacity=3, state_dim=2)
    >>> for i in range(5):
    ...     memory.append([i, i], 0.5, 1.0, [i + 1, i + 1], False)
    >>> len(memory), memory.sample(2, rng)[0].shape
    (3, (2, 2))
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


class ReplayMemory:
    """A ring buffer of transitions ``(state, action, reward, next_state, terminal)``."""

    def __init__(self, capacity: int, state_dim: int):
        self.capacity, self.size, self.position = int(capacity), 0, 0
        self.states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.actions = np.zeros((capacity, 1), dtype=np.float32)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.next_states = np.zeros((capacity, state_dim), dtype=np.float32)
        self.terminals = np.zeros((capacity, 1), dtype=np.float32)

    def append(self, state: Sequence[float], action: float, reward: float, next_state: Sequence[float],
               terminal: bool) -> None:
        i = self.position
        self.states[i], self.actions[i, 0], self.rewards[i, 0] = state, action, reward
        self.next_states[i], self.terminals[i, 0] = next_state, float(terminal)
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def __len__(self) -> int:
        return self.size

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        index = rng.integers(0, self.size, size=batch)
        return (self.states[index], self.actions[index], self.rewards[index], self.next_states[index],
                self.terminals[index])

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ('capacity', 'size', 'position', 'states', 'actions', 'rewards',
                                                'next_states', 'terminals')}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def truncated_normal(mean: float, sigma: float, low: float, high: float, rng: np.random.Generator) -> float:
    """A sample of N(mean, sigma) conditioned on [low, high] (by rejection, then clipping)."""
    if sigma <= 0:
        return float(np.clip(mean, low, high))
    for _ in range(100):
        value = rng.normal(mean, sigma)
        if low <= value <= high:
            return float(value)
    return float(np.clip(mean, low, high))


def normalize_columns(table: np.ndarray) -> np.ndarray:
    """Min-max scales every column of a layer-embedding table to [0, 1] (constant -> 0)."""
    table = np.asarray(table, dtype=np.float64)
    low, high = table.min(axis=0), table.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    return ((table - low) / span).astype(np.float32)


class MovingAverage:
    """Exponential moving average of rewards: AMC's baseline that turns rewards into advantages."""

    def __init__(self, alpha: float = 0.95):
        self.alpha, self.value = alpha, None

    def update(self, reward: float) -> float:
        self.value = reward if self.value is None else self.alpha * self.value + (1 - self.alpha) * reward
        return self.value
