"""The training loop LPOT built from a YAML ``pruning.train`` section when the user gave
no training function: optimizer, criterion, epochs and iterations per epoch, with the
pruning hooks in their places.

``train`` keys: ``start_epoch`` / ``end_epoch`` (epochs ``start..end-1`` are run),
``iteration`` (at most this many batches an epoch), ``optimizer`` (``SGD`` or ``Adam``
with LPOT's key names: ``learning_rate``, ``momentum``, ``weight_decay``, ``nesterov``,
``beta_1``, ``beta_2``, ``epsilon``) and ``criterion`` (``CrossEntropyLoss``, with
``reduction``). ``dataloader`` sections that build datasets are not supported: set
``train_dataloader`` in code.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from .collect import loss_of, model_device, split_batch, to_device
from .flops import call_model

_OPTIMIZER_KEYS = {
    'SGD': {'learning_rate': 'lr', 'momentum': 'momentum', 'weight_decay': 'weight_decay',
            'nesterov': 'nesterov', 'dampening': 'dampening'},
    'Adam': {'learning_rate': 'lr', 'weight_decay': 'weight_decay', 'epsilon': 'eps',
             'amsgrad': 'amsgrad', 'beta_1': 'beta_1', 'beta_2': 'beta_2'},
}


def _one(section: Any, where: str) -> tuple[str, Mapping[str, Any]]:
    if not isinstance(section, Mapping) or len(section) != 1:
        raise ValueError(f"{where} must name exactly one entry (e.g. {{'SGD': {{...}}}}); got {section!r}.")
    name, args = next(iter(section.items()))
    return name, dict(args or {})


def build_optimizer(section: Any, model: nn.Module) -> torch.optim.Optimizer:
    name, args = _one(section, "'pruning.train.optimizer'")
    if name not in _OPTIMIZER_KEYS:
        raise ValueError(f"'pruning.train.optimizer' names '{name}'; supported: {', '.join(_OPTIMIZER_KEYS)}.")
    unknown = sorted(set(args) - set(_OPTIMIZER_KEYS[name]))
    if unknown:
        raise ValueError(f"'pruning.train.optimizer.{name}' has unknown key(s) {unknown}; accepted: "
                         f"{', '.join(_OPTIMIZER_KEYS[name])}.")
    kwargs = {_OPTIMIZER_KEYS[name][k]: v for k, v in args.items()}
    if name == 'Adam':
        betas = (kwargs.pop('beta_1', 0.9), kwargs.pop('beta_2', 0.999))
        return torch.optim.Adam(model.parameters(), betas=betas, **kwargs)
    return torch.optim.SGD(model.parameters(), **kwargs)


def build_criterion(section: Any) -> Callable:
    name, args = _one(section, "'pruning.train.criterion'")
    if name != 'CrossEntropyLoss':
        raise ValueError(f"'pruning.train.criterion' names '{name}'; supported: CrossEntropyLoss.")
    unknown = sorted(set(args) - {'reduction', 'from_logits'})
    if unknown:
        raise ValueError(f"'pruning.train.criterion.CrossEntropyLoss' has unknown key(s) {unknown}.")
    # LPOT wrote 'reduction: None' for its default, the mean (a per-sample loss cannot train).
    reduction = args.get('reduction') or 'mean'
    if str(reduction).lower() in ('none', 'auto'):
        reduction = 'mean'
    return nn.CrossEntropyLoss(reduction=reduction)


def yaml_train_func(train: Mapping[str, Any], dataloader: Any, hooks: Any) -> Callable[[nn.Module], None]:
    """The training function of a ``train`` section, calling ``hooks``' pruning hooks."""
    missing = [k for k in ('optimizer', 'criterion') if k not in train]
    if missing:
        raise ValueError(f"no training function was set, and the YAML 'pruning.train' section lacks "
                         f"{', '.join(repr(k) for k in missing)} to build one; set train_func / pruning_func.")
    if dataloader is None:
        raise ValueError('no training function was set, so the YAML training runs on train_dataloader; '
                         'set prune.train_dataloader (YAML dataloader sections are not supported).')
    start, end = train.get('start_epoch', 0), train.get('end_epoch', 1)
    iterations = train.get('iteration')

    def train_func(model: nn.Module) -> None:
        optimizer, criterion = build_optimizer(train['optimizer'], model), build_criterion(train['criterion'])
        device = model_device(model)
        model.train()
        for epoch in range(start, end):
            hooks.on_epoch_begin(epoch)
            for step, batch in enumerate(dataloader):
                if iterations is not None and step >= iterations:
                    break
                hooks.on_step_begin(step)
                inputs, target = split_batch(batch)
                output = call_model(model, to_device(inputs, device))
                loss = loss_of(output, to_device(target, device), criterion, 'the YAML training')
                optimizer.zero_grad()
                loss.backward()
                hooks.on_before_optimizer_step()
                optimizer.step()
                hooks.on_after_optimizer_step()
                hooks.on_step_end()
            hooks.on_epoch_end()
    return train_func

