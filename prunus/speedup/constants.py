"""Removed constant input channels of a zero-padded convolution, as a frozen path.

A removed channel that reaches a layer as a non-zero constant ``c_j`` (a BatchNorm shift
after a pruned filter) adds ``conv(pad(c_j), W_j)`` to its output. Inside the image that
is a per-output constant a bias could hold, but zero padding makes it smaller at the
borders, so a bias cannot. Keeping one input channel to carry the sum instead works in
eval mode, but it is a trainable channel: its filter and BatchNorm turn it into a real
channel at the first training step, multiplied by summed, inflated weights.

Here the constants become a buffer instead: ``K = sum_j c_j W_j`` per group, applied to a
tensor of ones of the input's spatial size by a forward hook. It is exact for any stride,
dilation, padding or input size, and inert under training: a buffer gets no gradient, no
weight decay and no optimizer state, and no layer's weights grow.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['BUFFER', 'add_conv_constants', 'add_transpose_constants', 'live_rows',
           'prune_conv_rows', 'prune_transpose_rows']

BUFFER = 'carried_constants'
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _ones(module: nn.Module, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    spatial = tuple(x.shape[-(kernel.dim() - 2):])
    return torch.ones((1, module.groups) + spatial, device=x.device, dtype=kernel.dtype)


def _batched(extra: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return extra if output.dim() == extra.dim() else extra[0]  # unbatched input


def _cached(module: nn.Module, x: torch.Tensor, output: torch.Tensor, compute) -> torch.Tensor:
    """The frozen map for this input size: it depends on nothing else, so it is computed
    once per size (and again if the buffer is replaced or moved), costing one add a call."""
    kernel = getattr(module, BUFFER)
    key = (id(kernel), kernel._version, kernel.device, output.dtype, tuple(x.shape[1:]),
           tuple(output.shape[1:]))
    cache = module.__dict__.get('_carried_cache')
    if cache is None or cache[0] != key:
        with torch.no_grad():
            extra = compute(kernel.to(output.dtype), x)
        cache = module.__dict__['_carried_cache'] = (key, _batched(extra, output))
    return output + cache[1]


def _conv_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    def compute(kernel, x):
        ones = _ones(module, x, kernel)
        return _CONV[kernel.dim() - 2](ones, kernel, None, module.stride, module.padding,
                                       module.dilation, module.groups)
    return _cached(module, args[0], output, compute)


def _transpose_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    def compute(kernel, x):
        return _transpose_map(module, kernel, x, output)
    return _cached(module, args[0], output, compute)


def _transpose_map(module: nn.Module, kernel: torch.Tensor, x: torch.Tensor,
                   output: torch.Tensor) -> torch.Tensor:
    d = kernel.dim() - 2
    ones = _ones(module, x, kernel)
    # the output size fixes the output padding (forward may have been given output_size)
    base = [(i - 1) * s - 2 * p + dl * (k - 1) + 1 for i, s, p, dl, k in zip(
        x.shape[-d:], module.stride, module.padding, module.dilation, kernel.shape[2:])]
    pad = tuple(o - b for o, b in zip(output.shape[-d:], base))
    return _TRANSPOSE[d](ones, kernel, None, module.stride, module.padding, pad,
                         module.groups, module.dilation)


def _dense(module: nn.Module, removed: torch.Tensor, values: torch.Tensor,
           like: torch.Tensor) -> torch.Tensor:
    """The constants as one value per input channel (zero for kept ones), (groups, in/g)."""
    dense = torch.zeros(module.in_channels, dtype=torch.float64, device=like.device)
    dense[removed.to(like.device)] = values.to(like.device, torch.float64)
    return dense.view(module.groups, -1)


def _accumulate(module: nn.Module, kernel: torch.Tensor, hook) -> None:
    old = getattr(module, BUFFER, None)
    weight = module.weight
    kernel = kernel.to(weight.dtype)
    if old is None:
        module.register_buffer(BUFFER, kernel)
        module.register_forward_hook(hook)
    else:
        setattr(module, BUFFER, old + kernel)


def add_conv_constants(module: nn.Module, removed: torch.Tensor,
                       values: torch.Tensor) -> None:
    """Make conv ``module`` add what constant inputs ``removed`` (``values``) contributed,
    before those input channels are pruned."""
    w, g = module.weight.data, module.groups
    dense = _dense(module, removed, values, w)
    out_per, in_per = w.shape[0] // g, w.shape[1]
    grouped = w.double().reshape(g, out_per, in_per, -1)
    kernel = torch.einsum('goik,gi->gok', grouped, dense)
    _accumulate(module, kernel.reshape(w.shape[0], 1, *w.shape[2:]), _conv_hook)


def add_transpose_constants(module: nn.Module, removed: torch.Tensor,
                            values: torch.Tensor) -> None:
    """As :func:`add_conv_constants`, for a transposed convolution (weight (in, out/g, k))."""
    w, g = module.weight.data, module.groups
    dense = _dense(module, removed, values, w)
    grouped = w.double().reshape(g, w.shape[0] // g, -1)
    kernel = torch.einsum('gik,gi->gk', grouped, dense)
    _accumulate(module, kernel.reshape(g, *w.shape[1:]), _transpose_hook)


def live_rows(module: nn.Module, out_channels: int) -> torch.Tensor:
    """Bool per output channel: the frozen path adds something there (so it is not dead)."""
    kernel = getattr(module, BUFFER, None)
    if kernel is None:
        return torch.zeros(out_channels, dtype=torch.bool)
    # conv (out, 1, *k) and transposed (groups, out/groups, *k) both list outputs in order
    return (kernel.reshape(out_channels, -1) != 0).any(1).cpu()


def prune_conv_rows(module: nn.Module, keep: torch.Tensor) -> None:
    kernel = getattr(module, BUFFER, None)
    if kernel is not None:
        setattr(module, BUFFER, kernel.index_select(0, keep.to(kernel.device)))


def prune_transpose_rows(module: nn.Module, keep: torch.Tensor, per: int) -> None:
    """``keep``: global output channels; the kernel is (groups, out/groups, *k)."""
    kernel = getattr(module, BUFFER, None)
    if kernel is not None:
        flat = kernel.reshape(-1, *kernel.shape[2:]).index_select(0, keep.to(kernel.device))
        setattr(module, BUFFER, flat.reshape(kernel.shape[0], -1, *kernel.shape[2:]))
