"""AutoCompress: rounds of simulated annealing, ADMM pruning and speedup (Liu et al., 2020)."""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch
from torch import nn

from prunus.layers.torch.files import read_checkpoint, save_atomic
from prunus.speedup.core import speedup

from ...history import SearchHistory
from ...registry import available_pruners, get_pruner, register_pruner
from ...search import Allocation, check_optimize_mode
from prunus.layers.torch import specs
from prunus.layers.torch.masking import get_masks
from .annealing import SimulatedAnnealingPruner
from .base import AutoPruner, channel_masks, check_base_algo, follow
from .cost import CostModel

logger = logging.getLogger('prunus.search')
CHECKPOINT = 'autocompress_state.pth'


class _RoundAnnealer(SimulatedAnnealingPruner):
    """The annealing of one AutoCompress round. Its weight budget counts the selected
    layers' parameters left *after the speedup* (input channels removed downstream
    included), since the speedup between rounds removes those too."""

    # ADMM prunes each layer of the round's config by itself, so tied layers would lose
    # different channels and the speedup between rounds could not remove them.
    search_tied_groups = False

    def measure(self, allocation):
        if self.budget == 'flops':
            return super().measure(allocation)
        names = list(self.targets)
        return 1.0 - self.cost.params_of(names, allocation) / self.cost.params_of(names, {})


