"""The learnable-constants path of a layer: removed inputs whose constants learn.

Where a removed channel's constant is a removed BatchNorm shift seen through activations
(see :mod:`prunus.speedup.sources`), the layer keeps its own weights on those inputs
(``source_weights``, trainable) and reads the model's one vector of removed shifts
(``removed_shifts``, the same parameter on every layer that reads it); per removed input
``r`` its constant is ``base_r + sum_m slope_rm * shifts[index_rm]``, so that its
contribution ``sum_r c_r W_r`` trains exactly as the masked model's removed shifts and
weights do. :mod:`prunus.layers.torch.constants` applies it with the other paths.
"""
from __future__ import annotations

import torch
from torch import nn

SOURCE_WEIGHTS = 'source_weights'
SHIFTS = 'removed_shifts'
SOURCE_INDEX, SOURCE_SLOPES, SOURCE_BASE = 'source_index', 'source_slopes', 'source_base'
SOURCE_BUFFERS = (SOURCE_INDEX, SOURCE_SLOPES, SOURCE_BASE)


def source_constants(module: nn.Module) -> torch.Tensor:
    """The current constants of the learnable removed inputs: ``base + slopes . shifts``."""
    shifts = module._parameters[SHIFTS]
    picked = shifts[module._buffers[SOURCE_INDEX]].to(module._buffers[SOURCE_SLOPES].dtype)
    return module._buffers[SOURCE_BASE] + (module._buffers[SOURCE_SLOPES] * picked).sum(1)


def source_kernel(module: nn.Module, bias_form: bool) -> torch.Tensor:
    """``sum_r c_r W_r`` of the learnable removed inputs, in the path's layout."""
    weights = module._parameters[SOURCE_WEIGHTS]
    c = source_constants(module).to(weights.dtype)
    if isinstance(module, nn.Linear):
        return weights @ c
    kernel = torch.einsum('oi...,i->o...', weights, c)
    return kernel.flatten(1).sum(1) if bias_form else kernel.unsqueeze(1)


def can_learn_sources(module: nn.Module) -> bool:
    """Whether ``module`` can take the path: a Linear or an ungrouped, non-transposed conv
    (a grouped or transposed layer keeps its constants fixed)."""
    if isinstance(module, nn.Linear):
        return True
    conv = nn.modules.conv
    return (isinstance(module, conv._ConvNd) and not isinstance(module, conv._ConvTransposeNd)
            and module.groups == 1)


def drop_sources(module: nn.Module) -> None:
    """Remove the path from ``module`` (and its cached map)."""
    module._parameters.pop(SOURCE_WEIGHTS, None)
    module._parameters.pop(SHIFTS, None)
    for name in SOURCE_BUFFERS:
        module._buffers.pop(name, None)
    module.__dict__.pop('_constants_cache', None)
