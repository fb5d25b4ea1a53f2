"""What removed constant channels leave behind: small constant paths, never a channel.

A removed channel that reaches a layer as a constant ``c_j`` (a BatchNorm shift after a
pruned filter) adds ``W_j c_j`` to the layer's output. With zero padding the constant
meets the padding at the borders, so a padded conv gets a kernel ``K = sum_j c_j W_j``
(per group), applied by a forward call to a tensor of ones of the input's spatial size:
exact for any stride, dilation, padding or input size. A Linear, an unpadded conv, or one
whose padding repeats the input (reflect, replicate, circular) sees the constant
everywhere, so ``K`` is one value per output (``sum`` over the kernel), added like a bias.
The layer becomes e.g. :class:`Conv2dWithConstants`, a subclass with the same weights.
No channel is kept for it and no weight grows. Its input is a tensor of ones, so a path
can only learn a (border-dependent) bias, never become a data channel.

How it trains. In the masked model both factors of ``c_j W_j`` keep learning: the
consumer's weights on removed inputs (gradient ``c_j dL/dK``) and the removed filters'
BatchNorm shifts behind ``c_j`` (measured on a residual CNN at 75%: freezing either in
the masked model costs it 1-4 points after a 3-epoch Adam fine-tune). Two paths:

* Where ``c_j`` comes from removed shifts (found by :mod:`prunus.speedup.sources`), the
  layer keeps ``W_j`` (``source_weights``) and computes ``c_j`` from the model's shared
  vector of removed shifts (:mod:`prunus.layers.torch.learned_constants`): the masked
  model's parameters, so every optimizer steps them as it would there (tested).
* Other constants (a grouped or transposed consumer, a constant not from a shift) are
  fixed; the path is a parameter ``K / s`` (``carried_constants``) times a fixed buffer
  ``s = sum_j |c_j|`` (``carried_scale``), its gradient scaled to ``q / s`` times
  ``dL/dK`` with ``q = sum_j c_j^2`` (``carried_squares``; both times the taps for the
  bias-like form). Adam-like optimizers then move ``K`` by ``s`` normalized steps and
  SGD by ``q`` times the gradient, as the masked model's ``W_j`` move (with ``s`` as
  the gradient's scale too, SGD collapsed: 15 points below the masked model at 75%).

Which constant? A pruned filter's BatchNorm gives ``beta`` in train mode (the batch of
zeros has mean 0), but in eval mode ``beta - gamma * mean / std`` with the *stale*
statistics of the channel before it was pruned. The masked model forgets those as its
running statistics decay during fine-tuning. So ``K`` takes the train-mode constants,
and the difference to the eval-mode ones is a frozen buffer (``eval_offset``), added in
eval mode only and shrunk by the BatchNorm momentum at every train-mode call: right
after the speedup the model equals the masked one in eval mode, and under training it
computes what the masked model computes (the masked model's offset fades a little more
slowly, as ``mean / std`` of decaying statistics; gone either way within an epoch).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunus.layers.torch.learned_constants import (SHIFTS, SOURCE_BUFFERS, SOURCE_WEIGHTS,
                                                   drop_sources, source_kernel)

PATH = 'carried_constants'
SCALE = 'carried_scale'
SQUARES = 'carried_squares'
OFFSET = 'eval_offset'
FIXED = 'fixed_constants'  # a path fixed for inference (:func:`fix_paths`)
DECAY = 0.1  # BatchNorm's default momentum: the masked model forgets stale stats as fast
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _ones(module: nn.Module, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    spatial = tuple(x.shape[-(kernel.dim() - 2):])
    return torch.ones((1, module.groups) + spatial, device=x.device, dtype=kernel.dtype)


def _batched(extra: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return extra if output.dim() == extra.dim() else extra[0]  # unbatched input


def is_transpose(module: nn.Module) -> bool:
    """Whether ``module`` is a transposed conv."""
    return isinstance(module, nn.modules.conv._ConvTransposeNd)


def bias_like(module: nn.Module) -> bool:
    """Whether a constant input reaches every output position of ``module`` alike."""
    if isinstance(module, nn.Linear):
        return True
    if is_transpose(module):  # overlapping, strided windows make the effect vary
        return False
    padding = module.padding
    unpadded = padding == 'valid' or (not isinstance(padding, str) and not any(padding))
    return unpadded or module.padding_mode != 'zeros'


def _map(module: nn.Module, kernel: torch.Tensor, x: torch.Tensor,
         output: torch.Tensor) -> torch.Tensor:
    """What ``kernel`` adds to ``output``."""
    if kernel.dim() == 1:  # one value per output channel
        if isinstance(module, nn.Linear):
            return kernel
        return kernel.view(-1, *([1] * (module.weight.dim() - 2)))
    d = kernel.dim() - 2
    ones = _ones(module, x, kernel)
    if not is_transpose(module):
        return _batched(_CONV[d](ones, kernel, None, module.stride, module.padding,
                                 module.dilation, module.groups), output)
    # the output size fixes the output padding (forward may have been given output_size)
    base = [(i - 1) * s - 2 * p + dl * (k - 1) + 1 for i, s, p, dl, k in zip(
        x.shape[-d:], module.stride, module.padding, module.dilation, kernel.shape[2:])]
    pad = tuple(o - b for o, b in zip(output.shape[-d:], base))
    return _batched(_TRANSPOSE[d](ones, kernel, None, module.stride, module.padding, pad,
                                  module.groups, module.dilation), output)


def _learnable(module: nn.Module, path: torch.Tensor) -> torch.Tensor:
    """``K = s * path`` whose gradient reaches ``path`` as ``q / s`` (not ``s``) times
    ``dL/dK``: Adam-like steps ignore that factor, plain SGD's are then the masked model's."""
    scale, squares = module._buffers[SCALE], module._buffers[SQUARES]
    rate = squares / torch.where(scale > 0, scale, torch.ones_like(scale))
    return (scale - rate) * path.detach() + rate * path


def _learning(module: nn.Module) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(p is not None and p.requires_grad for p in (
        module._parameters.get(PATH), module._parameters.get(SOURCE_WEIGHTS),
        module._parameters.get(SHIFTS)))


def _kernel_now(module: nn.Module, offset: torch.Tensor | None) -> torch.Tensor | None:
    """The summed kernel of the paths active now: ``K`` (and the eval offset)."""
    path = module._parameters.get(PATH)
    kernel = None
    if path is not None:
        learning = path.requires_grad and torch.is_grad_enabled()
        kernel = _learnable(module, path) if learning else path * module._buffers[SCALE]
    if SOURCE_WEIGHTS in module._parameters:
        learned = source_kernel(module, bias_like(module))
        kernel = learned if kernel is None else kernel + learned
    for extra in (module._buffers.get(FIXED), offset):
        if extra is not None:
            kernel = extra if kernel is None else kernel + extra
    return kernel


def _extra(module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor | None:
    """What the constant paths add in the current mode. While ``K`` can learn (gradients
    on) it is computed every call, a batch-of-one conv; otherwise cached per mode and
    input size until a tensor changes (an optimizer step, ``.to()``), so an inference
    call costs a few checks and one add."""
    training = module.training
    path = module._parameters.get(PATH)
    offset = None if training else module._buffers.get(OFFSET)
    fixed = module._buffers.get(FIXED)
    weights = module._parameters.get(SOURCE_WEIGHTS)
    if path is None and offset is None and fixed is None and weights is None:
        return None
    if _learning(module):
        return _map(module, _kernel_now(module, offset).to(output.dtype), x, output)
    tensors = (path, module._buffers.get(SCALE), offset, fixed, weights,
               module._parameters.get(SHIFTS), *(module._buffers.get(b) for b in SOURCE_BUFFERS))
    # a parameter moved by .to() keeps its identity but not its storage
    stamp = (x.shape[1:], output.dtype, output.dim(), *(
        None if t is None else (t._version, t.data_ptr(), t.device) for t in tensors))
    caches = module.__dict__.get('_constants_cache')
    if caches is None:
        caches = module.__dict__['_constants_cache'] = {}
    entry = caches.get(training)  # holds the tensors themselves: identity, not a reused id
    if entry is None or entry[2] != stamp or any(a is not b for a, b in zip(entry[0], tensors)):
        with torch.no_grad():  # the map is linear in the kernel: one call for the sum
            extra = _map(module, _kernel_now(module, offset).to(output.dtype), x, output)
        entry = caches[training] = (tensors, extra, stamp)
    return entry[1]


def add_paths(module: nn.Module, x: torch.Tensor, output: torch.Tensor,
              inplace: bool = False) -> torch.Tensor:
    """``output`` plus the constant paths of ``module`` (``x``: its input); ``inplace``
    only for an output that the layer itself just made."""
    offset = module._buffers.get(OFFSET)
    if offset is not None and module.training:
        with torch.no_grad():
            offset.mul_(1.0 - DECAY)  # in place: a new version invalidates the eval map
    extra = _extra(module, x, output)
    if extra is None:
        return output
    # in place is safe for the built-in layers: their backward needs input and weight only
    return output.add_(extra) if inplace else output + extra


def _hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return add_paths(module, args[0], output)


class _WithConstants:
    """The layer plus its constant paths; a subclass, not a hook, because a module with
    hooks takes PyTorch's slow call path, which costs more than the layer at small sizes."""

    def forward(self, input, *args, **kwargs):  # noqa: A002 - the layers' own name
        return add_paths(self, input, super().forward(input, *args, **kwargs), inplace=True)


