"""NetAdapt: shrink one layer per iteration, keep the candidate that scores best."""
from __future__ import annotations

import copy
import logging
import os
from concurrent.futures import Executor
from typing import Any, Callable

import torch
from torch import nn

from prunus.layers.torch.files import read_checkpoint, save_atomic
from ...history import SearchHistory
from ...registry import register_pruner
from ...search import Allocation, refine_to_budget, solve_layer
from prunus.layers.torch import specs
from prunus.layers.torch.masking import apply_masks
from .base import AutoPruner

logger = logging.getLogger('prunus.search')
CHECKPOINT = 'netadapt_state.pth'


@register_pruner('netadapt', framework='torch')
class NetAdaptPruner(AutoPruner):
    """NetAdapt (Yang et al., 2018): iteratively removes ``sparsity_per_iteration`` more of
    the budget, one layer at a time.

    Each iteration builds one candidate per layer (under ``budget='flops'``, a group of
    residual-tied layers counts as one, see :mod:`~prunus.compression.torch.auto.units`)
    -- that layer alone pruned just enough
    to remove another ``sparsity_per_iteration`` of the budget (weights, or FLOPs with
    ``budget='flops'``) -- fine-tunes each candidate briefly with
    ``short_term_fine_tuner(model)``, scores it with ``evaluator(model)`` and continues from
    the best one, until the overall ``'sparsity'`` of ``config_list`` is reached. The
    returned model carries the fine-tuned weights of the winning path.

    A checkpoint after every iteration in ``experiment_data_dir`` lets an interrupted
    search resume there. Candidates of an iteration run in parallel through ``executor``.

    Example::

        pruner = NetAdaptPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                short_term_fine_tuner=lambda m: train(m, x, y, epochs=1),
                                evaluator=lambda m: accuracy(m, x_val, y_val))
        model = pruner.compress()
    """

    supported_types = specs.FILTERED
    default_types = specs.CONV

    def __init__(self, model: nn.Module, config_list: list[dict], short_term_fine_tuner: Callable,
                 evaluator: Callable, optimize_mode: str = 'maximize', base_algo: str = 'l1',
                 sparsity_per_iteration: float = 0.05, experiment_data_dir: str | os.PathLike = './', *,
                 seed: int = 0, executor: Executor | None = None, **options: Any):
        super().__init__(model, config_list)
        owner = type(self).__name__
        if not callable(short_term_fine_tuner):
            raise TypeError(f'{owner}: short_term_fine_tuner must be callable as fine_tuner(model); '
                            f'got {type(short_term_fine_tuner).__name__}.')
        if evaluator is None:
            raise ValueError(f'{owner} needs an evaluator(model) -> float.')
        if not 0 < sparsity_per_iteration < 1:
            raise ValueError(f'{owner}: sparsity_per_iteration must be in (0, 1); got {sparsity_per_iteration}.')
        self.short_term_fine_tuner = short_term_fine_tuner
        self.sparsity_per_iteration = sparsity_per_iteration
        self._setup(evaluator, base_algo, experiment_data_dir, optimize_mode, seed=seed, executor=executor,
                    **options)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), 'sparsity_per_iteration': self.sparsity_per_iteration}

    def candidates(self, current: Allocation, step_target: float) -> list[Allocation]:
        """One allocation per layer that reaches ``step_target`` by pruning that layer alone;
        on the last step, single channels elsewhere may move too, to land on the budget."""
        found = []
        units = {n: self.units(n) for n in current}
        for name in current:
            value = solve_layer(current, name, self.measure, step_target, self.max_sparsity)
            if value is None:
                continue
            candidate = {**current, name: min(self.max_sparsity, round(value * units[name]) / units[name])}
            if step_target >= self.target_sparsity:
                candidate = refine_to_budget(candidate, units, self.measure, step_target, self.max_sparsity,
                                             floor=current)
            if candidate not in found:
                found.append(candidate)
        if step_target >= self.target_sparsity and found:
            # The last step lands on the budget: only the candidates nearest to it compete,
            # so a better-scoring one that overshoots cannot win over one that meets it.
            gaps = [abs(self.measure(c) - self.target_sparsity) for c in found]
            found = [c for c, gap in zip(found, gaps) if gap <= min(gaps) + 1e-9]
        return found

    def _resume(self, history: SearchHistory, working: nn.Module) -> tuple[int, Allocation] | None:
        path = self.experiment_data_dir / CHECKPOINT
        if not (history.resumed and path.exists()):
            return None
        state = read_checkpoint(path, 'NetAdaptPruner') or {}
        if state.get('settings') != history.settings:
            return None
        working.load_state_dict(state['model'])
        self._reached = state['reached']
        apply_masks(working, self.masks_for(state['allocation'], self.base_scores(working)))
        logger.info('NetAdaptPruner: resuming after iteration %d', state['iteration'])
        return state['iteration'], state['allocation']

    def search(self) -> tuple[Allocation, float | None]:
        """Run the search; returns the best allocation and its score."""
        history = SearchHistory(self.experiment_data_dir, 'netadapt', self.settings())
        working = copy.deepcopy(self.bound_model)
        current: Allocation = {n: 0.0 for n in self.searchable()}
        self._reached = False
        iteration, resumed = 0, self._resume(history, working)
        if resumed is not None:
            iteration, current = resumed
        total = max(1, round(self.target_sparsity / self.sparsity_per_iteration))
        self.best_score = None
        with self.progress_bar(total, 'netadapt') as bar:
            bar.update(min(iteration, total))
            # Whole channels cannot always hit the target exactly: the step that aims at
            # the target is the last one, wherever within half a channel it lands.
            while self.measure(current) < self.target_sparsity and not self._reached:
                step = min(self.target_sparsity, self.measure(current) + self.sparsity_per_iteration)
                candidates = self.candidates(current, step)
                if not candidates:
                    raise ValueError(f'NetAdaptPruner: no single layer can remove another '
                                     f'{step - self.measure(current):.3f} of the {self.budget} budget; '
                                     'lower sparsity_per_iteration or max_sparsity_per_layer limits.')
                scores = self.base_scores(working)
                results = self.evaluate(candidates, history, model=working, fine_tuner=self.short_term_fine_tuner,
                                        keep_state=True, scores=scores, extra={'round': iteration})
                pick = max(range(len(results)), key=lambda i: results[i][0] if self.maximize else -results[i][0])
                current, self.best_score = candidates[pick], results[pick][0]
                working.load_state_dict(results[pick][1])
                apply_masks(working, self.masks_for(current, scores))
                iteration += 1
                self._reached = step >= self.target_sparsity
                save_atomic({'settings': history.settings, 'iteration': iteration, 'allocation': current,
                            'model': working.state_dict(), 'reached': self._reached},
                           self.experiment_data_dir / CHECKPOINT)
                bar.set_postfix(best=f'{self.best_score:.4f}', budget=f'{self.measure(current):.3f}')
                bar.update(1)
        self._history, self._working = history, working
        self.best_allocation = current
        return current, self.best_score

    def compress(self) -> nn.Module:
        allocation, score = self.search()
        # The winning path's fine-tuned weights replace the bound model's.
        self.bound_model.load_state_dict(self._working.state_dict())
        self._scores = self.base_scores(self._working)
        return self.finish(self._history, allocation, score)
