"""The utilities of NNI's ``compression.pytorch.utils``: FLOPs/params counting, channel and
group dependencies, and which layers are not safe to prune.

``count_flops_params(model, x)`` counts one sample's multiply-accumulates of each
Conv/ConvTranspose/Linear (plus bias adds) and BatchNorm, and each layer's parameters,
as NNI's default mode did; masked weights count as present (count after the speedup to
see the savings). ``ChannelDependency`` / ``GroupDependency`` / ``not_safe_to_prune``
answer from the same trace the speedup uses.

Example::

    flops, params, results = count_flops_params(model, (1, 3, 32, 32), verbose=False)
    ChannelDependency(model, dummy_input).dependency_sets   # [{'conv1', 'conv2'}, ...]
"""
from __future__ import annotations

import csv
from typing import Any, Callable

import torch
from torch import nn

from prunus.speedup import dependency_groups

from .collect import model_device
from .flops import call_model

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
_MODES = ('default', 'full')


def _per_sample(output: torch.Tensor) -> int:
    return output[0].numel() if output.dim() > 1 else output.numel()


def _layer_flops(module: nn.Module, output: Any, mode: str) -> int:
    if not isinstance(output, torch.Tensor):
        return 0
    if isinstance(module, _WEIGHTED):
        # MACs per output element: the inputs one output channel sees
        if isinstance(module, nn.Linear):
            in_per_out = module.in_features
        elif module.transposed:
            in_per_out = module.weight.numel() // module.out_channels
        else:
            in_per_out = module.weight[0].numel()
        return _per_sample(output) * (in_per_out + (1 if module.bias is not None else 0))
    if isinstance(module, _NORMS):
        return 2 * _per_sample(output)
    if mode == 'full' and not list(module.children()):
        return _per_sample(output)  # activations, pooling: one op per output element
    return 0


def _inputs(model: nn.Module, x: Any) -> Any:
    if isinstance(x, (tuple, list)) and x and all(isinstance(d, int) for d in x):
        return torch.randn(*x, device=model_device(model))
    return x


def count_flops_params(model: nn.Module, x: Any, custom_ops: dict[type, Callable] | None = None,
                       verbose: bool = True, mode: str = 'default') -> tuple[int, int, list[dict]]:
    """``(flops, params, results)`` of one sample through ``model`` (NNI's counter).

    Args:
        model: the model; it runs once in eval mode (its mode is restored).
        x: an input tensor, a tuple of them, a dict of keyword inputs, or an input shape
            such as ``(1, 3, 224, 224)`` (a random input of that shape is used).
        custom_ops: ``{ModuleType: fn(module, inputs, output) -> flops}`` for other layers.
        verbose: print the per-layer table.
        mode: ``'default'`` (weighted layers and norms) or ``'full'`` (also one op per
            output element of every other leaf layer).

    Returns:
        Total FLOPs (multiply-accumulates), total parameters of the counted layers, and per
        layer ``{'name', 'module_type', 'weight_shape', 'flops', 'params'}``.

    Example::

        flops, params, results = count_flops_params(model, (1, 3, 224, 224), verbose=False)
    """
    if mode not in _MODES:
        raise ValueError(f"count_flops_params: mode must be one of {_MODES}; got {mode!r}.")
    custom = dict(custom_ops or {})
    results: list[dict] = []

    def hook(name: str):
        def record(module, args, output):
            fn = next((f for t, f in custom.items() if isinstance(module, t)), None)
            flops = int(fn(module, args, output)) if fn else _layer_flops(module, output, mode)
            own = sum(p.numel() for p in module.parameters(recurse=False))
            if flops or own:
                weight = getattr(module, 'weight', None)
                results.append({'name': name, 'module_type': type(module).__name__, 'flops': flops, 'params': own,
                                'weight_shape': tuple(weight.shape) if isinstance(weight, torch.Tensor) else ()})
        return record
    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n and (not list(m.children()) or any(isinstance(m, t) for t in custom))]
    was_training = model.training
    try:
        with torch.no_grad():
            call_model(model.eval(), _inputs(model, x))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    flops = sum(r['flops'] for r in results)
    params = sum(p.numel() for p in model.parameters())
    if verbose:
        print(f"{'name':<32} {'type':<18} {'weight shape':<22} {'FLOPs':>12} {'params':>10}")
        for r in results:
            print(f"{r['name']:<32} {r['module_type']:<18} {str(r['weight_shape']):<22} "
                  f"{r['flops']:>12,} {r['params']:>10,}")
        print(f'FLOPs total: {flops:,}  params total: {params:,}')
    return flops, params, results