class Conv1dWithConstants(_WithConstants, nn.Conv1d):
    """nn.Conv1d with constant paths (see the module docstring)."""


class Conv2dWithConstants(_WithConstants, nn.Conv2d):
    """nn.Conv2d with constant paths (see the module docstring)."""


class Conv3dWithConstants(_WithConstants, nn.Conv3d):
    """nn.Conv3d with constant paths (see the module docstring)."""


class ConvTranspose1dWithConstants(_WithConstants, nn.ConvTranspose1d):
    """nn.ConvTranspose1d with constant paths (see the module docstring)."""


class ConvTranspose2dWithConstants(_WithConstants, nn.ConvTranspose2d):
    """nn.ConvTranspose2d with constant paths (see the module docstring)."""


class ConvTranspose3dWithConstants(_WithConstants, nn.ConvTranspose3d):
    """nn.ConvTranspose3d with constant paths (see the module docstring)."""


class LinearWithConstants(_WithConstants, nn.Linear):
    """nn.Linear with constant paths (see the module docstring)."""


WITH_CONSTANTS = {nn.Conv1d: Conv1dWithConstants, nn.Conv2d: Conv2dWithConstants,
                  nn.Conv3d: Conv3dWithConstants, nn.ConvTranspose1d: ConvTranspose1dWithConstants,
                  nn.ConvTranspose2d: ConvTranspose2dWithConstants,
                  nn.ConvTranspose3d: ConvTranspose3dWithConstants,
                  nn.Linear: LinearWithConstants}


