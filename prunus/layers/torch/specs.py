"""What prunus knows about PyTorch layer types: which can be pruned how, and how a
layer's weight is laid out per output channel.

Output channels are dim 0 of the weight for Conv/Linear/BatchNorm, and dim 1 for
ConvTranspose (whose weight is ``(in, out // groups, *kernel)``); :func:`filter_matrix`
hides that, returning one row per output channel.
"""
from __future__ import annotations

import torch
from torch import nn

CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
EMBEDDING = (nn.Embedding,)

#: Layers whose weights an unstructured (element-wise) pruner may mask.
WEIGHTED = CONV + CONV_TRANSPOSE + (nn.Linear, nn.Bilinear) + EMBEDDING
#: Layers with output channels (filters) a structured pruner may remove.
FILTERED = CONV + CONV_TRANSPOSE + (nn.Linear,)
#: Layers the training API prunes with patterns (weights seen as ``(out, -1)`` matrices).
PATTERNED = (nn.Linear,) + CONV


def is_depthwise(module: nn.Module) -> bool:
    """A (transposed) conv whose output channel i is computed from input channel i alone
    (``groups == in_channels == out_channels``): its in and out channels are tied."""
    groups = getattr(module, 'groups', 1)
    return groups > 1 and groups == module.in_channels == module.out_channels


def mixes_channels(module: nn.Module) -> bool:
    """A layer whose own weights make each output channel from all its inputs (conv or
    linear, not depthwise), so it can change its channel count on its own."""
    return isinstance(module, FILTERED) and not is_depthwise(module)


def names(types: tuple[type, ...]) -> tuple[str, ...]:
    return tuple(t.__name__ for t in types)


def out_channels(module: nn.Module) -> int:
    if isinstance(module, CONV_TRANSPOSE):
        return module.out_channels
    return module.weight.shape[0]


def filter_matrix(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` rearranged to ``(out_channels, -1)``: row ``c`` is filter ``c``."""
    if isinstance(module, CONV_TRANSPOSE):
        groups = module.groups
        in_ch, out_per_group = weight.shape[:2]
        grouped = weight.reshape(groups, in_ch // groups, out_per_group, -1)
        return grouped.transpose(1, 2).reshape(groups * out_per_group, -1)
    return weight.reshape(weight.shape[0], -1)


def channel_mask_to_weight(module: nn.Module, keep: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Expands a per-output-channel keep vector to a mask shaped like ``weight``."""
    keep = keep.to(device=weight.device, dtype=weight.dtype)
    if isinstance(module, CONV_TRANSPOSE):
        groups = module.groups
        in_ch, out_per_group = weight.shape[:2]
        per_group = keep.reshape(groups, 1, out_per_group)
        mask = per_group.expand(groups, in_ch // groups, out_per_group).reshape(in_ch, out_per_group)
        return mask.reshape(in_ch, out_per_group, *([1] * (weight.dim() - 2))).expand_as(weight).clone()
    return keep.reshape(-1, *([1] * (weight.dim() - 1))).expand_as(weight).clone()


def activation_channel_dim(module: nn.Module) -> int:
    """The dim of a layer's output that indexes its channels (features last for Linear)."""
    return -1 if isinstance(module, nn.Linear) else 1
