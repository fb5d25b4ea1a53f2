"""Running a registered one-shot pruner at a sparsity chosen by someone else.

AGP and ADMM prune with any registered algorithm (``pruning_algorithm='level'``,
``base_algo='l1'``, ...). They build that algorithm on a plain ``sparsity`` config and
override its ``sparsity_of`` with the value their own schedule decides, so the algorithm's
layer types, scoring and exact allocation are reused unchanged.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..config import ConfigEntry
from ..registry import get_pruner
from .base import Pruner
from .data_pruners import DataDrivenFilterPruner
from .pruners import FilterPruner

#: Keys of the schedule-driven pruners that the delegated algorithm does not know.
SCHEDULE_KEYS = ('initial_sparsity', 'final_sparsity', 'start_epoch', 'end_epoch', 'frequency',
                 'prune_iterations')


class _ScheduledSparsity:
    """Mixin: the sparsity of each entry (by index) is set from outside."""

    scheduled: dict[int, float]

    def sparsity_of(self, entry: ConfigEntry) -> float:
        return self.scheduled.get(entry.index, 0.0)


def algorithm_config(config_list: list[dict]) -> list[dict]:
    """``config_list`` with schedule keys dropped and ``final_sparsity`` as ``sparsity``."""
    out = []
    for raw in config_list:
        entry = {k: v for k, v in raw.items() if k not in SCHEDULE_KEYS}
        if 'final_sparsity' in raw:
            entry['sparsity'] = raw['final_sparsity']
        out.append(entry)
    return out


def build_algorithm(name: Any, owner: str, model: nn.Module, config_list: list[dict],
                    optimizer: Any = None, trainer: Callable | None = None,
                    criterion: Callable | None = None, dummy_input: Any = None) -> Pruner:
    """An instance of the pruner registered as ``name`` whose sparsity is scheduled.

    ``trainer`` and ``criterion`` are passed only to algorithms that gather data with
    them (APoZ, mean activation, Taylor); others get the optimizer alone.
    ``dummy_input``, when given, goes to the filter algorithms (head entries need it).
    """
    if not isinstance(name, str):
        raise TypeError(f'{owner}: the pruning algorithm must be a registered name such as '
                        f"'level' or 'l1'; got {name!r}.")
    try:
        cls = get_pruner(name, 'torch')
    except ValueError as error:
        raise ValueError(f'{owner}: {error}') from None
    if not issubclass(cls, Pruner) or getattr(cls, 'schedules_itself', False):
        raise ValueError(f"{owner}: '{name}' schedules its own pruning and cannot be used as the "
                         'algorithm of another pruner.')
    # Named after the outer pruner, so config errors read 'ADMMPruner(base_algo='l1')'.
    scheduled = type(f"{owner}({name!r})", (_ScheduledSparsity, cls), {})
    kwargs: dict[str, Any] = {'optimizer': optimizer}
    if issubclass(cls, DataDrivenFilterPruner) and trainer is not None:
        kwargs.update(trainer=trainer, criterion=criterion)
    if dummy_input is not None and issubclass(cls, FilterPruner):
        kwargs['dummy_input'] = dummy_input
    algo = scheduled(model, algorithm_config(config_list), **kwargs)
    algo.scheduled = {}
    return algo
