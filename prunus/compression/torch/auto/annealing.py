"""Simulated annealing over per-layer sparsities (the search inside AutoCompress)."""
from __future__ import annotations

import os
from concurrent.futures import Executor
from typing import Any, Callable

import numpy as np
from torch import nn

from ...history import SearchHistory
from ...registry import register_pruner
from ...search import Allocation, AnnealingSchedule, acceptance_probability, guided, perturb
from prunus.layers.torch import specs
from .base import AutoPruner


@register_pruner('simulated_annealing', framework='torch')
class SimulatedAnnealingPruner(AutoPruner):
    """Searches a per-layer sparsity allocation by simulated annealing (Liu et al., 2020).

    Starting from a random allocation that meets the budget, each temperature perturbs
    the current allocation (noise shrinking with the temperature), rescales it to the
    budget, keeps larger layers sparser (the AutoCompress prior), evaluates the pruned
    model and accepts it by the Metropolis rule. The temperature cools geometrically from
    ``start_temperature`` to ``stop_temperature``.

    Args:
        model: a trained model.
        config_list: layers to search and the overall ``'sparsity'`` (one value).
        evaluator: ``evaluator(model) -> float``, the score of a pruned model.
        optimize_mode: 'maximize' or 'minimize' the score.
        base_algo: the registered one-shot criterion that picks channels within a layer.
        start_temperature: the temperature the search starts at.
        stop_temperature: the search stops once the temperature falls below it.
        cool_down_rate: the factor the temperature is multiplied by after each step.
        perturbation_magnitude: noise amplitude at the start temperature.
        experiment_data_dir: where the history, best config and best masks are written.
        seed: seeds the search (the evaluator's own randomness is the caller's).
        executor: evaluates ``candidates_per_temperature`` candidates in parallel.
        candidates_per_temperature: perturbations tried per temperature; the best one
            faces the acceptance test.
        acceptance_scale: a score drop of this size is accepted with probability 1/e at
            the start temperature.
        **options: ``budget`` ('sparsity', 'flops' or 'params'), ``dummy_input`` (for a
            FLOPs or parameter budget), ``max_sparsity_per_layer``, ``progress`` and ``base_kwargs``, shared by
            every automatic pruner (see :mod:`prunus.compression.torch.auto.base`).

    Example::

        pruner = SimulatedAnnealingPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                          evaluator=lambda m: accuracy(m, x_val, y_val))
        model = pruner.compress()
    """

    supported_types = specs.FILTERED
    default_types = specs.CONV

    def __init__(self, model: nn.Module, config_list: list[dict], evaluator: Callable,
                 optimize_mode: str = 'maximize', base_algo: str = 'l1', start_temperature: float = 100,
                 stop_temperature: float = 20, cool_down_rate: float = 0.9,
                 perturbation_magnitude: float = 0.35, experiment_data_dir: str | os.PathLike = './', *,
                 seed: int = 0, executor: Executor | None = None, candidates_per_temperature: int = 1,
                 acceptance_scale: float = 0.02, **options: Any):
        super().__init__(model, config_list)
        if evaluator is None:
            raise ValueError(f'{type(self).__name__} needs an evaluator(model) -> float.')
        self.schedule = AnnealingSchedule(start_temperature, stop_temperature, cool_down_rate)
        if not 0 < perturbation_magnitude < 1:
            raise ValueError(f'{type(self).__name__}: perturbation_magnitude must be in (0, 1); '
                             f'got {perturbation_magnitude}.')
        if not isinstance(candidates_per_temperature, int) or candidates_per_temperature < 1:
            raise ValueError(f'{type(self).__name__}: candidates_per_temperature must be an integer >= 1; '
                             f'got {candidates_per_temperature!r}.')
        self.perturbation_magnitude = perturbation_magnitude
        self.candidates = candidates_per_temperature
        self.acceptance_scale = acceptance_scale
        self._setup(evaluator, base_algo, experiment_data_dir, optimize_mode, seed=seed,
                    executor=executor, **options)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), 'schedule': [self.schedule.start_temperature, self.schedule.stop_temperature,
                                                   self.schedule.cool_down_rate],
                'perturbation_magnitude': self.perturbation_magnitude, 'candidates': self.candidates}

    def _fit(self, names: list[str], sizes: list[int], values: list[float]) -> Allocation:
        return self.fit_budget(dict(zip(names, guided(values, sizes))))

    def search(self, history: SearchHistory | None = None, model: nn.Module | None = None,
               round_tag: Any = None) -> tuple[Allocation, float]:
        """Runs the annealing; returns the best allocation and its score."""
        history = history or SearchHistory(self.experiment_data_dir, 'simulated_annealing', self.settings())
        extra = {} if round_tag is None else {'round': round_tag}
        rng = np.random.default_rng(self.seed)
        names = self.searchable()
        sizes = [self.weights_of(n) for n in names]
        current = self._fit(names, sizes, list(rng.uniform(0, 1, len(names))))
        self.best_allocation = self.best_score = None
        current_score = self.evaluate([current], history, model=model, extra=extra)[0][0]
        with self.progress_bar(len(self.schedule), 'simulated annealing') as bar:
            self.note_best(bar, current, current_score)
            for temperature in self.schedule:
                magnitude = self.perturbation_magnitude * temperature / self.schedule.start_temperature
                candidates = [self._fit(names, sizes, perturb([current[n] for n in names], magnitude, rng,
                                                              self.max_sparsity))
                              for _ in range(self.candidates)]
                scores = [s for s, _ in self.evaluate(candidates, history, model=model,
                                                      extra={**extra, 'temperature': temperature})]
                pick = max(range(len(scores)), key=lambda i: scores[i] if self.maximize else -scores[i])
                chance = acceptance_probability(scores[pick], current_score, temperature,
                                                self.schedule.start_temperature, self.acceptance_scale,
                                                self.maximize)
                if rng.random() < chance:
                    current, current_score = candidates[pick], scores[pick]
                self.note_best(bar, candidates[pick], scores[pick])
                bar.update(1)
        return dict(self.best_allocation), float(self.best_score)

    def compress(self) -> nn.Module:
        history = SearchHistory(self.experiment_data_dir, 'simulated_annealing', self.settings())
        allocation, score = self.search(history)
        return self.finish(history, allocation, score)
