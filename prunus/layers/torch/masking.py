"""Masks as buffers beside the parameters they mask, with no renaming.

A masked module keeps its ``weight`` parameter under the same name; its mask lives next
to it as a non-persistent buffer ``weight_mask`` (``bias_mask`` for the bias), so the
user's ``state_dict`` keys and checkpoint code are unchanged::

    conv = nn.Conv2d(3, 8, 3)
    attach_masks(conv, {'weight': mask})
    conv.weight          # the same nn.Parameter, masked entries set to zero
    conv.weight_mask     # the mask buffer

Three mechanisms keep masked entries at zero:

* a forward pre-hook shadows ``weight`` with ``weight * weight_mask`` for the duration of
  the forward call (instance ``__dict__`` wins over ``Module.__getattr__``), so the forward
  sees masked weights and gradients of masked entries are exactly zero;
* a process-wide optimizer step post-hook multiplies masked parameters by their masks
  after every ``optimizer.step()``, so momentum, weight decay and Adam state cannot move
  them (this also covers optimizers created after pruning);
* a load-state-dict post-hook re-applies masks after a checkpoint is loaded.

:func:`strip` bakes masks into the weights and removes every trace.
"""
from __future__ import annotations

import weakref
from typing import Mapping

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from prunus.compression import mask_rules as rules
from prunus.compression.mask_rules import MaskFacts

Masks = dict[str, dict[str, torch.Tensor]]

# Not numbers a mask could be made of (quantized and unsigned-bit types).
_NOT_MASKS = {getattr(torch, n) for n in ('quint8', 'qint8', 'qint32', 'quint4x2') if hasattr(torch, n)}
_CHUNK = 1 << 16  # elements per step of the mask value test
_MASKED_ATTR = '_prunus_masked'  # tuple of parameter names masked on a module
# Parameter -> (weakref to its module, parameter name); read by the optimizer hook.
_OWNERS: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _shadow_masked(module: nn.Module, args):
    for pname in getattr(module, _MASKED_ATTR, ()):
        param = module._parameters[pname]
        _OWNERS[param] = (weakref.ref(module), pname)  # a deepcopy registers on first use
        module.__dict__[pname] = param * module._buffers[f'{pname}_mask']


def _unshadow_masked(module: nn.Module, args, output):
    for pname in getattr(module, _MASKED_ATTR, ()):
        module.__dict__.pop(pname, None)


def _remask_after_load(module: nn.Module, incompatible_keys) -> None:
    reapply_masks(module)


@torch.no_grad()
def _remask_after_step(optimizer, args, kwargs) -> None:
    if not _OWNERS:
        return
    for group in optimizer.param_groups:
        for param in group['params']:
            owner = _OWNERS.get(param)
            if owner is None:
                continue
            module = owner[0]()
            mask = None if module is None else module._buffers.get(f'{owner[1]}_mask')
            if mask is not None and mask.shape == param.shape:
                param.mul_(mask)


register_optimizer_step_post_hook(_remask_after_step)


def is_masked(module: nn.Module) -> bool:
    """Whether prunus masks are attached to ``module``."""
    return bool(getattr(module, _MASKED_ATTR, ()))


def masked_names(module: nn.Module) -> tuple[str, ...]:
    """Names of the parameters masked on ``module`` (empty when none)."""
    return getattr(module, _MASKED_ATTR, ())


def forget_masks(module: nn.Module) -> None:
    """Drops ``module``'s mask buffers and marker, leaving its parameters as they are
    (a shared copy's parameters are the original's: baking would change those)."""
    for pname in masked_names(module):
        module._buffers.pop(f'{pname}_mask', None)
    module.__dict__.pop(_MASKED_ATTR, None)