def has_paths(module: nn.Module) -> bool:
    """Whether ``module`` carries any constant path."""
    return (PATH in module._parameters or SOURCE_WEIGHTS in module._parameters
            or OFFSET in module._buffers or FIXED in module._buffers)


def attach(module: nn.Module) -> None:
    """Give ``module`` its constant paths: the subclass for the built-in layers (same
    weights, same state_dict keys), a forward hook for a user's subclass of them."""
    if isinstance(module, _WithConstants):
        return
    swapped = WITH_CONSTANTS.get(type(module))
    if swapped is not None:
        module.__class__ = swapped
    else:
        module.register_forward_hook(_hook)


def live_rows(module: nn.Module, out_channels: int) -> torch.Tensor:
    """Bool per output channel: a constant path adds something there (so it is not dead)."""
    live = torch.zeros(out_channels, dtype=torch.bool)
    for kernel in (module._parameters.get(PATH), module._buffers.get(OFFSET),
                   module._buffers.get(FIXED), module._parameters.get(SOURCE_WEIGHTS)):
        if kernel is not None:  # every layout lists the outputs in order
            live |= (kernel.detach().reshape(out_channels, -1) != 0).any(1).cpu()
    return live


def _select_rows(module: nn.Module, select) -> None:
    for name in (SCALE, SQUARES, OFFSET, FIXED):
        kernel = module._buffers.get(name)
        if kernel is not None:
            setattr(module, name, select(kernel))
    for name in (PATH, SOURCE_WEIGHTS):
        param = module._parameters.get(name)
        if param is not None:
            setattr(module, name, nn.Parameter(select(param.data), param.requires_grad))


def prune_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """Keep output channels ``keep`` of the paths (layouts (out, ...))."""
    _select_rows(module, lambda t: t.index_select(0, keep.to(t.device)))


def prune_transpose_rows(module: nn.Module, keep: torch.Tensor) -> None:
    """``keep``: global output channels; the paths are (groups, out/groups, ...)."""
    def select(t):
        flat = t.reshape(-1, *t.shape[2:]).index_select(0, keep.to(t.device))
        return flat.reshape(t.shape[0], -1, *t.shape[2:])
    _select_rows(module, select)


_BASE = {swapped: base for base, swapped in WITH_CONSTANTS.items()}


def fix_paths(module: nn.Module) -> bool:
    """Fix ``module``'s constant paths at what they add in eval mode now (``K`` plus the
    eval offset): one value per output goes into the bias (the layer gets its own class
    back when nothing else is left), a kernel becomes the buffer ``fixed_constants``.
    Returns whether ``module`` had paths to fix."""
    if (PATH not in module._parameters and OFFSET not in module._buffers
            and SOURCE_WEIGHTS not in module._parameters):
        return False
    with torch.no_grad():
        kernel = _kernel_now(module, module._buffers.get(OFFSET))
    drop_sources(module)
    module._parameters.pop(PATH, None)
    for name in (SCALE, SQUARES, OFFSET, FIXED):
        module._buffers.pop(name, None)
    module.__dict__.pop('_constants_cache', None)
    if kernel.dim() > 1:
        module.register_buffer(FIXED, kernel)
        return True
    bias = module.bias
    if bias is None:
        module.bias = nn.Parameter(kernel.clone(), module.weight.requires_grad)
    else:
        with torch.no_grad():
            bias.add_(kernel.to(bias.dtype))
    module.__class__ = _BASE.get(type(module), type(module))
    return True
