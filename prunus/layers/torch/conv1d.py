"""transformers' ``Conv1D`` (GPT-2's ``c_fc``/``c_proj`` and their copies) as a layer of
its own: ``y = x @ weight + bias`` with ``weight`` (in, out), features last, so an MLP of
Conv1D layers loses hidden channels like one of Linears.

Matched by class name and its ``nf`` attribute, so transformers need not be installed.
Inside a known attention module it is handled by the attention (heads), not here.
"""
from __future__ import annotations

import torch
from torch import nn

from prunus.layers.torch.handlers import DETECTORS, Handler
from prunus.layers.torch.handlers import add_bias as _add_bias, replace_tensor as _set, take as _take


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a transformers-style Conv1D (weight (in, out), ``nf`` outputs)."""
    return type(module).__name__ == 'Conv1D' and hasattr(module, 'nf') and \
        isinstance(getattr(module, 'weight', None), torch.Tensor) and module.weight.dim() == 2


class Conv1DHandler(Handler):
    """Conv1D: input features are weight rows, output features weight columns."""

    in_dim = -1
    out_dim = -1

    def count_in(self, module):
        return module.weight.shape[0]

    def count_out(self, module):
        return module.weight.shape[1]

    def prune_in(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 0, keep))
        if hasattr(module, 'nx'):
            module.nx = len(keep)

    def prune_out(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 1, keep))
        if module.bias is not None:
            _set(module, 'bias', _take(module.bias.data, 0, keep))
        module.nf = len(keep)

    def dead_out(self, module):
        w = module.weight.data
        return ((w.amax(0) == 0) & (w.amin(0) == 0)).cpu()

    def can_fold(self, module, values):
        return True

    def fold_in(self, module, removed, values):
        if not bool(values.any()):
            return
        w = module.weight.data
        _add_bias(module, values.to(w.device, w.dtype) @ w[removed.to(w.device), :])


CONV1D = Conv1DHandler()


def detect_conv1d(module: nn.Module) -> Handler | None:
    """The Conv1D handler for ``module`` if it is a transformers-style Conv1D."""
    return CONV1D if is_conv1d(module) else None


DETECTORS.append(detect_conv1d)