def mask_facts(where: str, mask: object) -> MaskFacts:
    """What the shared mask rules need to know about one torch mask."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f'{where} must be a torch.Tensor; got {type(mask).__name__}.')
    dtype = mask.dtype
    if dtype == torch.bool:
        return MaskFacts(tuple(mask.shape), 'bool', dtype=str(dtype))
    if dtype.is_complex or dtype in _NOT_MASKS:
        return MaskFacts(tuple(mask.shape), 'other', dtype=str(dtype))
    kind = 'float' if dtype.is_floating_point else 'int'
    values = mask.detach()
    if _surely_binary(values, kind):
        return MaskFacts(tuple(mask.shape), kind, True, True, str(dtype))
    # only a failing mask pays for the element-wise tests that name the problem
    finite = kind == 'int' or bool(torch.isfinite(values).all())
    binary = finite and bool(((values == 0) | (values == 1)).all())
    return MaskFacts(tuple(mask.shape), kind, finite, binary, str(dtype))


def _surely_binary(values: torch.Tensor, kind: str) -> bool:
    """Whether every value is 0 or 1, cheaply (False: look closer). Weight-shaped masks
    are as large as the weights: ``isfinite`` and ``(v == 0) | (v == 1)`` took 0.15 s on
    a ResNet-50's, this 0.03 s. All values lie in [0, 1] (min and max; NaN fails them),
    which settles integers; a float in (0, 1) has ``x * (1 - x) > 0`` (one factor is at
    least 1/2, so nothing underflows), so ``max x * (1 - x) == 0`` leaves only 0 and 1.
    On the CPU in chunks small enough for the temporaries to stay in cache."""
    if not values.numel():
        return True
    lo, hi = values.aminmax()
    if not (bool(lo >= 0) and bool(hi <= 1)):
        return False
    if kind == 'int':
        return True
    step = _CHUNK if values.device.type == 'cpu' else values.numel()  # one launch elsewhere
    return all(float((1 - c).mul_(c).amax()) == 0 for c in values.reshape(-1).split(step))


def _check_mask(module_name: str, pname: str, module: nn.Module, mask: object,
                buffers: bool = False) -> None:
    tables = [module._parameters] + ([module._buffers] if buffers else [])
    known = [k for table in tables for k, v in table.items() if v is not None]
    rules.check_parameter(module_name, pname, known)
    param = next(table[pname] for table in tables if table.get(pname) is not None)
    where = rules.mask_where(module_name, pname)
    rules.check_facts(where, mask_facts(where, mask), tuple(param.shape))


def check_masks(model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]],
                source: str = 'masks', buffers: bool = False) -> None:
    """Raises a clear error if ``masks`` does not fit ``model``; changes nothing.

    The rules are those of :mod:`prunus.compression.mask_rules` (structure, module and
    parameter exist, shape, dtype, finite, only 0 and 1). ``source`` names a mask file;
    ``buffers`` also allows masking buffers (the speedup accepts those)."""
    rules.check_structure(masks, source)
    modules = dict(model.named_modules())
    with rules.naming_source(source):
        for name, per_param in masks.items():
            rules.check_module(name, modules)
            for pname, mask in per_param.items():
                _check_mask(name, pname, modules[name], mask, buffers)


def attach_masks(module: nn.Module, masks: Mapping[str, torch.Tensor], module_name: str = '',
                 owned: bool = False) -> None:
    """Attaches (or replaces) masks on one module and zeroes the masked entries.

    The module keeps copies of the masks, unless ``owned`` says they are fresh tensors
    nobody else holds (a pruner's own masks), which it then keeps as they are."""
    for pname, mask in masks.items():
        _check_mask(module_name or type(module).__name__, pname, module, mask)
    _attach_checked(module, masks, owned)


@torch.no_grad()
def _attach_checked(module: nn.Module, masks: Mapping[str, torch.Tensor], owned: bool) -> None:
    """:func:`attach_masks` after its check (which reads every mask value, as costly as
    the attaching itself: :func:`apply_masks` checks once, up front)."""
    names = list(getattr(module, _MASKED_ATTR, ()))
    for pname, mask in masks.items():
        param = module._parameters[pname]
        mask = mask.detach()
        moved = mask.to(device=param.device, dtype=param.dtype)
        if not owned and moved.data_ptr() == mask.data_ptr():
            moved = moved.clone()  # still the caller's storage: keep a copy of our own
        mask = moved.contiguous()
        buffer = f'{pname}_mask'
        if buffer in module._buffers:
            module._buffers[buffer] = mask
        else:
            module.register_buffer(buffer, mask, persistent=False)
        param.mul_(mask)
        _OWNERS[param] = (weakref.ref(module), pname)
        if pname not in names:
            names.append(pname)
    if not is_masked(module):
        module.register_forward_pre_hook(_shadow_masked)
        module.register_forward_hook(_unshadow_masked, always_call=True)
        module.register_load_state_dict_post_hook(_remask_after_load)
    setattr(module, _MASKED_ATTR, tuple(names))


def apply_masks(model: nn.Module, masks: Mapping[str, Mapping[str, torch.Tensor]],
                owned: bool = False) -> nn.Module:
    """Attaches every module's masks; validates all of them first so a bad mask changes nothing.
    ``owned``: the masks are fresh tensors the model may keep (see :func:`attach_masks`).

    Args:
        model: the model.
        masks: ``{module_name: {'weight': mask, 'bias': mask}}``.
        owned: the masks may be kept as they are (no copies).

    Returns:
        ``model``.

    Example::

        apply_masks(model, torch.load('mask.pth'))
    """
    check_masks(model, masks)
    modules = dict(model.named_modules())
    for name, per_param in masks.items():
        _attach_checked(modules[name], per_param, owned)
    return model


@torch.no_grad()
def reapply_masks(module: nn.Module) -> None:
    """Multiplies a masked module's parameters by their masks again."""
    for pname in getattr(module, _MASKED_ATTR, ()):
        module._parameters[pname].mul_(module._buffers[f'{pname}_mask'])


def get_masks(model: nn.Module) -> Masks:
    """The masks attached to ``model``: ``{module_name: {'weight': mask, 'bias': mask}}``.

    Args:
        model: the model.

    Returns:
        The mask buffers (not copies).

    Example::

        masks = get_masks(model)
    """
    masks: Masks = {}
    for name, module in model.named_modules():
        for pname in getattr(module, _MASKED_ATTR, ()):
            masks.setdefault(name, {})[pname] = module._buffers[f'{pname}_mask'].detach().clone()
    return masks


def _remove_hooks(module: nn.Module) -> None:
    for hooks, fn in ((module._forward_pre_hooks, _shadow_masked),
                      (module._forward_hooks, _unshadow_masked),
                      (module._load_state_dict_post_hooks, _remask_after_load)):
        for key in [k for k, hook in hooks.items() if getattr(hook, '__wrapped__', hook) is fn]:
            del hooks[key]
            getattr(module, '_forward_hooks_always_called', {}).pop(key, None)


@torch.no_grad()
def detach_masks(module: nn.Module) -> None:
    """Bakes one module's masks into its parameters and removes buffers and hooks."""
    reapply_masks(module)
    for pname in getattr(module, _MASKED_ATTR, ()):
        module.__dict__.pop(pname, None)
        del module._buffers[f'{pname}_mask']
        _OWNERS.pop(module._parameters[pname], None)
    _remove_hooks(module)
    if _MASKED_ATTR in module.__dict__:
        delattr(module, _MASKED_ATTR)


def strip(model: nn.Module) -> nn.Module:
    """Bakes all masks into the weights and leaves a plain model with no extra buffers.

    Args:
        model: the masked model.

    Returns:
        ``model``, now plain.

    Example::

        plain = strip(model)
    """
    for module in model.modules():
        if is_masked(module):
            detach_masks(module)
    return model
