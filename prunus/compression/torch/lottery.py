"""Lottery-ticket iterative pruning with weight rewinding (Frankle & Carbin, 2019)."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..config import ConfigEntry, ConfigSpec
from ..registry import register_pruner
from ..schedules import lottery_round_sparsity
from . import criteria
from .base import Pruner, Scores
from .distributed import broadcast_masks
from prunus.layers.torch.masking import apply_masks


@register_pruner('lottery', framework='torch')
class LotteryTicketPruner(Pruner):
    """Finds a sparse "winning ticket" by iterative magnitude pruning and rewinding.

    Round 0 trains the dense model. Every later round prunes ``1 - (1 - P)**(1/n)`` of the
    weights that survived the previous round (the smallest |w| of each layer), so after
    ``n = prune_iterations`` rounds the sparsity is exactly ``P = sparsity``; then the
    surviving weights are reset to their initial values, and so are the optimizer's and
    the learning-rate scheduler's states.

    Train every round to convergence with a schedule that anneals within the round (the
    rewound scheduler restarts it); the fair dense reference is round 0, trained with the
    same per-round budget. On the digits CNNs a cosine schedule over 10 epochs per round
    keeps the 80% ticket within 1 point of dense (``benchmarks/training_digits.py``).

    Example::

        config_list = [{'prune_iterations': 5, 'sparsity': 0.8, 'op_types': ['default']}]
        pruner = LotteryTicketPruner(model, config_list, optimizer, lr_scheduler)
        pruner.compress()
        for _ in pruner.get_prune_iterations():
            pruner.prune_iteration_start()
            for epoch in range(epochs):
                train_one_epoch(model, optimizer)
    """

    config_spec = ConfigSpec(targets=('sparsity',), extra=('prune_iterations',))
    schedules_itself = True

    def __init__(self, model: nn.Module, config_list: list[dict], optimizer: Any = None,
                 lr_scheduler: Any = None, reset_weights: bool = True):
        super().__init__(model, config_list, optimizer)
        owner = type(self).__name__
        rounds = {e.get('prune_iterations') for e in self.entries if not e.exclude}
        if None in rounds:
            raise ValueError(f"{owner}: every config_list entry needs 'prune_iterations'.")
        if len(rounds) != 1:
            raise ValueError(f"{owner}: all config_list entries must share one 'prune_iterations'; "
                             f'got {sorted(rounds)}.')
        if lr_scheduler is not None and not hasattr(lr_scheduler, 'state_dict'):
            raise TypeError(f'{owner}: lr_scheduler must have state_dict()/load_state_dict(); '
                            f'got {type(lr_scheduler).__name__}.')
        self.prune_iterations: int = rounds.pop()
        self.lr_scheduler = lr_scheduler
        self.reset_weights = reset_weights
        self.curr_prune_iteration: int | None = None
        self._initial: dict[str, Any] | None = None

    def sparsity_of(self, entry: ConfigEntry) -> float:
        return lottery_round_sparsity(entry.get('sparsity'), self.prune_iterations,
                                      self.curr_prune_iteration or 0)

    def compute_scores(self, collected: Any) -> Scores:
        # Pruned weights rank below every survivor, so each round's mask is nested in the last.
        scores = {}
        for name, module in self.targets.items():
            score = criteria.magnitude(module.weight).double()
            mask = getattr(module, 'weight_mask', None)
            scores[name] = score if mask is None else torch.where(mask.bool(), score, -1.0)
        return scores

    def compress(self) -> nn.Module:
        """Records the initial states and attaches all-ones masks (round 0 is dense)."""
        self._initial = {
            'model': copy.deepcopy(self.bound_model.state_dict()),
            'optimizer': copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            'scheduler': copy.deepcopy(self.lr_scheduler.state_dict()) if self.lr_scheduler else None,
        }
        apply_masks(self.bound_model, {n: {'weight': torch.ones_like(m.weight)}
                                       for n, m in self.targets.items()})
        self.curr_prune_iteration = None
        return self.bound_model

    def get_prune_iterations(self) -> range:
        """Round indices 0 (dense) .. prune_iterations."""
        return range(self.prune_iterations + 1)

    def prune_iteration_start(self) -> None:
        """Starts the next round: from round 1 on, prunes further and rewinds the states."""
        if self._initial is None:
            raise RuntimeError(f'{type(self).__name__}: call compress() before prune_iteration_start().')
        nxt = 0 if self.curr_prune_iteration is None else self.curr_prune_iteration + 1
        if nxt > self.prune_iterations:
            raise RuntimeError(f'{type(self).__name__}: all {self.prune_iterations} prune iterations '
                               'have run already.')
        self.curr_prune_iteration = nxt
        if nxt == 0:
            return
        masks = broadcast_masks(self.calc_masks())
        if self.reset_weights:
            self.bound_model.load_state_dict(self._initial['model'])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(copy.deepcopy(self._initial['optimizer']))
            if self.lr_scheduler is not None:
                self.lr_scheduler.load_state_dict(copy.deepcopy(self._initial['scheduler']))
        apply_masks(self.bound_model, masks)
