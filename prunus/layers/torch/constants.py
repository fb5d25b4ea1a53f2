"""What removed constant channels leave behind, as frozen, non-trainable paths.

A removed channel that reaches a layer as a constant ``c_j`` (a BatchNorm shift after a
pruned filter) adds ``W_j c_j`` to the layer's output. A Linear or an unpadded conv folds
that into its bias; with zero padding the constant meets the padding at the borders, so
the conv gets a buffer ``K = sum_j c_j W_j`` (per group) instead, applied by a forward
call to a tensor of ones of the input's spatial size (``carried_constants``; the layer
becomes e.g. :class:`Conv2dWithConstants`, a subclass with the same weights). Exact for
any stride, dilation, padding or input size; no channel is kept for it, no weight grows,
and a buffer gets no gradient, weight decay or optimizer state.

Which constant? A pruned filter's BatchNorm gives ``beta`` in train mode (the batch of
zeros has mean 0), but in eval mode ``beta - gamma * mean / std`` with the *stale*
statistics of the channel before it was pruned. The masked model forgets those as its
running statistics decay during fine-tuning. So the trainable bias (and ``K``) take the
train-mode constants, and the difference to the eval-mode ones is a second buffer
(``eval_offset``), added in eval mode only and shrunk by the BatchNorm momentum at every
train-mode call: right after the speedup the model equals the masked one in eval mode,
and under training it computes what the masked model computes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


BUFFER = 'carried_constants'
OFFSET = 'eval_offset'
DECAY = 0.1  # BatchNorm's default momentum: the masked model forgets stale stats as fast
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _ones(module: nn.Module, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    spatial = tuple(x.shape[-(kernel.dim() - 2):])
    return torch.ones((1, module.groups) + spatial, device=x.device, dtype=kernel.dtype)


def _batched(extra: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return extra if output.dim() == extra.dim() else extra[0]  # unbatched input


def _map(module: nn.Module, kernel: torch.Tensor, x: torch.Tensor,
         output: torch.Tensor) -> torch.Tensor:
    """What ``kernel`` adds to ``output`` (a vector for a Linear)."""
    if isinstance(module, nn.Linear):
        return kernel
    d = kernel.dim() - 2
    ones = _ones(module, x, kernel)
    if not isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _CONV[d](ones, kernel, None, module.stride, module.padding, module.dilation,
                        module.groups)
    # the output size fixes the output padding (forward may have been given output_size)
    base = [(i - 1) * s - 2 * p + dl * (k - 1) + 1 for i, s, p, dl, k in zip(
        x.shape[-d:], module.stride, module.padding, module.dilation, kernel.shape[2:])]
    pad = tuple(o - b for o, b in zip(output.shape[-d:], base))
    return _TRANSPOSE[d](ones, kernel, None, module.stride, module.padding, pad,
                         module.groups, module.dilation)


def _frozen(module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
    """What the frozen paths add in the current mode (the constants, plus the offset in
    eval mode), as one map: computed once per mode and input size, again when a buffer is
    replaced (``.to()``) or changed in place, so a call costs a few checks and one add."""
    training = module.training
    const = module._buffers.get(BUFFER)
    offset = None if training else module._buffers.get(OFFSET)
    if const is None and offset is None:
        return None
    stamp = (x.shape[1:], output.dtype, None if const is None else const._version,
             None if offset is None else offset._version)
    caches = module.__dict__.get('_constants_cache')
    if caches is None:
        caches = module.__dict__['_constants_cache'] = {}
    entry = caches.get(training)  # holds the buffers themselves: identity, not a reused id
    if entry is None or entry[0] is not const or entry[1] is not offset or entry[2] != stamp:
        with torch.no_grad():  # the map is linear in the kernel: one call for the sum
            kernel = const if offset is None else offset if const is None else const + offset
            extra = _map(module, kernel.to(output.dtype), x, output)
        entry = caches[training] = (const, offset, stamp,
                                    extra if extra.dim() == 1 else _batched(extra, output))
    return entry[3]


def add_frozen(module: nn.Module, x: torch.Tensor, output: torch.Tensor,
               inplace: bool = False) -> torch.Tensor:
    """``output`` plus the frozen paths of ``module`` (``x``: its input); ``inplace`` only
    for an output that the layer itself just made."""
    offset = module._buffers.get(OFFSET)
    if offset is not None and module.training:
        with torch.no_grad():
            offset.mul_(1.0 - DECAY)  # in place: a new version invalidates the eval map
    extra = _frozen(module, x, output)
    if extra is None:
        return output
    # in place is safe for the built-in layers: their backward needs input and weight only
    return output.add_(extra) if inplace else output + extra


def _hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return add_frozen(module, args[0], output)


class _WithConstants:
    """The layer plus its frozen paths; a subclass, not a hook, because a module with
    hooks takes PyTorch's slow call path, which costs more than the layer at small sizes."""

    def forward(self, input, *args, **kwargs):  # noqa: A002 - the layers' own name
        return add_frozen(self, input, super().forward(input, *args, **kwargs), inplace=True)


