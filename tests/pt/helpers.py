"""Builders shared by the PyTorch tests: a config and keyword arguments for any pruner."""
from __future__ import annotations

import torch

from prunus.compression.torch import layers


def type_names(model) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def prunable_types(pruner_cls, model) -> list[str]:
    return sorted(type_names(model) & set(layers.names(pruner_cls.supported_types)))


def squared_output(output, target=None):
    """A loss for models without labels: gradients reach every weight."""
    return output.float().pow(2).mean()


def pruner_kwargs(pruner_cls, example) -> dict:
    """Data for the data-driven pruners; nothing for the weight-only ones."""
    from prunus.compression.torch.data_pruners import DataDrivenFilterPruner
    if not issubclass(pruner_cls, DataDrivenFilterPruner):
        return {}
    kwargs = {'data': [(example, torch.zeros(1))]}
    if getattr(pruner_cls, 'needs_gradients', False):
        kwargs['criterion'] = squared_output
    return kwargs
