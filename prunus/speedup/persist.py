"""Saving a sped-up PyTorch model so that it reloads without unpickling code.

A sped-up model has the classes of the original architecture with smaller layers (and
sometimes a bias the original lacked, where a removed channel's constant was folded in).
:func:`save` writes, with ``torch.save``, only tensors and plain values: the state dict and,
per module, its class name, its plain attributes (``in_channels``, ``num_features``, ...)
and the shape of each parameter and buffer. :func:`load` takes a fresh instance of the
original architecture, gives every layer the saved shapes and attributes, then loads the
weights, so the file opens with ``torch.load(path, weights_only=True)``. Layers the
speedup gave another class (a layer carrying removed channels' constants, e.g.
``Conv2dWithConstants`` with its ``carried_constants`` / ``source_weights`` /
``removed_shifts`` parameters and ``carried_scale`` / ``carried_squares`` / ``eval_offset``
buffers, a ``PrunedMultiheadAttention`` in place of ``nn.MultiheadAttention``, head-pruned
Swin attention) get that class back on load, by its saved name, from prunus' own classes
only. Parameters shared by several layers (tied weights, the one ``removed_shifts``
vector) are shared again after loading.
"""
from __future__ import annotations

import copy
import os
from typing import Any

import torch
from torch import nn

from prunus.layers.torch import modules as _modules
from prunus.layers.torch.constants import WITH_CONSTANTS
from prunus.layers.torch.masking import is_masked


def _stand_ins() -> dict[str, type]:
    """Classes the speedup may give a layer in place of the original's: the layer with
    constant paths (a subclass), head-pruned Swin attention (a subclass) and
    PrunedMultiheadAttention (in place of nn.MultiheadAttention)."""
    table = {cls.__qualname__: cls for cls in WITH_CONSTANTS.values()}
    table['PrunedMultiheadAttention'] = _modules.PrunedMultiheadAttention
    for name in ('HeadPrunedShiftedWindowAttention', 'HeadPrunedShiftedWindowAttentionV2'):
        cls = getattr(_modules, name, None)
        if cls is not None:
            table[name] = cls
    return table


FORMAT = 'prunus.speedup.save/1'
_PLAIN = (bool, int, float, str, type(None))


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, (tuple, list)) and len(value) <= 64:
        return all(_plain(v) for v in value)
    return False


def _slots(module: nn.Module, table: dict[str, Any], persistent: set[str] | None) -> dict:
    out = {}
    for key, tensor in table.items():
        entry: dict[str, Any] = {'shape': None if tensor is None else list(tensor.shape)}
        if tensor is not None:
            entry['dtype'] = str(tensor.dtype).removeprefix('torch.')
            entry['requires_grad'] = bool(tensor.requires_grad)
        if persistent is not None:
            entry['persistent'] = key not in module._non_persistent_buffers_set
        out[key] = entry
    return out


def _own_config(module: nn.Module, root: Any) -> dict:
    """The plain values in which a layer's own model config differs from the model's
    (the speedup gives a head-pruned layer that reads its head count from the config a
    copy of its own: Phi-3)."""
    config = vars(module).get('config')
    if config is None or root is None or config is root or not hasattr(config, '__dict__'):
        return {}
    return {k: v for k, v in vars(config).items()
            if not k.startswith('_') and _plain(v) and getattr(root, k, None) != v}


def _describe(model: nn.Module) -> dict[str, dict]:
    described = {}
    root = vars(model).get('config')
    for name, module in model.named_modules():
        attrs = {k: v for k, v in vars(module).items() if not k.startswith('_') and _plain(v)}
        described[name] = {
            'type': type(module).__qualname__, 'attrs': attrs,
            'params': _slots(module, module._parameters, None),
            'buffers': _slots(module, module._buffers, set()),
        }
        own = _own_config(module, root)
        if own:
            described[name]['config'] = own
    return described


def _aliases(model: nn.Module) -> dict[str, str]:
    """Parameter names that are the same tensor as an earlier one (tied weights)."""
    first: dict[int, str] = {}
    tied = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        for pname, param in module._parameters.items():
            if param is None:
                continue
            full = f'{mname}.{pname}' if mname else pname
            if id(param) in first and first[id(param)] != full:
                tied[full] = first[id(param)]
            first.setdefault(id(param), full)
    return tied


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Save a (sped-up) model so that :func:`load` rebuilds it on a fresh instance.

    Args:
        model: the model, typically the result of :func:`prunus.speedup.speedup`; it must
            carry no prunus masks (sped-up and stripped models carry none).
        path: the file to write.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: prunus masks are still attached to the model.

    Example::

        small = speedup(model, x, pruner)
        save(small, 'small.pt')
        again = load('small.pt', MyNet())   # MyNet() is the original, unpruned architecture
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'save() needs a torch.nn.Module; got {type(model).__name__}.')
    masked = [n for n, m in model.named_modules() if is_masked(m)]
    if masked:
        raise ValueError(f"module '{masked[0]}' still has prunus masks attached; save the result "
                         'of speedup(), or call prunus.compression.torch.strip(model) first.')
    extra = {f'{n}.{k}' if n else k: b for n, m in model.named_modules()
             for k, b in m._buffers.items() if b is not None and k in m._non_persistent_buffers_set}
    blob = {'format': FORMAT, 'modules': _describe(model), 'aliases': _aliases(model),
            'state_dict': model.state_dict(), 'non_persistent': extra}
    torch.save(blob, path)