def _weighted_names(model: nn.Module, names: list[str]) -> list[str]:
    modules = dict(model.named_modules())
    return [n for n in names if isinstance(modules.get(n), _WEIGHTED)]


class ChannelDependency:
    """The Conv/Linear layers whose output channels are tied (a residual add, a depthwise
    conv after them) and must lose the same channels for the speedup to remove them.

    Args:
        model: the model to trace.
        dummy_input: an input it runs on.
        traced_model: ignored (NNI's argument, kept for compatibility).
        prune_type: ``'Filter'`` (Conv/Linear layers) or ``'Batchnorm'`` (norm layers).

    Attributes:
        dependency_sets: one set of layer names per tie (singletons included).
        dependency: layer name -> its set.

    Example::

        deps = ChannelDependency(model, torch.randn(1, 3, 32, 32))
        deps.dependency['layer1.0.conv2']   # {'conv1', 'layer1.0.conv2', ...}
    """

    def __init__(self, model: nn.Module, dummy_input: Any, traced_model: Any = None,
                 prune_type: str = 'Filter'):
        if prune_type not in ('Filter', 'Batchnorm'):
            raise ValueError(f"ChannelDependency: prune_type must be 'Filter' or 'Batchnorm'; got {prune_type!r}.")
        self.model, self.prune_type = model, prune_type
        self.groups = dependency_groups(model, dummy_input)
        modules = dict(model.named_modules())
        wanted = _NORMS if prune_type == 'Batchnorm' else _WEIGHTED
        self.dependency_sets = [s for s in ({n for n in g.names if isinstance(modules.get(n), wanted)}
                                            for g in self.groups) if s]
        self.dependency = {n: s for s in self.dependency_sets for n in s}

    def export(self, filepath: str) -> None:
        """Writes one CSV row per tie: ``Dependency Set, Layers``."""
        with open(filepath, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(['Dependency Set', 'Layers'])
            for index, names in enumerate(self.dependency_sets):
                writer.writerow([f'Set {index + 1}', *sorted(names)])


class GroupDependency:
    """Layer name -> the number of equal blocks its output channels must be pruned in
    (grouped convolutions constrain every layer tied to them).

    Args:
        model: the model to trace.
        dummy_input: an input it runs on.
        traced_model: ignored (NNI's argument, kept for compatibility).

    Example::

        groups = GroupDependency(model, torch.randn(1, 3, 32, 32)).dependency
        groups['conv1']   # 1 unless a grouped conv ties it
    """

    def __init__(self, model: nn.Module, dummy_input: Any, traced_model: Any = None):
        groups = dependency_groups(model, dummy_input)
        self.dependency = {n: g.groups for g in groups for n in _weighted_names(model, g.names)}


def not_safe_to_prune(model: nn.Module, dummy_input: Any) -> list[str]:
    """Conv/Linear layers some of whose output channels the speedup could not remove (used
    by an operation that needs all of them, or part of the model's output).

    Args:
        model: the model to trace.
        dummy_input: an input it runs on.

    Returns:
        The names of those layers.

    Example::

        skip = not_safe_to_prune(model, torch.randn(1, 3, 32, 32))
        config_list = [{'sparsity': 0.5, 'op_types': ['Conv2d']}, {'exclude': True, 'op_names': skip}]
    """
    unsafe = []
    for group in dependency_groups(model, dummy_input):
        if group.blocked is not None and bool(group.blocked.any()):
            unsafe.extend(_weighted_names(model, group.names))
    return unsafe


def get_module_by_name(model: nn.Module, module_name: str) -> tuple[nn.Module | None, nn.Module | None]:
    """``(parent, module)`` for a dotted name, ``(None, None)`` when there is none (NNI's).

    Args:
        model: the model to look in.
        module_name: a dotted name from ``model.named_modules()``, such as ``'layer1.0.conv1'``.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
        >>> parent, module = get_module_by_name(model, '1.0')
        >>> module
        ReLU()
        >>> get_module_by_name(model, 'missing')
        (None, None)
    """
    names = module_name.split('.')
    owner = model
    for name in names[:-1]:
        owner = getattr(owner, name, None)
        if not isinstance(owner, nn.Module):
            return None, None
    leaf = getattr(owner, names[-1], None)
    return (owner, leaf) if isinstance(leaf, nn.Module) else (None, None)

