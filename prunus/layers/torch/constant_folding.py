"""Building a layer's constant paths from the removed inputs' constants (see
:mod:`prunus.layers.torch.constants` for what the paths are and how they train)."""
from __future__ import annotations

import math

import torch
from torch import nn

from prunus.layers.torch.constants import (OFFSET, PATH, SCALE, SQUARES, attach, bias_like,
                                           has_paths, is_transpose)
from prunus.layers.torch.learned_constants import (SHIFTS, SOURCE_BASE, SOURCE_INDEX,
                                                   SOURCE_SLOPES, SOURCE_WEIGHTS,
                                                   can_learn_sources, drop_sources,
                                                   source_constants, source_kernel)


def _per_input(module: nn.Module, removed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    w = module.weight
    count = w.shape[1] if isinstance(module, nn.Linear) else module.in_channels
    dense = torch.zeros(count, dtype=torch.float64, device=w.device)
    dense[removed.to(w.device)] = values.to(w.device, torch.float64)
    return dense


def _kernel(module: nn.Module, dense: torch.Tensor) -> torch.Tensor:
    """``sum_j dense_j W_j`` over the inputs, per group, in the path's layout: (out,) for
    a Linear or a bias-like conv, (out, 1, *k) for a conv, (groups, out/groups, *k) for a
    transposed conv."""
    w, g = module.weight.data.double(), getattr(module, 'groups', 1)
    if isinstance(module, nn.Linear):
        return (w @ dense).to(module.weight.dtype)
    dense = dense.view(g, -1)
    if is_transpose(module):  # (in, out/g, *k)
        grouped = w.reshape(g, w.shape[0] // g, -1)
        kernel = torch.einsum('gik,gi->gk', grouped, dense).reshape(g, *w.shape[1:])
    else:
        grouped = w.reshape(g, w.shape[0] // g, w.shape[1], -1)
        kernel = torch.einsum('goik,gi->gok', grouped, dense).reshape(w.shape[0], 1, *w.shape[2:])
        if bias_like(module):
            kernel = kernel.flatten(1).sum(1)
    return kernel.to(module.weight.dtype)


def _scale(module: nn.Module, dense: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``sum_j |c_j|`` of ``dense`` over each output's group (times the taps for a
    bias-like conv), in ``like``'s layout with singleton kernel dims."""
    g = getattr(module, 'groups', 1)
    per_group = dense.abs().view(g, -1).sum(1)
    if isinstance(module, nn.Linear):
        return per_group.expand(like.shape[0]).to(like.dtype).clone()
    if is_transpose(module):
        rows = per_group.view(g, 1).expand(g, like.shape[1])
        return rows.reshape(g, like.shape[1], *([1] * (like.dim() - 2))).to(like.dtype)
    rows = per_group.repeat_interleave(module.out_channels // g)
    if like.dim() == 1:
        return (rows * math.prod(module.kernel_size)).to(like.dtype)
    return rows.view(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def add_constants(module: nn.Module, removed: torch.Tensor, values: torch.Tensor,
                  name: str = PATH) -> None:
    """Make ``module`` add what constant inputs ``removed`` (``values``) contributed,
    before those input channels are pruned: train-mode constants through the learnable
    path (``name=PATH``), the eval-mode difference through the frozen ``OFFSET``."""
    if not bool(values.any()):
        return
    dense = _per_input(module, removed, values)
    kernel = _kernel(module, dense)
    if not has_paths(module):
        attach(module)
    if name == OFFSET:
        old = module._buffers.get(OFFSET)
        if old is None:
            module.register_buffer(OFFSET, kernel)
        else:
            setattr(module, OFFSET, old + kernel)
        return
    # s = sum |c_j| sets Adam's step on K; q = sum c_j^2 (SGD's) sets the gradient's scale
    _merge_path(module, kernel, _scale(module, dense, kernel),
                _scale(module, dense.square(), kernel))


def _merge_path(module: nn.Module, kernel: torch.Tensor, scale: torch.Tensor,
                squares: torch.Tensor) -> None:
    """Add ``K`` with its ``s`` and ``q`` to the layer's learnable path."""
    old = module._parameters.get(PATH)
    if old is not None:
        kernel = old.data * module._buffers[SCALE] + kernel
        scale = module._buffers[SCALE] + scale
        squares = module._buffers[SQUARES] + squares
    scale = scale.to(kernel.device)
    path = kernel / torch.where(scale > 0, scale, torch.ones_like(scale))
    module.register_parameter(PATH, nn.Parameter(path, module.weight.requires_grad))
    module.register_buffer(SCALE, scale)
    module.register_buffer(SQUARES, squares.to(kernel.device))


def add_sources(module: nn.Module, removed: torch.Tensor, values: torch.Tensor,
                shifts: nn.Parameter, index: torch.Tensor, slopes: torch.Tensor) -> None:
    """Make ``module`` add what constant inputs ``removed`` contribute, with constants that
    learn: ``values + slopes . (shifts[index] - shifts now)`` (one row per removed input),
    times the layer's own weights on those inputs, which stay trainable. Call before
    the inputs are pruned. A layer that already has such a path (an earlier speedup)
    first turns it into its fixed-constant path."""
    if not can_learn_sources(module):
        raise TypeError(f'{type(module).__name__} cannot take learnable constants')
    if SOURCE_WEIGHTS in module._parameters:
        settle_sources(module)
    if not has_paths(module):
        attach(module)
    w = module.weight
    idx = removed.to(w.device)
    weights = w.data.index_select(1, idx).clone()
    slopes = slopes.to(w.device, w.dtype)
    index = index.to(w.device)
    base = values.to(w.device, w.dtype) - (slopes * shifts.data[index].to(w.dtype)).sum(1)
    module.register_parameter(SOURCE_WEIGHTS, nn.Parameter(weights, w.requires_grad))
    module.register_parameter(SHIFTS, shifts)
    module.register_buffer(SOURCE_INDEX, index)
    module.register_buffer(SOURCE_SLOPES, slopes)
    module.register_buffer(SOURCE_BASE, base)


def settle_sources(module: nn.Module) -> None:
    """Turn the learnable-constants path into the fixed-constants one at today's values
    (it keeps learning as the masked model's weights would, the constants stay)."""
    with torch.no_grad():
        kernel = source_kernel(module, bias_like(module))
        c = source_constants(module).to(kernel.dtype)
    drop_sources(module)
    # every output of an ungrouped layer sees every input: s and q as for folded inputs
    _merge_path(module, kernel, _scale(module, c, kernel), _scale(module, c.square(), kernel))
