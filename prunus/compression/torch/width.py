"""Hidden-width (residual stream) pruning through LayerNorm, as an explicit choice.

A LayerNorm normalizes over all the channels of the residual stream, so zeroing stream
channels changes the statistics of the others: the masked model would not compute what
the narrower model computes. :func:`prune_hidden_width` therefore turns the stream's
LayerNorms into :class:`KeptChannelLayerNorm` (same parameters and state-dict keys), which
normalizes over the kept channels only and outputs zero on the others. It then masks the
lowest-scoring stream channels in every layer writing the stream (Linear rows and biases,
conv filters such as a patch embedding, Embedding columns), in the parameters added to or
concatenated into it (a class token, a position embedding) and in the LayerNorms. The masked model then already computes exactly
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
from prunus.layers.torch import specs
from prunus.layers.torch.heads import attention_layout
from prunus.layers.torch.masking import Masks, apply_masks
from prunus.layers.torch.modules import KeptChannelLayerNorm
from prunus.speedup.dependency import dependency_groups
from prunus.speedup.trace import trace_model

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


def _writer(module: nn.Module) -> tuple[str, nn.Module] | None:
    """The layer whose output rows write a stream member's channels: a Linear or conv
    itself, an attention module's output projection (relative name), else None."""
    if isinstance(module, (nn.Linear,) + specs.CONV + specs.CONV_TRANSPOSE):
        return '', module
    lay = attention_layout(module)
    if lay is not None and lay.out is not None and lay.out.axis == 1:
        out = module.get_submodule(lay.out.module) if lay.out.module else module
        if isinstance(out, nn.Linear):
            return lay.out.module, out
    return None


def _channel_scores(model: nn.Module, group, size: int) -> np.ndarray:
    """Per group channel: the L1 norm of what the layers writing it put there."""
    scores = np.zeros(size)
    for name in group.names:
        module = model.get_submodule(name)
        pos = group.channels[name].numpy()
        writer = _writer(module)
        if writer is not None:
            layer = writer[1]
            w = specs.filter_matrix(layer, layer.weight.detach()).abs().sum(1)
            if layer.bias is not None:
                w = w + layer.bias.detach().abs()
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
        writer = _writer(module)
        if isinstance(module, KeptChannelLayerNorm):
            module.keep = (module.keep & keep.to(module.keep.device))
            masks[name] = {p: keep.to(getattr(module, p).dtype) for p in ('weight', 'bias')
                           if getattr(module, p, None) is not None}
        elif writer is not None:
            sub, layer = writer
            w = layer.weight
            entry = masks.setdefault('.'.join(p for p in (name, sub) if p), {})
            entry['weight'] = specs.channel_mask_to_weight(layer, keep, w).clone()
            if layer.bias is not None:
                entry['bias'] = keep.to(w.dtype)
        elif isinstance(module, nn.Embedding):
            w = module.weight
            masks[name] = {'weight': keep.to(w.dtype).unsqueeze(0).expand_as(w).clone()}
    return masks


def _param_masks(model: nn.Module, dummy_input: Any, gone_by_group: list) -> Masks:
    """Masks for parameters used in the stream outside any layer (a class token, a
    position embedding), along their channel dim, so removed channels are zero there too.
    A group channel is matched to a parameter channel through a layer writing it."""
    trace = trace_model(model, dummy_input, constants=False)
    where: dict[int, tuple[int, int]] = {}  # channel root -> (group, group channel)
    for gi, (group, _) in enumerate(gone_by_group):
        for name in group.names:
            site = trace.sites.get(name)
            if site is not None and site.out_ids is not None:
                roots = trace.uf.roots(site.out_ids.reshape(-1)).tolist()
                for r, pos in zip(roots, group.channels[name].tolist()):
                    where.setdefault(r, (gi, pos))
    masks: Masks = {}
    for pname, (dim, ids) in trace.params.items():
        hits = [where.get(r) for r in trace.uf.roots(ids.reshape(-1)).tolist()]
        if not all(hits):
            continue
        keep = torch.tensor([not gone_by_group[gi][1][pos] for gi, pos in hits])
        owner_name, _, attr = pname.rpartition('.')
        owner = model.get_submodule(owner_name)
        param = getattr(owner, attr)
        if bool(keep.all()) or attr in ('weight', 'bias') and isinstance(owner, nn.LayerNorm):
            continue  # the norms are masked with their keep
        shape = [1] * param.dim()
        shape[dim] = -1
        masks.setdefault(owner_name, {})[attr] = keep.to(param.dtype).view(shape).expand_as(param).clone()
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
    done, masks, gone_by_group = {}, {}, []
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
        gone_by_group.append((group, gone))
        done[members[0]] = int(gone.sum())
    model.eval()
    try:
        extra = _param_masks(model, dummy_input, gone_by_group)
    finally:
        model.train(was_training)
    for owner, entry in extra.items():
        masks.setdefault(owner, {}).update(entry)
    apply_masks(model, masks)
    return done
