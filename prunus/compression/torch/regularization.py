"""Sparsity-inducing regularizers used while training before pruning."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from prunus.layers.torch import specs


def bn_l1_penalty(model: nn.Module, scale: float = 1e-4,
                  modules: Iterable[nn.Module] | None = None) -> torch.Tensor:
    """``scale * sum |gamma|`` over BatchNorm layers: add it to the loss for slimming.

    Args:
        model: the model whose BatchNorm layers to regularize.
        scale: the penalty weight (the paper's lambda, 1e-4 by default).
        modules: restrict to these BatchNorm modules (default: all of ``model``'s).

    Example::

        loss = criterion(model(x), y) + bn_l1_penalty(model, 1e-4)
    """
    chosen = list(modules) if modules is not None else [
        m for m in model.modules() if isinstance(m, specs.BATCH_NORM) and m.weight is not None]
    if not chosen:
        raise ValueError('bn_l1_penalty found no BatchNorm layer with a learnable weight.')
    return scale * sum(m.weight.abs().sum() for m in chosen)


class BatchNormL1Subgradient:
    """Context manager adding ``scale * sign(gamma)`` to BatchNorm grads before each
    ``optimizer.step()``: the L1 subgradient, without touching the user's loss."""

    def __init__(self, optimizer: torch.optim.Optimizer, modules: list[nn.Module], scale: float):
        self.optimizer, self.modules, self.scale = optimizer, modules, scale
        self._handle = None

    def _add_subgradient(self, optimizer, args, kwargs) -> None:
        with torch.no_grad():
            for module in self.modules:
                if module.weight.grad is not None:
                    module.weight.grad.add_(self.scale * torch.sign(module.weight))

    def __enter__(self) -> 'BatchNormL1Subgradient':
        self._handle = self.optimizer.register_step_pre_hook(self._add_subgradient)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
