"""Getting masks into a model: mask dicts, mask files, pruners and prunus mask buffers."""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from prunus.compression import mask_rules
from prunus.layers.torch import files, masking

Masks = dict[str, dict[str, torch.Tensor]]


def load_masks(masks: Any, model: nn.Module | None = None) -> Masks:
    """Normalize ``masks``: a mask dict, a path to a ``torch.save``'d one, a pruner
    (anything with ``get_masks()``) or None (use the masks already on the model).
    Given ``model``, every mask is checked against it (see
    :func:`~prunus.layers.torch.masking.check_masks`)."""
    if masks is None:
        return {}
    on_model = getattr(masks, 'masks_on_model', None)  # a prunus pruner (the speedup sits below them)
    if model is not None and callable(on_model) and on_model(model):
        return {}  # such a pruner's masks are the buffers on its model: no copies
    source = 'masks'
    if hasattr(masks, 'get_masks'):
        source = f'{type(masks).__name__}.get_masks()'
        masks = masks.get_masks()
    elif isinstance(masks, (str, os.PathLike)):
        source = f"mask file '{os.fspath(masks)}'"
        masks = files.read_mask_file(masks)
    elif not isinstance(masks, dict):
        raise mask_rules.not_masks(masks)
    mask_rules.check_structure(masks, source)
    masks = files.normalize_mask_keys(masks)
    if model is not None:
        masking.check_masks(model, masks, source, buffers=True)
    return masks


def _masks_on(model: nn.Module) -> Masks:
    """The prunus mask buffers attached to ``model`` (not copied)."""
    found: Masks = {}
    for name, module in model.named_modules():
        for pname in masking.masked_names(module):
            found.setdefault(name, {})[pname] = module._buffers[f'{pname}_mask']
    return found


def bake_masks(work: nn.Module, model: nn.Module, masks: Masks) -> None:
    """Give ``work`` (a :func:`~prunus.speedup.copying.shared_copy` of ``model``) new,
    masked parameters: those masked on ``model`` times those in ``masks``.

    The shared originals are only read, so ``model`` is unchanged (its masked weights
    are normally zero already; baking keeps the result exact even when they are not).
    """
    modules = dict(work.named_modules())
    on_model = _masks_on(model)
    for name in {**on_model, **masks}:
        first, extra = on_model.get(name, {}), masks.get(name, {})
        module = modules[name]
        for pname in {**first, **extra}:
            table = module._parameters if pname in module._parameters else module._buffers
            if table.get(pname) is None:
                raise ValueError(f"masks['{name}']['{pname}']: '{pname}' of module '{name}' "
                                 'is not a parameter or buffer, so it cannot be masked.')
            param = table[pname]
            baked = param.detach().clone() if pname not in first else \
                param.detach() * first[pname].to(param.device, param.dtype)
            mask = extra.get(pname)
            if mask is not None and not (pname in first and torch.equal(mask, first[pname])):
                baked.mul_(mask.to(param.device, param.dtype))
            table[pname] = (nn.Parameter(baked, param.requires_grad)
                            if isinstance(param, nn.Parameter) else baked)
