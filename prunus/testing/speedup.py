"""Helpers to check a speedup: reference masks, the masked reference, output comparison.

The tests and the benchmarks check every speedup the same way: mask with :func:`l1_masks`,
give normalization layers real statistics with :func:`randomize_norms` (so a removed
channel leaves a non-zero constant behind), and compare the sped-up model with
:func:`masked_copy` through :func:`max_rel_error`.

Example::

    model = randomize_norms(torchvision.models.resnet18().eval())
    masks = l1_masks(model)
    small = speedup(model, x, masks)
    assert max_rel_error(masked_copy(model, masks)(x), small(x)) < 1e-4
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten


PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d, nn.Linear, nn.Embedding)


def l1_masks(model: nn.Module, sparsity: float = 0.5) -> dict:
    """Filter masks by L1 norm for every producer except the last one (the classifier).

    Args:
        model: the model.
        sparsity: the fraction of each layer's output channels to mask.

    Returns:
        ``{layer_name: {'weight': mask, 'bias': mask}}``.

    Example::

        masks = l1_masks(torchvision.models.resnet18(), 0.5)
    """
    masks = {}
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRODUCERS)][:-1]
    for name, m in layers:
        w = m.weight.detach()
        out_dim = 1 if isinstance(m, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                      nn.ConvTranspose3d, nn.Embedding)) else 0
        scores = w.abs().movedim(out_dim, 0).flatten(1).sum(1)
        drop = scores.argsort()[:int(round(sparsity * len(scores)))]
        mask = torch.ones_like(w)
        mask.index_fill_(out_dim, drop, 0.0)
        masks[name] = {'weight': mask}
        old_bias = getattr(m, 'bias', None)
        if isinstance(old_bias, torch.Tensor) and out_dim == 0:
            bias = torch.ones_like(old_bias)
            bias[drop] = 0.0
            masks[name]['bias'] = bias
    return masks


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every normalization layer non-trivial statistics and affine parameters, in place.

    A removed channel then leaves a non-zero constant behind, which the speedup must fold.

    Args:
        model: the model.
        seed: the random seed.

    Returns:
        ``model``.

    Example::

        model = randomize_norms(torchvision.models.resnet18().eval())
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        for name, lo, hi in (('running_mean', -0.5, 0.5), ('running_var', 0.5, 2.0),
                             ('weight', 0.5, 1.5), ('bias', -0.5, 0.5)):
            t = getattr(m, name, None)
            if isinstance(t, torch.Tensor) and isinstance(m, (nn.modules.batchnorm._NormBase,
                                                              nn.GroupNorm, nn.LayerNorm)):
                t.data.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model


def masked_copy(model: nn.Module, masks: dict) -> nn.Module:
    """The reference: a copy with masks multiplied into the weights, in eval mode.

    Args:
        model: the model (left unchanged).
        masks: ``{layer_name: {param_name: mask}}``.

    Returns:
        The masked copy.

    Example::

        reference = masked_copy(model, l1_masks(model))(x)
    """
    ref = copy.deepcopy(model).eval()
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, entry in masks.items():
            for pname, mask in entry.items():
                getattr(modules[name], pname).mul_(mask)
    return ref


def run(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` with a tensor, a tuple of positional inputs or a dict of keyword inputs.

    Args:
        model: the model.
        inputs: what to call it with.

    Returns:
        The model's output.

    Example::

        out = run(model, {'x': x, 'scale': 2.0})
    """
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def max_rel_error(ref: Any, out: Any) -> float:
    """Largest |ref - out| over all output tensors, relative to ref's magnitude.

    Args:
        ref: the reference output (a tensor or a nest of them).
        out: the output to check, of the same structure.

    Returns:
        The worst relative difference.

    Raises:
        ValueError: the structures or shapes differ.

    Example::

        assert max_rel_error(masked_copy(model, masks)(x), small(x)) < 1e-4
    """
    refs, outs = tree_flatten(ref)[0], tree_flatten(out)[0]
    if len(refs) != len(outs):
        raise ValueError(f'the outputs differ in structure: {len(refs)} tensors vs {len(outs)}.')
    worst = 0.0
    for r, o in zip(refs, outs):
        r, o = r.detach(), o.detach()
        if r.shape != o.shape:
            raise ValueError(f'output shapes differ: {tuple(r.shape)} vs {tuple(o.shape)}.')
        scale = float(r.abs().max()) or 1.0
        worst = max(worst, float((r - o).abs().max()) / scale)
    return worst
