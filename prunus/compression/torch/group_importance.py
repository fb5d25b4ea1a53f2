"""Group importance: a tied channel group's score over every parameter it couples.

Removing group channel ``c`` removes more than the producing filters: the BatchNorm scale
and shift of ``c``, the depthwise filter that follows it and, in every layer that reads
``c``, the input slice that multiplies it. ``importance='group'`` on the dependency-aware
filter pruners scores ``c`` over all of them:

1. each coupled parameter gives one score per group channel it covers: ``sum |w|^p`` over
   its slice (the filter row, the input slice of a consumer, ``|gamma|``, ``|beta|``);
   ``p`` is the pruner's norm (1 for L1, 2 for L2 and FPGM);
2. ``normalization`` optionally rescales each parameter's scores so that large layers do
   not drown small ones: ``None`` (the pruners' default) leaves raw magnitudes, ``'max'``
   divides by their maximum, ``'mean'`` by their mean, ``'sum'`` by their sum;
3. ``reduction`` combines the parameters per channel: ``'mean'`` (default), ``'sum'``,
   ``'max'``, or ``'first'`` (the first producing layer's filter score alone, in execution
   order; with no normalization this is NNI's filter criterion on the group).

A parameter that does not cover a channel (a consumer reading only part of the group)
is left out of that channel's reduction.

Why raw magnitudes by default: measured after fine-tuning (benchmarks/finetune_quality.py,
10 seeds), the mean of raw scores, dominated by the filters and the consumers' input
slices (the parameters with most weights per channel), chose channels that fine-tune
better than max-normalized scores, which give ``|gamma|`` and ``|beta|`` as much say as
a whole filter; it is also the choice Torch-Pruning's magnitude importance makes.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from prunus.layers.torch import specs


REDUCTIONS = ('mean', 'sum', 'max', 'first')
NORMALIZATIONS = ('mean', 'max', 'sum', None)


def check_group_options(owner: str, importance: Any, reduction: Any, normalization: Any,
                        dependency_aware: bool) -> None:
    if importance not in ('filter', 'group'):
        raise ValueError(f"{owner}: importance must be 'filter' or 'group'; got {importance!r}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f'{owner}: group_reduction must be one of {REDUCTIONS}; '
                         f'got {reduction!r}.')
    if normalization not in NORMALIZATIONS:
        raise ValueError(f'{owner}: group_normalization must be one of {NORMALIZATIONS}; '
                         f'got {normalization!r}.')
    if importance == 'group' and not dependency_aware:
        raise ValueError(f"{owner}: importance='group' scores tied channel groups; it needs "
                         'dependency_aware=True (and dummy_input).')


def _norm(rows: torch.Tensor, p: int) -> torch.Tensor:
    rows = rows.detach().double().abs()
    return (rows if p == 1 else rows.pow(p)).sum(1)


def input_rows(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as one row per input channel (feature) of ``module``."""
    if isinstance(module, specs.CONV_TRANSPOSE):
        return weight.reshape(weight.shape[0], -1)
    if weight.dim() == 2:  # Linear (out, in)
        return weight.t()
    g = getattr(module, 'groups', 1)
    out_per, in_per = weight.shape[0] // g, weight.shape[1]
    grouped = weight.reshape(g, out_per, in_per, -1).transpose(1, 2)
    return grouped.reshape(g * in_per, -1)


def _scatter(size: int, positions: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Scores per group channel; NaN where this parameter covers none."""
    out = torch.zeros(size, dtype=torch.float64)
    hit = torch.zeros(size, dtype=torch.bool)
    out.index_add_(0, positions, values)
    hit[positions] = True
    return out.masked_fill(~hit, float('nan'))


def _member_scores(module: nn.Module, channels: torch.Tensor, size: int, p: int
                   ) -> list[torch.Tensor]:
    weight = getattr(module, 'weight', None)
    out = []
    if isinstance(weight, torch.Tensor):
        if weight.dim() > 1:
            out.append(_scatter(size, channels, _norm(specs.filter_matrix(module, weight), p)))
        else:  # a norm's scale (and below its shift)
            out.append(_scatter(size, channels, _norm(weight.reshape(-1, 1), p)))
            bias = getattr(module, 'bias', None)
            if isinstance(bias, torch.Tensor):
                out.append(_scatter(size, channels, _norm(bias.reshape(-1, 1), p)))
    return out


def group_importance(group: Any, modules: dict[str, nn.Module], p: int = 1,
                     reduction: str = 'mean', normalization: str | None = None
                     ) -> torch.Tensor:
    """Score per channel of ``group`` (a :class:`prunus.speedup.ChannelGroup`), float64."""
    parts = []
    for name in group.names:
        parts += _member_scores(modules[name], group.channels[name], group.size, p)
    if reduction == 'first':
        return parts[0].nan_to_num(0.0)
    for name, (idx, pos) in group.consumers.items():
        module = modules[name]
        rows = input_rows(module, module.weight)
        parts.append(_scatter(group.size, pos, _norm(rows[idx], p)))
    scores = torch.stack(parts)
    if normalization is not None:
        reduce = {'mean': torch.nanmean, 'sum': torch.nansum,
                  'max': lambda t, dim, keepdim: t.nan_to_num(float('-inf')).amax(dim, keepdim)}
        scale = reduce[normalization](scores, dim=1, keepdim=True)
        scores = scores / torch.where(scale > 0, scale, torch.ones_like(scale))
    if reduction == 'mean':
        return torch.nanmean(scores, 0).nan_to_num(0.0)
    if reduction == 'sum':
        return torch.nansum(scores, 0)
    return scores.nan_to_num(float('-inf')).amax(0).clamp_min(0.0)
