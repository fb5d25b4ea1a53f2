"""A prunable layer seen as ``y = W x``: its weight as a matrix and its inputs as columns.

Post-training pruners need, per layer, the weight as ``(rows, cols)`` matrices and the
statistics of the inputs those columns multiply. This module knows the layouts:

=====================  ===========================================================
``nn.Linear``          ``W`` as is; inputs are the last dimension
HF ``Conv1D``          (GPT-2) stores ``(in, out)``; the matrix is its transpose
``nn.Conv1d/2d/3d``    :func:`~prunus.compression.torch.criteria.matrix_view` layout
                       (input channel fastest); inputs are the unfolded patches, one
                       matrix per group for grouped convolutions
=====================  ===========================================================

:class:`InputStats` accumulates, from forward hooks, what the algorithms read: the mean
``x x^T`` (SparseGPT's Hessian) and the per-column sum of squares (Wanda's norms).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .criteria import from_matrix, matrix_view

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_hf_conv1d(module: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D`` (a Linear with a transposed weight),
    recognized without importing transformers."""
    return type(module).__name__ == 'Conv1D' and hasattr(module, 'nf') and module.weight.dim() == 2


def groups_of(module: nn.Module) -> int:
    return module.groups if isinstance(module, CONV) else 1


def weight_matrices(module: nn.Module) -> list[torch.Tensor]:
    """The weight as one ``(rows, cols)`` matrix per group (a view where possible)."""
    weight = module.weight.detach()
    matrix = weight.t() if is_hf_conv1d(module) else matrix_view(weight)
    return list(matrix.chunk(groups_of(module), dim=0))


def to_weight(module: nn.Module, matrices: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of :func:`weight_matrices`: per-group matrices back in the weight's shape."""
    matrix = torch.cat(matrices, dim=0)
    if is_hf_conv1d(module):
        return matrix.t().contiguous()
    return from_matrix(matrix, module.weight.shape).contiguous()


def _patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Unfolded convolution inputs ``(samples, *kernel, in_channels)``, padding included."""
    dims = x.dim() - 2
    if module.padding_mode != 'zeros' or isinstance(module.padding, str):
        x = _pad(module, x, dims)
    else:
        pads = [p for pad in reversed(module.padding) for p in (pad, pad)]
        x = F.pad(x, pads)
    for axis in range(dims):
        kernel, stride, dilation = module.kernel_size[axis], module.stride[axis], module.dilation[axis]
        span = (kernel - 1) * dilation + 1
        x = x.unfold(2 + axis, span, stride)[..., ::dilation]
    # (B, C, *L, *K) -> (B, *L, *K, C): input channels vary fastest, as in matrix_view.
    x = x.movedim(1, -1)
    return x.reshape(-1, *module.kernel_size, module.in_channels)


def _pad(module: nn.Module, x: torch.Tensor, dims: int) -> torch.Tensor:
    """The padding the module's own forward applies ('same' or a non-zero padding mode)."""
    if isinstance(module.padding, str):
        if module.padding == 'valid':
            return x
        pads = []
        for axis in reversed(range(dims)):
            total = module.dilation[axis] * (module.kernel_size[axis] - 1)
            pads += [total // 2, total - total // 2]
        mode = 'constant' if module.padding_mode == 'zeros' else module.padding_mode
        return F.pad(x, pads, mode=mode)
    return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)


def input_columns(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The layer's input as ``(samples, cols)`` matrices, one per group, in float32."""
    x = x.detach()
    if not isinstance(module, CONV):
        return [x.reshape(-1, x.shape[-1]).float()]
    if x.dim() == module.weight.dim() - 1:  # an unbatched input
        x = x.unsqueeze(0)
    patches = _patches(module, x.float())
    groups = module.groups
    per_group = patches.reshape(patches.shape[0], -1, groups, module.in_channels // groups)
    return [per_group[:, :, g].reshape(patches.shape[0], -1) for g in range(groups)]


class SharedInputs:
    """Per-batch products shared by layers that read the very same input tensor (a
    transformer's query, key and value projections; Llama's gate and up projections):
    the first such layer computes ``X^T X`` and the column sums of squares, the others
    reuse them instead of multiplying again. Only the latest input is remembered, and only
    while it is unmodified (same object, same version counter)."""

    def __init__(self):
        self.key: tuple | None = None
        self.tensor: torch.Tensor | None = None
        self.value: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def lookup(self, x: torch.Tensor, hessian: bool):
        if self.tensor is x and self.key == (x._version, hessian):
            return self.value
        return None

    def store(self, x: torch.Tensor, hessian: bool, value: tuple) -> None:
        self.tensor, self.key, self.value = x, (x._version, hessian), value


class InputStats:
    """Running input statistics of one layer, fed by a forward hook.

    Attributes:
        hessians: per group, the sum of ``x x^T`` (when ``hessian``); the mean once
            :meth:`mean_hessians` was called.
        squares: per group, the per-column sum of ``x^2``.
        samples: how many input vectors were seen.
    """

    def __init__(self, module: nn.Module, hessian: bool, device: torch.device | None = None,
                 shared: SharedInputs | None = None):
        self.module = module
        self.shared = shared if device is None and not isinstance(module, CONV) else None
        self.want_hessian = hessian
        self.device = device
        self.hessians: list[torch.Tensor] = []
        self.squares: list[torch.Tensor] = []
        self.samples = 0

    def add(self, x: torch.Tensor) -> None:
        found = self.shared.lookup(x, self.want_hessian) if self.shared is not None else None
        if found is None:
            found = self._products(x)
            if self.shared is not None:
                self.shared.store(x, self.want_hessian, found)
        squares, hessians, samples = found
        if not self.squares:  # copies: a shared product is added to by every layer reading it
            self.squares = [s.clone() for s in squares]
            self.hessians = [h.clone() for h in hessians]
            self.samples = samples
            return
        for g in range(len(squares)):
            self.squares[g] += squares[g]
            if self.want_hessian:
                self.hessians[g] += hessians[g]
        self.samples += samples

    def _products(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
        """This batch's per-group column sums of squares and ``X^T X`` (when wanted)."""
        columns = input_columns(self.module, x)
        if self.device is not None:
            columns = [c.to(self.device) for c in columns]
        squares = [c.pow(2).sum(dim=0) for c in columns]
        hessians = [c.t() @ c for c in columns] if self.want_hessian else []
        return squares, hessians, columns[0].shape[0]

    def hook(self, module: nn.Module, args: tuple, output) -> None:
        self.add(args[0])

    def attach(self) -> torch.utils.hooks.RemovableHandle:
        return self.module.register_forward_hook(self.hook)

    def norms(self) -> list[torch.Tensor]:
        return [s.sqrt() for s in self.squares]

    def mean_hessians(self) -> list[torch.Tensor]:
        """The mean ``x x^T`` per group: the sums are divided in place, once (no copies:
        the statistics are read when the layer is pruned, after all inputs were added)."""
        if not getattr(self, 'averaged', False):
            for h in self.hessians:
                h.div_(max(self.samples, 1))
            self.averaged = True
        return self.hessians

