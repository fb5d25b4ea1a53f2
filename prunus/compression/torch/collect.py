"""Statistics the data-driven criteria need, gathered with hooks while the model runs.

A collector watches the target modules for a number of batches; how the batches are run
is the caller's business (data given directly, a user trainer, or the user's own loop),
so the same collector serves every legacy and modern calling style.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch import nn

from prunus.layers.torch import specs
from prunus.layers.torch.inputs import run_inputs
from .criteria import taylor_fo_contribution

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'relu': torch.relu,
    'relu6': lambda x: torch.clamp(x, 0.0, 6.0),
    'identity': lambda x: x,
}


def resolve_activation(activation: str | Callable, owner: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(activation):
        return activation
    if activation not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {sorted(ACTIVATIONS)} or a callable; "
                         f'got {activation!r}.')
    return ACTIVATIONS[activation]


def split_batch(batch: Any) -> tuple[Any, Any]:
    """(inputs, target) of a batch: ``x``, ``(x, y, ...)`` or a dict of keyword inputs."""
    if isinstance(batch, (tuple, list)):
        if len(batch) == 0:
            raise ValueError('a data batch is an empty sequence.')
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def to_device(inputs: Any, device: torch.device) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    if isinstance(inputs, dict):
        return {k: to_device(v, device) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(to_device(v, device) for v in inputs)
    return inputs


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device('cpu')


def loss_of(output: Any, target: Any, criterion: Callable | None, owner: str) -> torch.Tensor:
    """The loss of one batch: ``criterion(output, target)``, or the model's own ``loss``."""
    if criterion is not None:
        return criterion(output, target) if target is not None else criterion(output)
    loss = output.get('loss') if isinstance(output, dict) else getattr(output, 'loss', None)
    if loss is None:
        raise ValueError(f'{owner} needs a criterion (or a model output with a .loss) to compute '
                         'gradients.')
    return loss


def limited(data: Iterable, limit: int | None) -> Iterable:
    for index, batch in enumerate(data):
        if limit is not None and index >= limit:
            return
        yield batch


class Collector:
    """Base collector: counts batches and stops listening after ``limit`` of them."""

    def __init__(self, modules: dict[str, nn.Module], limit: int | None):
        self.modules = modules
        self.limit = limit
        self.batches = 0
        self._handles: list[Any] = []

    @property
    def done(self) -> bool:
        return self.limit is not None and self.batches >= self.limit

    def start(self) -> 'Collector':
        return self

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _count_batch(self) -> None:
        self.batches += 1
        if self.done:
            self.stop()


class ActivationCollector(Collector):
    """Per output channel: how often activation(output) is zero, and its sum."""

    def __init__(self, modules: dict[str, nn.Module], limit: int | None, activation: Callable):
        super().__init__(modules, limit)
        self.activation = activation
        self.zeros: dict[str, torch.Tensor] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._first = next(iter(modules))

    def start(self) -> 'ActivationCollector':
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def _hook(self, name: str):
        def record(module, args, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"module '{name}' returned {type(output).__name__}; activation "
                                'statistics need a tensor output.')
            act = self.activation(output.detach().float())
            dim = specs.activation_channel_dim(module) % act.dim()
            reduce = [d for d in range(act.dim()) if d != dim]
            zeros = (act == 0).sum(dim=reduce).double()
            sums = act.sum(dim=reduce).double()
            self.zeros[name] = self.zeros.get(name, 0) + zeros
            self.sums[name] = self.sums.get(name, 0) + sums
            self.counts[name] = self.counts.get(name, 0) + act.numel() // act.shape[dim]
            if name == self._first:
                self._count_batch()
        return record


class TaylorCollector(Collector):
    """Per filter: sum over batches of sum over its weights of (w * dL/dw)^2."""

    def __init__(self, modules: dict[str, nn.Module], limit: int | None):
        super().__init__(modules, limit)
        self.contributions: dict[str, torch.Tensor] = {}
        self._first = next(iter(modules))

    def start(self) -> 'TaylorCollector':
        for name, module in self.modules.items():
            self._handles.append(module.weight.register_hook(self._hook(name, module)))
        return self

    def add(self, name: str, module: nn.Module, grad: torch.Tensor) -> None:
        contribution = taylor_fo_contribution(specs.filter_matrix(module, module.weight),
                                              specs.filter_matrix(module, grad))
        self.contributions[name] = self.contributions.get(name, 0) + contribution.double()

    def _hook(self, name: str, module: nn.Module):
        def record(grad):
            self.add(name, module, grad)
            if name == self._first:
                self._count_batch()
        return record


def _call_on_batch(model: nn.Module, inputs: Any, index: int, owner: str) -> Any:
    """The model's output on one batch's inputs; a batch the model rejects (a wrong
    shape or dtype) is named, with the layer that rejected it."""
    return run_inputs(model, inputs, f'{owner}: batch {index} of data' if owner else f'batch {index} of data')


@torch.no_grad()
def run_forward(model: nn.Module, data: Iterable, limit: int | None, owner: str = '') -> None:
    """Feeds batches to ``model`` in eval mode (BatchNorm statistics untouched)."""
    device, was_training = model_device(model), model.training
    model.eval()
    try:
        for index, batch in enumerate(limited(data, limit)):
            _call_on_batch(model, to_device(split_batch(batch)[0], device), index, owner)
    finally:
        model.train(was_training)


def run_backward(model: nn.Module, data: Iterable, limit: int | None, criterion: Callable | None,
                 owner: str) -> None:
    """Forward + backward over batches in eval mode; the model's .grad fields are restored."""
    device, was_training = model_device(model), model.training
    saved = {p: p.grad for p in model.parameters()}
    model.eval()
    try:
        for index, batch in enumerate(limited(data, limit)):
            inputs, target = split_batch(batch)
            model.zero_grad(set_to_none=True)
            output = _call_on_batch(model, to_device(inputs, device), index, owner)
            loss_of(output, to_device(target, device), criterion, owner).backward()
    finally:
        model.train(was_training)
        for param, grad in saved.items():
            param.grad = grad
