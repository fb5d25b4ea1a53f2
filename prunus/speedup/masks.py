"""Getting masks into a model: mask dicts, mask files, pruners and prunus mask buffers."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

__all__ = ['Masks', 'load_masks', 'strip_masks', 'apply_masks']

Masks = dict[str, dict[str, torch.Tensor]]


def load_masks(masks: Any) -> Masks:
    """Normalize ``masks``: a mask dict, a path to a ``torch.save``'d one, a pruner
    (anything with ``get_masks()``) or None (use the masks already on the model)."""
    if masks is None:
        return {}
    if hasattr(masks, 'get_masks'):
        masks = masks.get_masks()
    elif isinstance(masks, (str, os.PathLike)):
        masks = torch.load(masks, map_location='cpu', weights_only=True)
    if not isinstance(masks, dict) or not all(isinstance(v, dict) for v in masks.values()):
        raise TypeError('masks must be a dict {module_name: {"weight": mask, "bias": mask}}, '
                        f'a path to one, or a pruner with get_masks(); got {type(masks).__name__}.')
    return masks


def strip_masks(model: nn.Module) -> None:
    """Bake prunus mask buffers into the weights and remove them and their hooks.

    Stands in for ``prunus.compression.torch.masking.strip`` until that lands on main:
    buffers named ``weight_mask``/``bias_mask`` multiply their parameter, then go, and so
    do forward pre-hooks defined in ``prunus.compression``.
    """
    try:
        from prunus.compression.torch.masking import strip  # noqa: PLC0415
    except ImportError:
        strip = None
    if strip is not None:
        strip(model)
        return
    for module in model.modules():
        for pname in ('weight', 'bias'):
            mask = module._buffers.pop(f'{pname}_mask', None)
            param = getattr(module, pname, None)
            if mask is not None and isinstance(param, torch.Tensor):
                param.data.mul_(mask.to(param.dtype))
        for key, hook in list(module._forward_pre_hooks.items()):
            owner = getattr(getattr(hook, '__func__', hook), '__module__', '') or ''
            if owner.startswith('prunus.compression'):
                del module._forward_pre_hooks[key]


def apply_masks(model: nn.Module, masks: Masks) -> None:
    """Multiply each named module's parameters by their masks (checks names and shapes)."""
    modules = dict(model.named_modules())
    for name, entry in masks.items():
        if name not in modules:
            raise ValueError(f"masks name module '{name}', which the model does not have.")
        for pname, mask in entry.items():
            param = getattr(modules[name], pname, None)
            if not isinstance(param, torch.Tensor):
                raise ValueError(f"masks['{name}']['{pname}']: module '{name}' has no "
                                 f"parameter '{pname}'.")
            if tuple(mask.shape) != tuple(param.shape):
                raise ValueError(f"masks['{name}']['{pname}'] has shape {tuple(mask.shape)}, "
                                 f'but the parameter has shape {tuple(param.shape)}.')
            param.data.mul_(mask.to(param.device, param.dtype))