class Conv1dWithConstants(_WithConstants, nn.Conv1d):
    """nn.Conv1d with frozen constant paths (see the module docstring)."""


class Conv2dWithConstants(_WithConstants, nn.Conv2d):
    """nn.Conv2d with frozen constant paths (see the module docstring)."""


class Conv3dWithConstants(_WithConstants, nn.Conv3d):
    """nn.Conv3d with frozen constant paths (see the module docstring)."""


class ConvTranspose1dWithConstants(_WithConstants, nn.ConvTranspose1d):
    """nn.ConvTranspose1d with frozen constant paths (see the module docstring)."""


class ConvTranspose2dWithConstants(_WithConstants, nn.ConvTranspose2d):
    """nn.ConvTranspose2d with frozen constant paths (see the module docstring)."""


class ConvTranspose3dWithConstants(_WithConstants, nn.ConvTranspose3d):
    """nn.ConvTranspose3d with frozen constant paths (see the module docstring)."""


class LinearWithConstants(_WithConstants, nn.Linear):
    """nn.Linear with a frozen eval-mode offset (see the module docstring)."""


WITH_CONSTANTS = {nn.Conv1d: Conv1dWithConstants, nn.Conv2d: Conv2dWithConstants,
                  nn.Conv3d: Conv3dWithConstants, nn.ConvTranspose1d: ConvTranspose1dWithConstants,
                  nn.ConvTranspose2d: ConvTranspose2dWithConstants,
                  nn.ConvTranspose3d: ConvTranspose3dWithConstants,
                  nn.Linear: LinearWithConstants}


def _attach(module: nn.Module) -> None:
    """Give ``module`` its frozen paths: the subclass for the built-in layers (same
    weights, same state_dict keys), a forward hook for a user's subclass of them."""
    if isinstance(module, _WithConstants):
        return
    swapped = WITH_CONSTANTS.get(type(module))
    if swapped is not None:
        module.__class__ = swapped
    else:
        module.register_forward_hook(_hook)


def _kernel(module: nn.Module, removed: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``sum_j values_j W_j`` over the removed inputs, per group, in the buffer's layout."""
    w, g = module.weight.data, getattr(module, 'groups', 1)
    dense = torch.zeros(w.shape[1] if isinstance(module, nn.Linear) else module.in_channels,
                        dtype=torch.float64, device=w.device)
    dense[removed.to(w.device)] = values.to(w.device, torch.float64)
    if isinstance(module, nn.Linear):
        return (w.double() @ dense).to(w.dtype)
    dense = dense.view(g, -1)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):  # (in, out/g, *k)
        grouped = w.double().reshape(g, w.shape[0] // g, -1)
        return torch.einsum('gik,gi->gk', grouped, dense).reshape(g, *w.shape[1:]).to(w.dtype)
    grouped = w.double().reshape(g, w.shape[0] // g, w.shape[1], -1)
    kernel = torch.einsum('goik,gi->gok', grouped, dense)
    return kernel.reshape(w.shape[0], 1, *w.shape[2:]).to(w.dtype)


def add_constants(module: nn.Module, removed: torch.Tensor, values: torch.Tensor,
                  name: str = BUFFER) -> None:
    """Make ``module`` add what constant inputs ``removed`` (``values``) contributed,
    through buffer ``name``, before those input channels are pruned."""
    if not bool(values.any()):
        return
    kernel = _kernel(module, removed, values)
    if not any(b in module._buffers for b in (BUFFER, OFFSET)):
        _attach(module)
    old = module._buffers.get(name)
    if old is None:
        module.register_buffer(name, kernel)
    else:
        setattr(module, name, old + kernel)


def live_rows(module: nn.Module, out_channels: int) -> torch.Tensor:
    """Bool per output channel: a frozen path adds something there (so it is not dead)."""
    live = torch.zeros(out_channels, dtype=torch.bool)
    for name in (BUFFER, OFFSET):
        kernel = module._buffers.get(name)
        if kernel is not None:  # every layout lists the outputs in order
            live |= (kernel.reshape(out_channels, -1) != 0).any(1).cpu()
    return live


def prune_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` of the buffers (conv (out, 1, *k), Linear (out,))."""
    for name in (BUFFER, OFFSET):
        kernel = module._buffers.get(name)
        if kernel is not None:
            setattr(module, name, kernel.index_select(0, keep.to(kernel.device)))


def prune_transpose_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """``keep``: global output channels; the buffers are (groups, out/groups, *k)."""
    for name in (BUFFER, OFFSET):
        kernel = module._buffers.get(name)
        if kernel is not None:
            flat = kernel.reshape(-1, *kernel.shape[2:]).index_select(0, keep.to(kernel.device))
            setattr(module, name, flat.reshape(kernel.shape[0], -1, *kernel.shape[2:]))
