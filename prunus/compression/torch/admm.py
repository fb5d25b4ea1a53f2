"""ADMM pruning (Zhang et al., 2018): train towards a sparse copy, then prune."""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ..config import ConfigSpec, validate_config_list
from ..registry import register_pruner
from .base import Pruner
from .delegate import build_algorithm
from .distributed import broadcast_masks
from prunus.layers.torch.masking import apply_masks


def _positive_int(owner: str, key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f'{owner}: {key} must be an integer >= 1; got {value!r}.')
    return value


@register_pruner('admm', framework='torch')
class ADMMPruner(Pruner):
    """Alternates training with the penalty ``row/2 * ||W - Z + U||^2`` and projecting
    ``Z = prune(W + U)`` with ``base_algo``; the dual ``U += W - Z`` accumulates the gap.
    After ``num_iterations`` rounds the trained weights are pruned by ``base_algo``.

    ``trainer(model, optimizer=..., criterion=..., epoch=...)`` trains one epoch. If it
    also accepts ``callback``, it must call ``callback()`` after ``loss.backward()`` (the
    NNI 1.x contract) and the penalty gradient is added there; otherwise it is added just
    before every optimizer step taken while ADMM trains. Without ``optimizer`` an Adam
    (lr 1e-3) is used, without ``criterion`` cross-entropy.

    Example::

        config_list = [{'sparsity': 0.8, 'op_types': ['Conv2d']}]
        pruner = ADMMPruner(model, config_list, trainer=trainer, num_iterations=30, epochs=5)
        model = pruner.compress()
    """

    config_spec = ConfigSpec(targets=('sparsity',), extra=())
    schedules_itself = True

    def __init__(self, model: nn.Module, config_list: list[dict], trainer: Callable,
                 num_iterations: int = 30, epochs: int = 5, row: float = 1e-4, base_algo: str = 'l1',
                 *, criterion: Callable | None = None, optimizer: Any = None,
                 epochs_per_iteration: int | None = None):
        owner = type(self).__name__
        if not callable(trainer):
            raise TypeError(f'{owner}: trainer must be callable as trainer(model, optimizer, criterion, '
                            f'epoch); got {type(trainer).__name__}.')
        self.num_iterations = _positive_int(owner, 'num_iterations', num_iterations)
        given = epochs_per_iteration is not None
        self.epochs = _positive_int(owner, 'epochs_per_iteration' if given else 'epochs',
                                    epochs_per_iteration if given else epochs)
        if not isinstance(row, (int, float)) or isinstance(row, bool) or row <= 0:
            raise ValueError(f'{owner}: row must be a number > 0; got {row!r}.')
        self.entries = validate_config_list(config_list, self.config_spec, owner)
        self.algorithm = build_algorithm(base_algo, owner, model, config_list, optimizer, trainer, criterion)
        self.algorithm.scheduled = {e.index: e.get('sparsity') for e in self.entries if not e.exclude}
        self.bound_model, self.config_list = model, config_list
        self.targets, self.entry_of = self.algorithm.targets, self.algorithm.entry_of
        # The masks are the algorithm's, so is their granularity.
        self.structured, self.global_by_default = self.algorithm.structured, self.algorithm.global_by_default
        self.optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=1e-3)
        self.criterion = criterion or nn.CrossEntropyLoss()
        self.trainer, self.row, self.base_algo = trainer, float(row), base_algo
        self.Z: dict[str, torch.Tensor] = {}
        self.U: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def _project(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``values`` pruned by ``base_algo`` as if they were the weights."""
        saved = {n: m.weight.detach().clone() for n, m in self.targets.items()}
        try:
            for name, module in self.targets.items():
                module.weight.copy_(values[name])
            masks = broadcast_masks(self.algorithm.calc_masks())
        finally:
            for name, module in self.targets.items():
                module.weight.copy_(saved[name])
        return {n: values[n] * masks[n]['weight'] for n in self.targets}

    @torch.no_grad()
    def _add_penalty_grad(self) -> None:
        for name, module in self.targets.items():
            if module.weight.grad is not None:
                module.weight.grad.add_(self.row * (module.weight - self.Z[name] + self.U[name]))

    def _train_epoch(self, epoch: int) -> None:
        params = inspect.signature(self.trainer).parameters
        kwargs = dict(optimizer=self.optimizer, criterion=self.criterion, epoch=epoch)
        if 'callback' in params:
            self.trainer(self.bound_model, callback=self._add_penalty_grad, **kwargs)
            return
        handle = register_optimizer_step_pre_hook(lambda opt, args, kw: self._add_penalty_grad())
        try:
            self.trainer(self.bound_model, **kwargs)
        finally:
            handle.remove()

    def compress(self) -> nn.Module:
        """Runs the ADMM iterations, then attaches ``base_algo``'s masks of the trained weights."""
        weights = {n: m.weight.detach().clone() for n, m in self.targets.items()}
        self.Z = self._project(weights)
        self.U = {n: torch.zeros_like(w) for n, w in weights.items()}
        epoch = 0
        for _ in range(self.num_iterations):
            for _ in range(self.epochs):
                self._train_epoch(epoch)
                epoch += 1
            weights = {n: m.weight.detach().clone() for n, m in self.targets.items()}
            self.Z = self._project({n: weights[n] + self.U[n] for n in weights})
            self.U = {n: self.U[n] + weights[n] - self.Z[n] for n in weights}
        apply_masks(self.bound_model, broadcast_masks(self.algorithm.calc_masks()))
        return self.bound_model