def _read(path: str | os.PathLike, map_location: Any) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"No saved model at '{os.fspath(path)}'.")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ValueError(f"'{os.fspath(path)}' is not a file written by prunus.speedup.save "
                         f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}).'
                         ) from exc
    if not isinstance(blob, dict) or blob.get('format') != FORMAT:
        raise ValueError(f"'{os.fspath(path)}' is not a file written by prunus.speedup.save.")
    return blob


def _stand_in(saved_type: str, module: nn.Module) -> type | None:
    """The class the speedup gave ``module`` when it was saved as ``saved_type``, or None."""
    cls = _stand_ins().get(saved_type)
    if cls is None:
        return None
    if cls is _modules.PrunedMultiheadAttention:
        return cls if isinstance(module, nn.MultiheadAttention) else None
    base = next((b for b in cls.__mro__[1:] if b.__module__.startswith('torch')), None)
    return cls if base is not None and type(module) is base else None


def _swap(saved: dict[str, dict], model: nn.Module) -> None:
    """Give each module the stand-in class it had when saved (parents before children)."""
    for name in sorted(saved, key=lambda n: (n.count('.') if n else -1, n)):
        modules = dict(model.named_modules())
        module = modules.get(name)
        if module is None or type(module).__qualname__ == saved[name]['type']:
            continue
        cls = _stand_in(saved[name]['type'], module)
        if cls is None:
            continue
        if cls is _modules.PrunedMultiheadAttention:
            new = _modules.PrunedMultiheadAttention.from_mha(module)
            if name:
                owner, _, key = name.rpartition('.')
                setattr(model.get_submodule(owner), key, new)
            else:
                raise ValueError('the model itself cannot be a PrunedMultiheadAttention')
        else:
            module.__class__ = cls


def _check_architecture(saved: dict[str, dict], model: nn.Module, path: Any) -> None:
    modules = dict(model.named_modules())
    missing = [n for n in saved if n not in modules]
    extra = [n for n in modules if n not in saved]
    if missing or extra:
        what = (f"has no module '{missing[0]}'" if missing else f"has module '{extra[0]}'")
        raise ValueError(f"'{os.fspath(path)}' was saved from another architecture: the model "
                         f'{what}, the saved one does not agree; pass a fresh instance of the '
                         'original architecture.')
    rebuilt = [n + '.' for n, e in saved.items() if n and e['type'] == 'PrunedMultiheadAttention'
               and isinstance(modules[n], nn.MultiheadAttention)]  # its children come new
    for name, entry in saved.items():
        got = type(modules[name]).__qualname__
        if any(name.startswith(r) for r in rebuilt):
            continue
        if got != entry['type'] and _stand_in(entry['type'], modules[name]) is None:
            raise ValueError(f"'{os.fspath(path)}' was saved from another architecture: module "
                             f"'{name}' is a {got} here and was a {entry['type']}.")


def _placeholder(slot: dict) -> torch.Tensor | None:
    if slot['shape'] is None:
        return None
    return torch.empty(slot['shape'], dtype=getattr(torch, slot['dtype']), device='meta')


def _reshape(module: nn.Module, entry: dict) -> None:
    for key, value in entry['attrs'].items():
        setattr(module, key, value)
    if entry.get('config'):
        module.config = copy.copy(module.config)
        for key, value in entry['config'].items():
            setattr(module.config, key, value)
    for key, slot in entry['params'].items():
        tensor = _placeholder(slot)
        module._parameters[key] = None if tensor is None else nn.Parameter(
            tensor, requires_grad=slot['requires_grad'])
    for key in [k for k in module._parameters if k not in entry['params']]:
        del module._parameters[key]
    for key, slot in entry['buffers'].items():
        module._buffers[key] = _placeholder(slot)
        if slot['persistent']:
            module._non_persistent_buffers_set.discard(key)
        else:
            module._non_persistent_buffers_set.add(key)
    for key in [k for k in module._buffers if k not in entry['buffers']]:
        del module._buffers[key]


def load(path: str | os.PathLike, model: nn.Module, *, map_location: Any = 'cpu') -> nn.Module:
    """Rebuild a model saved by :func:`save` on ``model``, a fresh instance of its architecture.

    Every layer of ``model`` gets the saved shapes and attributes, then the saved weights;
    the result computes what the saved model computed. ``model`` is changed in place and
    returned; it is left as it was when the file does not match it.

    Args:
        path: a file written by :func:`save`.
        model: an instance of the original (unpruned) architecture, e.g. ``MyNet()``.
        map_location: where to put the tensors, as for ``torch.load`` (default ``'cpu'``).

    Returns:
        ``model``, now the saved smaller model.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file was not written by :func:`save`, or ``model`` has other
            modules or module types than the saved model.

    Example::

        small = load('small.pt', torchvision.models.resnet18())
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'load() needs a torch.nn.Module to rebuild; got {type(model).__name__}.')
    blob = _read(path, map_location)
    _check_architecture(blob['modules'], model, path)
    _swap(blob['modules'], model)
    _check_architecture(blob['modules'], model, path)
    modules = dict(model.named_modules())
    for name, entry in blob['modules'].items():
        _reshape(modules[name], entry)
    model.load_state_dict(blob['state_dict'], strict=True, assign=True)
    for full, tensor in blob['non_persistent'].items():
        owner, _, key = full.rpartition('.')
        model.get_submodule(owner)._buffers[key] = tensor
    for full, target in blob['aliases'].items():
        owner, _, key = full.rpartition('.')
        t_owner, _, t_key = target.rpartition('.')
        model.get_submodule(owner)._parameters[key] = model.get_submodule(t_owner)._parameters[t_key]
    return model
