"""Hidden-width (residual stream) pruning through LayerNorm, as an explicit choice.

A LayerNorm normalizes over all the channels of the residual stream, so zeroing stream
channels changes the statistics of the others: the masked model would not compute what
the narrower model computes. :func:`prune_hidden_width` therefore turns the stream's
LayerNorms into :class:`KeptChannelLayerNorm` (same parameters and state-dict keys), which
normalizes over the kept channels only and outputs zero on the others. It then masks the
lowest-scoring stream channels in every layer writing the stream (Linear rows and biases,
Embedding columns) and in the LayerNorms. The masked model then already computes exactly
what the narrower model does, and ``prunus.speedup.speedup`` removes the channels
everywhere (the LayerNorms become plain ``nn.LayerNorm`` of the smaller width)::

    prune_hidden_width(model, example_inputs, sparsity=0.25)
    small = speedup(model, example_inputs)

Only a stream that is not itself a model output can shrink (a head must read it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from prunus.compression.allocation import lowest, prune_count
from prunus.layers.torch.masking import Masks, apply_masks
from prunus.layers.torch.modules import KeptChannelLayerNorm
from prunus.speedup.dependency import dependency_groups

def use_kept_channel_norms(model: nn.Module, names: list[str] | None = None) -> list[str]:
    """Turns (in place) every ``nn.LayerNorm`` over one last dim, or those named, into a
    :class:`KeptChannelLayerNorm` keeping all channels; returns their names."""
    done = []
    for name, module in model.named_modules():
        if names is not None and name not in names:
            continue
        if type(module) is nn.LayerNorm and len(module.normalized_shape) == 1:
            module.__class__ = KeptChannelLayerNorm
            device = module.weight.device if module.weight is not None else None
            module.register_buffer('keep', torch.ones(module.normalized_shape[0], dtype=torch.bool,
                                                      device=device), persistent=False)
            done.append(name)
        elif isinstance(module, KeptChannelLayerNorm):
            done.append(name)
    return done


def _channel_scores(model: nn.Module, group, size: int) -> np.ndarray:
    """Per group channel: the L1 norm of what the layers writing it put there."""
    scores = np.zeros(size)
    for name in group.names:
        module = model.get_submodule(name)
        pos = group.channels[name].numpy()
        if isinstance(module, nn.Linear):
            w = module.weight.detach().abs().sum(1)
            if module.bias is not None:
                w = w + module.bias.detach().abs()
        elif isinstance(module, nn.Embedding):
            w = module.weight.detach().abs().sum(0)
        else:
            continue
        np.add.at(scores, pos, w.double().cpu().numpy())
    return scores


def _masks_for(model: nn.Module, group, gone: np.ndarray) -> Masks:
    masks: Masks = {}
    for name in group.names:
        module = model.get_submodule(name)
        keep = torch.from_numpy(~gone[group.channels[name].numpy()])
        if isinstance(module, KeptChannelLayerNorm):
            module.keep = (module.keep & keep.to(module.keep.device))
            masks[name] = {p: keep.to(getattr(module, p).dtype) for p in ('weight', 'bias')
                           if getattr(module, p, None) is not None}
        elif isinstance(module, nn.Linear):
            w = module.weight
            masks[name] = {'weight': keep.to(w.dtype).unsqueeze(1).expand_as(w).clone()}
            if module.bias is not None:
                masks[name]['bias'] = keep.to(w.dtype)
        elif isinstance(module, nn.Embedding):
            w = module.weight
            masks[name] = {'weight': keep.to(w.dtype).unsqueeze(0).expand_as(w).clone()}
    return masks


def prune_hidden_width(model: nn.Module, dummy_input: Any, sparsity: float) -> dict[str, int]:
    """Masks ``sparsity`` of the residual stream's channels (lowest L1 of what writes them)
    after converting its LayerNorms (see the module doc). Returns, per stream (named by its
    first LayerNorm), the number of channels masked.

    Args:
        model: the model; its ``nn.LayerNorm`` over the last dim become
            :class:`KeptChannelLayerNorm`.
        dummy_input: an input it runs on (to trace the residual streams).
        sparsity: the fraction of each stream's channels to mask, in ``[0, 1)``.

    Example::

        masked = prune_hidden_width(model, example_inputs, sparsity=0.25)  # {'ln_1': 48, ...}
        small = speedup(model, example_inputs)   # removes the masked channels
    """
    if not isinstance(sparsity, (int, float)) or not 0 <= sparsity < 1:
        raise ValueError(f'prune_hidden_width: sparsity must be a number in [0, 1); got {sparsity!r}.')
    norms = set(use_kept_channel_norms(model))
    if not norms:
        raise ValueError('prune_hidden_width: the model has no nn.LayerNorm over its last dim.')
    was_training = model.training
    model.eval()
    try:
        groups = dependency_groups(model, dummy_input)
    finally:
        model.train(was_training)
    done, masks = {}, {}
    for group in groups:
        members = [n for n in group.names if n in norms]
        if not members:
            continue
        free = ~group.blocked.numpy()
        if not free.any():
            raise ValueError(f"prune_hidden_width: the stream through '{members[0]}' is part of "
                             'the model output (or read by an operation that needs every channel), '
                             'so it cannot shrink.')
        scores = _channel_scores(model, group, group.size)
        count = min(prune_count(group.size, sparsity), int(free.sum()) - 1)
        picked = np.flatnonzero(free)[lowest(scores[free], count)]
        gone = np.zeros(group.size, dtype=bool)
        gone[picked] = True
        masks.update(_masks_for(model, group, gone))
        done[members[0]] = int(gone.sum())
    apply_masks(model, masks)
    return done
