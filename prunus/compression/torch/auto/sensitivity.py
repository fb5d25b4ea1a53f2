"""SensitivityPruner: prune each layer in proportion to how much it tolerates, then fine-tune."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from prunus.layers.torch.files import read_checkpoint, save_atomic
from ...history import SearchHistory
from ...registry import register_pruner
from ...search import Allocation, refine_to_budget, scale_to_budget
from prunus.layers.torch import specs
from prunus.layers.torch.masking import apply_masks
from .base import AutoPruner
from .candidates import as_score
from .sensitivity_analysis import SensitivityAnalysis, substitute

logger = logging.getLogger('prunus.search')
CHECKPOINT = 'sensitivity_state.pth'


def tolerated_sparsity(row: Mapping[float, float], reference: float, threshold: float, floor: float) -> float:
    """The largest sparsity (at least ``floor``) whose score dropped by at most
    ``threshold`` (relative to ``reference``); scores are read from the first failure on."""
    best = floor
    for sparsity, score in sorted(row.items()):
        if reference - score > threshold * abs(reference):
            break
        best = max(best, sparsity)
    return best


@register_pruner('sensitivity', framework='torch')
class SensitivityPruner(AutoPruner):
    """Iterative pruning by per-layer sensitivity (Han et al., 2015).

    Each round analyses every layer's sensitivity in the current model (a copy pruned at
    each of the grid's sparsities above its current one), finds the sparsity each layer
    tolerates -- the largest whose score stays within ``acc_drop_threshold`` (relative)
    of the current score -- and grows the layers' sparsities in proportion to it until the
    overall sparsity has grown by ``sparsity_per_iter``. The model is pruned and
    ``finetuner`` runs. Rounds repeat until the ``'sparsity'`` of ``config_list`` (the
    fraction of the selected layers' weights; FLOPs with ``budget='flops'``) is met.

    ``compress(eval_args=[model], finetune_args=[model])`` calls
    ``evaluator(*eval_args, **eval_kwargs)`` and ``finetuner(*finetune_args, **finetune_kwargs)``
    as legacy NNI did; the model is pruned in place, and analysis trials replace it in
    ``eval_args`` by a pruned copy. Without args, both are called with the model.

    Args:
        sparsity_proportion_calc: optional ``fn(current_score, threshold, sensitivities)
            -> {layer: proportion}`` replacing the tolerance rule.
        checkpoint_dir: where round checkpoints, the history and the best masks go
            (the ``experiment_data_dir``; default './').

    Example::

        pruner = SensitivityPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                   finetuner=fine_tune, evaluator=evaluate)
        model = pruner.compress(eval_args=[model], finetune_args=[model])
    """

    supported_types = specs.FILTERED
    default_types = specs.CONV
    # The sensitivity sweep prunes one layer at a time with base_algo, so a tied group's
    # layers cannot be moved together: under budget='flops' only layers that shrink alone.
    search_tied_groups = False

    def __init__(self, model: nn.Module, config_list: list[dict], evaluator: Callable | None = None,
                 finetuner: Callable | None = None, base_algo: str = 'l1',
                 sparsity_proportion_calc: Callable | None = None, sparsity_per_iter: float = 0.1,
                 acc_drop_threshold: float = 0.05, checkpoint_dir: str | os.PathLike | None = None, *,
                 sparsities: Sequence[float] | None = None, **options: Any):
        super().__init__(model, config_list)
        owner = type(self).__name__
        if not callable(evaluator):
            raise TypeError(f'{owner}: evaluator must be callable; got {type(evaluator).__name__}.')
        if finetuner is not None and not callable(finetuner):
            raise TypeError(f'{owner}: finetuner must be callable or None; got {type(finetuner).__name__}.')
        if not 0 < sparsity_per_iter < 1:
            raise ValueError(f'{owner}: sparsity_per_iter must be in (0, 1); got {sparsity_per_iter}.')
        if not 0 <= acc_drop_threshold < 1:
            raise ValueError(f'{owner}: acc_drop_threshold must be in [0, 1); got {acc_drop_threshold}.')
        self.finetuner, self.proportion_calc = finetuner, sparsity_proportion_calc
        self.sparsity_per_iter, self.acc_drop_threshold = sparsity_per_iter, acc_drop_threshold
        self.grid = sparsities
        self._setup(evaluator, base_algo, checkpoint_dir or './', **options)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), 'sparsity_per_iter': self.sparsity_per_iter,
                'acc_drop_threshold': self.acc_drop_threshold, 'grid': self.grid}

    def proportions(self, score: float, sensitivities: Mapping[str, Mapping[float, float]],
                    current: Allocation) -> dict[str, float]:
        """How much each layer's sparsity should grow, relative to the others."""
        if self.proportion_calc is not None:
            return dict(self.proportion_calc(score, self.acc_drop_threshold, sensitivities))
        raw = {n: tolerated_sparsity(sensitivities.get(n, {}), score, self.acc_drop_threshold, current[n]) - current[n]
               for n in current}
        # A layer that tolerates nothing still moves a little, or the budget may be unreachable.
        return {n: max(v, 1e-3) for n, v in raw.items()}

    def step(self, current: Allocation, growth: Mapping[str, float], step_target: float) -> Allocation:
        """``current`` grown along ``growth`` until the budget reaches ``step_target``."""
        def grown(scale: Mapping[str, float]) -> Allocation:
            return {n: min(self.max_sparsity, current[n] + scale.get(n, 0.0)) for n in current}
        scale = scale_to_budget(dict(growth), lambda g: self.measure(grown(g)), step_target, max_sparsity=1.0)
        allocation = grown(scale)
        units = {n: self.units(n) for n in allocation}
        return refine_to_budget(allocation, units, self.measure, step_target, self.max_sparsity, floor=current)

    def _grid_above(self, current: Allocation) -> dict[str, list[float]]:
        grid = self.grid or [round(0.1 * i, 2) for i in range(1, 10)]
        return {n: [s for s in grid if s > current[n] + 1e-9 and s <= self.max_sparsity] for n in current}

    def compress(self, eval_args: Sequence[Any] | None = None, eval_kwargs: Mapping[str, Any] | None = None,
                 finetune_args: Sequence[Any] | None = None, finetune_kwargs: Mapping[str, Any] | None = None,
                 resume_sensitivity: str | os.PathLike | None = None) -> nn.Module:
        """Prunes round by round until the budget is met; returns the (pruned) model."""
        history = SearchHistory(self.experiment_data_dir, 'sensitivity', self.settings())
        model = self.bound_model
        current, round_index, reached = self._resume(history)
        total = max(1, round(self.target_sparsity / self.sparsity_per_iter))
        with self.progress_bar(total, 'sensitivity pruning') as bar:
            bar.update(min(round_index, total))
            while self.measure(current) < self.target_sparsity and not reached:
                analysis = SensitivityAnalysis(model, self.evaluator, self.grid, self.base_algo,
                                               executor=self.executor, progress=False, base_kwargs=self.base_kwargs,
                                               heads=list(self.head_units))
                if resume_sensitivity is not None and round_index == 0:
                    analysis.sensitivities = SensitivityAnalysis.load_csv(resume_sensitivity)
                    args, kwargs = substitute(list(eval_args or []), dict(eval_kwargs or {}), model, model)
                    analysis.baseline = as_score(self.evaluator(*args, **kwargs), type(self).__name__)
                else:
                    analysis.analysis(eval_args, eval_kwargs, list(current), self._grid_above(current))
                analysis.export(self.experiment_data_dir / f'sensitivity_round{round_index}.csv')
                step_target = min(self.target_sparsity, self.measure(current) + self.sparsity_per_iter)
                growth = self.proportions(analysis.baseline, analysis.sensitivities, current)
                current = self.step(current, growth, step_target)
                apply_masks(model, self.masks_for(current, self.base_scores(model)))
                if self.finetuner is not None:
                    args, kwargs = substitute(list(finetune_args or []), dict(finetune_kwargs or {}), model, model)
                    self.finetuner(*args, **kwargs)
                args, kwargs = substitute(list(eval_args or []), dict(eval_kwargs or {}), model, model)
                self.best_score = as_score(self.evaluator(*args, **kwargs), type(self).__name__)
                history.record({'round': round_index, 'score': self.best_score, 'budget': self.measure(current),
                                'allocation': current})
                logger.info('SensitivityPruner round %d: score %.4f at %s %.4f', round_index, self.best_score,
                            self.budget, self.measure(current))
                round_index += 1
                reached = step_target >= self.target_sparsity  # the round aiming at the target is the last
                save_atomic({'settings': history.settings, 'round': round_index, 'allocation': current,
                            'model': model.state_dict(), 'reached': reached}, self.experiment_data_dir / CHECKPOINT)
                bar.set_postfix(score=f'{self.best_score:.4f}', budget=f'{self.measure(current):.3f}')
                bar.update(1)
        self.best_allocation = current
        self._scores = self.base_scores(model)
        return self.finish(history, current, self.best_score)

    def _resume(self, history: SearchHistory) -> tuple[Allocation, int, bool]:
        start = {n: 0.0 for n in self.searchable()}
        path = self.experiment_data_dir / CHECKPOINT
        if not (history.resumed and path.exists()):
            return start, 0, False
        state = read_checkpoint(path, 'SensitivityPruner') or {}
        if state.get('settings') != history.settings:
            return start, 0, False
        self.bound_model.load_state_dict(state['model'])
        apply_masks(self.bound_model, self.masks_for(state['allocation'], self.base_scores(self.bound_model)))
        logger.info('SensitivityPruner: resuming after round %d', state['round'])
        return state['allocation'], state['round'], state['reached']
