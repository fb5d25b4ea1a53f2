"""Builders shared by the PyTorch tests: a config and keyword arguments for any pruner."""
from __future__ import annotations

import torch

from prunus.layers.torch import specs


def type_names(model) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


#: The algorithm a delegating pruner prunes with by default.
DEFAULT_ALGORITHM = {'agp': 'level', 'admm': 'l1'}


def prunable_types(pruner_cls, model) -> list[str]:
    from prunus.compression import get_pruner
    name = DEFAULT_ALGORITHM.get(getattr(pruner_cls, 'registry_name', ''))
    cls = get_pruner(name) if name else pruner_cls
    return sorted(type_names(model) & set(specs.names(cls.supported_types)))


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


def one_step_trainer(example):
    """trainer(model, optimizer, criterion, epoch) that takes one step on ``example``."""
    def trainer(model, optimizer, criterion, epoch, **kwargs):
        optimizer.zero_grad()
        squared_output(model(example)).backward()
        optimizer.step()
    return trainer


def make_pruner(name: str, cls, model, config: list[dict], example):
    """Any registered pruner, given the training pieces its kind needs."""
    if name == 'agp':
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        return cls(model, config, optimizer, one_step_trainer(example), squared_output, num_iterations=2)
    if name == 'admm':
        return cls(model, config, one_step_trainer(example), num_iterations=2, epochs=1)
    if name == 'lottery':
        config = [dict(entry, prune_iterations=2) for entry in config]
        return cls(model, config, torch.optim.SGD(model.parameters(), lr=0.01))
    return cls(model, config, **pruner_kwargs(cls, example))


def run_compress(name: str, pruner):
    """compress(), plus every pruning round for the iterative pruners."""
    model = pruner.compress()
    if name == 'lottery':
        for _ in pruner.get_prune_iterations():
            pruner.prune_iteration_start()
    return model


def model_bytes(model) -> dict:
    """Every parameter and buffer (persistent or not) as raw bytes, with the module
    structure and training flags: equal before and after means the model is untouched."""
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    raw = {k: (str(v.dtype), tuple(v.shape), v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
           for k, v in tensors.items()}
    raw['<structure>'] = tuple((n, type(m).__name__, m.training, tuple(m._forward_hooks), tuple(m._forward_pre_hooks))
                               for n, m in model.named_modules())
    return raw