@register_pruner('auto_compress', framework='torch')
class AutoCompressPruner(AutoPruner):
    """Each of ``num_iterations`` rounds removes the same share of what is left: simulated
    annealing finds the round's per-layer sparsities, ADMM (``admm_num_iterations`` x
    ``admm_training_epochs`` epochs of ``trainer``) trains the weights towards them and
    prunes, and the speedup removes the pruned channels before the next round. The
    returned model is physically smaller (the bound model is replaced in place).

    ``experiment_data_dir`` holds each round's annealing history (``round<i>/``), the
    rounds' configs (``best_config.json``) and a checkpoint of the sped-up model after
    each round, from which a rerun with the same settings resumes.

    The budget (``'sparsity'`` of ``config_list``) is the fraction of the selected layers'
    parameters removed from the original model, as counted after the speedup; with
    ``budget='flops'`` the fraction of the model's FLOPs.

    Example::

        pruner = AutoCompressPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], trainer,
                                    evaluator, dummy_input, num_iterations=3)
        model = pruner.compress()
    """

    supported_types = specs.FILTERED
    default_types = specs.CONV
    # ADMM, which prunes each round, trains towards channel masks only.
    searches_heads = False

    def __init__(self, model: nn.Module, config_list: list[dict], trainer: Callable, evaluator: Callable,
                 dummy_input: Any, num_iterations: int = 3, optimize_mode: str = 'maximize', base_algo: str = 'l1',
                 start_temperature: float = 100, stop_temperature: float = 20, cool_down_rate: float = 0.9,
                 perturbation_magnitude: float = 0.35, admm_num_iterations: int = 30, admm_training_epochs: int = 5,
                 row: float = 1e-4, experiment_data_dir: str | os.PathLike = './', *, criterion: Callable | None = None,
                 admm_epochs_per_iteration: int | None = None, seed: int = 0, **options: Any):
        super().__init__(model, config_list)
        owner = type(self).__name__
        if 'admm' not in available_pruners('torch'):
            raise RuntimeError(f"{owner} needs ADMMPruner (registered as 'admm'), which this installation lacks.")
        if not callable(trainer):
            raise TypeError(f'{owner}: trainer must be callable as trainer(model, optimizer, criterion, epoch); '
                            f'got {type(trainer).__name__}.')
        if dummy_input is None:
            raise ValueError(f'{owner} needs dummy_input: the speedup between rounds traces the model with it.')
        if not isinstance(num_iterations, int) or num_iterations < 1:
            raise ValueError(f'{owner}: num_iterations must be an integer >= 1; got {num_iterations!r}.')
        check_optimize_mode(owner, optimize_mode)
        self.trainer, self.criterion, self.num_iterations, self.row = trainer, criterion, num_iterations, row
        self.admm_iterations = admm_num_iterations
        self.admm_epochs = admm_training_epochs if admm_epochs_per_iteration is None else admm_epochs_per_iteration
        self.annealing = dict(optimize_mode=optimize_mode, base_algo=base_algo, start_temperature=start_temperature,
                              stop_temperature=stop_temperature, cool_down_rate=cool_down_rate,
                              perturbation_magnitude=perturbation_magnitude)
        options.setdefault('budget', 'sparsity')
        if options['budget'] == 'params':
            raise ValueError(f"{owner}: its 'sparsity' budget already counts the selected layers' parameters "
                             "after the speedup; use budget='sparsity' (or 'flops').")
        self._setup(evaluator, base_algo, experiment_data_dir, optimize_mode, seed=seed, dummy_input=dummy_input,
                    **options)
        check_base_algo(owner, base_algo)
        self.options = options

    def _size(self, model: nn.Module) -> float:
        """The budgeted quantity of ``model``: FLOPs, or the selected layers' parameters."""
        cost = CostModel(model, self.dummy_input, [])
        if self.budget == 'flops':
            return float(cost.total_flops)
        return float(sum(cost.base_params.get(n, 0) for n in self.targets))

    def _round(self, model: nn.Module, index: int, round_target: float) -> tuple[nn.Module, Allocation, float]:
        config = [{**e, 'sparsity': round(round_target, 6)} if 'sparsity' in e else dict(e) for e in self.config_list]
        annealer = _RoundAnnealer(model, config, self.evaluator, experiment_data_dir=self.experiment_data_dir /
                                  f'round{index}', seed=self.seed + index, executor=self.executor, **self.annealing,
                                  **{k: v for k, v in self.options.items() if k not in ('budget', 'executor')},
                                  budget=self.budget, dummy_input=self.dummy_input)
        allocation, score = annealer.search()
        admm = get_pruner('admm')(model, annealer.best_config_list(allocation), self.trainer,
                                  num_iterations=self.admm_iterations, epochs=self.admm_epochs, row=self.row,
                                  base_algo=self.base_algo, **({'criterion': self.criterion} if self.criterion else {}))
        admm.compress()
        masks = get_masks(model)
        modules = dict(model.named_modules())
        # ADMM masks the searched layers; masking their BatchNorm/depthwise followers too
        # lets the speedup drop the channels exactly (see CostModel).
        for name, followers in annealer.followers.items():
            if name in masks:
                keep = masks[name]['weight'].flatten(1).abs().amax(dim=1) > 0
                masks.update({f: channel_masks(modules[f], follow(keep, index)) for f, index in followers.items()})
        return speedup(model, self.dummy_input, masks), allocation, score

    def compress(self) -> nn.Module:
        history = SearchHistory(self.experiment_data_dir, 'auto_compress', self.settings())
        original = self._size(self.bound_model)
        model, first, rounds = self._resume(history)
        with self.progress_bar(self.num_iterations, 'autocompress') as bar:
            bar.update(first)
            for index in range(first, self.num_iterations):
                goal = 1 - (1 - self.target_sparsity) ** ((index + 1) / self.num_iterations)
                round_target = max(0.0, 1 - (1 - goal) * original / self._size(model))
                model, allocation, score = self._round(model, index, round_target)
                achieved = 1 - self._size(model) / original
                history.record({'round': index, 'score': score, 'budget': achieved, 'allocation': allocation})
                logger.info('AutoCompressPruner round %d: score %.4f, %s removed %.4f (goal %.4f)', index, score,
                            self.budget, achieved, goal)
                rounds.append(self.best_config_list(allocation))
                # The whole (sped-up) module is saved: its shapes no longer match the original class defaults.
                save_atomic({'settings': history.settings, 'round': index + 1, 'model': model, 'rounds': rounds},
                           self.experiment_data_dir / CHECKPOINT)
                bar.set_postfix(score=f'{score:.4f}', removed=f'{achieved:.3f}')
                bar.update(1)
        last = history.trials[-1]
        self.best_score, self.best_allocation = last['score'], last['allocation']
        self.bound_model.__dict__.clear()
        self.bound_model.__dict__.update(model.__dict__)
        history.save_best(rounds[-1], self.best_score, budget=self.budget, achieved=last['budget'],
                          target=self.target_sparsity, rounds=rounds)
        return self.bound_model

    def _resume(self, history: SearchHistory) -> tuple[nn.Module, int, list]:
        path = self.experiment_data_dir / CHECKPOINT
        if history.resumed and path.exists():
            state = read_checkpoint(path, 'AutoCompressPruner') or {}
            if state.get('settings') == history.settings:
                logger.info('AutoCompressPruner: resuming after round %d', state['round'])
                return state['model'], state['round'], state['rounds']
        return self.bound_model, 0, []
