"""How channel labels flow through ATen operators (the functional-op table).

Every ATen call recorded outside a handled module is routed through :data:`OP_RULES` by
its overload-packet name (``aten.add.Tensor`` -> ``'add'``). Ops tagged
``torch.Tag.pointwise`` need no entry. Anything not covered *blocks* the channels of its
labelled inputs: they are kept, and the summary names the op. That is the safe default.

==========================  =============================================================
rule                        ops
==========================  =============================================================
pointwise (ties operands)   every op tagged pointwise (add, mul, relu, gelu, silu, where,
                            sigmoid, ...) plus :data:`EXTRA_POINTWISE` (hardswish, ...)
identity                    clone, _to_copy, detach, alias, contiguous, dropout, ...
direct                      permute, transpose, t, unsqueeze, expand
along-dim replay            cat, stack, slice, select, split, split_with_sizes, chunk,
                            unbind, narrow, index_select
full replay                 view, reshape, _unsafe_view, squeeze, flatten, pixel_shuffle,
                            channel_shuffle, constant_pad_nd, flip, roll, repeat, index
reduction                   mean, sum, amax, amin, max, min, var, std, prod, logsumexp,
                            norm, argmax, argmin, softmax, log_softmax, cumsum, sort, topk
spatial (trailing k dims)   max/avg/adaptive pooling, upsample_*, reflection/replication
                            pad, grid_sampler
prelu                       _prelu_kernel (per-channel weight on dim 1)
layer_norm                  native_layer_norm (normalized dims must be label-free)
==========================  =============================================================
"""
from __future__ import annotations

import re
from typing import Any, Callable

import torch

from prunus.speedup.labels import compress, expand_dims, varying_dims

EXTRA_POINTWISE = frozenset({
    'hardswish', 'hardswish_', 'hardsigmoid', 'hardsigmoid_', 'hardtanh', 'hardtanh_',
    'elu', 'elu_', 'selu', 'selu_', 'celu', 'celu_', 'leaky_relu', 'leaky_relu_',
    'softplus', 'mish', 'mish_', 'rrelu', 'threshold', 'threshold_', 'log_sigmoid_forward',
    'softshrink', 'hardshrink', 'relu6', 'silu_', 'gelu_', 'fill_', 'masked_fill',
    'masked_fill_', 'clamp_min', 'clamp_max',
})
_IDENTITY = frozenset({'clone', '_to_copy', 'detach', 'alias', 'contiguous', 'lift_fresh',
                       'dropout', 'feature_dropout', 'alpha_dropout', 'to', 'type_as',
                       '_conj', 'resolve_conj', 'resolve_neg', 'copy'})
_DIRECT = frozenset({'permute', 'transpose', 't', 'unsqueeze', 'expand', 'numpy_T'})
_ALONG_DIM = frozenset({'cat', 'stack', 'slice', 'select', 'split', 'split_with_sizes',
                        'unsafe_split', 'chunk', 'unbind', 'narrow', 'index_select'})
_FULL_REPLAY = frozenset({'view', '_unsafe_view', 'reshape', '_reshape_alias', 'squeeze',
                          'flatten', 'unflatten', 'pixel_shuffle', 'pixel_unshuffle',
                          'channel_shuffle', 'native_channel_shuffle', 'constant_pad_nd',
                          'flip', 'roll', 'repeat', 'index', 'movedim', 'swapaxes'})
_REDUCTION = frozenset({'mean', 'sum', 'amax', 'amin', 'max', 'min', 'var', 'std',
                        'var_mean', 'std_mean', 'prod', 'logsumexp', 'norm',
                        'linalg_vector_norm', 'argmax', 'argmin', 'nansum', 'all', 'any'})
_ALONG_DIM_KEEPSHAPE = frozenset({'_softmax', 'softmax', '_log_softmax', 'log_softmax',
                                  'cumsum', 'cumprod', 'sort', 'topk', 'cummax', 'cummin'})
_SPATIAL = re.compile(r'^(max_pool\dd|max_pool\dd_with_indices|avg_pool\dd|'
                      r'_?adaptive_avg_pool\dd|adaptive_max_pool\dd|upsample_\w+\dd|'
                      r'_upsample_\w+\dd(_aa)?|reflection_pad\dd|replication_pad\dd|'
                      r'max_unpool\dd|fractional_max_pool\dd|lp_pool\dd)$')

Rule = Callable[..., Any]


def rule_name(func: Any) -> str:
    """Return which rule of the module table applies to ATen op ``func``."""
    name = func.overloadpacket.__name__
    if torch.Tag.pointwise in func.tags or name in EXTRA_POINTWISE:
        return 'pointwise'
    for rule, names in (('identity', _IDENTITY), ('direct', _DIRECT),
                        ('along_dim', _ALONG_DIM), ('full_replay', _FULL_REPLAY),
                        ('reduction', _REDUCTION), ('keepshape', _ALONG_DIM_KEEPSHAPE)):
        if name in names:
            return rule
    if _SPATIAL.match(name):
        return 'spatial'
    if name in ('_prelu_kernel', 'prelu'):
        return 'prelu'
    if name == 'native_layer_norm':
        return 'layer_norm'
    if name == 'as_strided_':  # in place: a kernel fixing its output's memory format
        return 'restride'
    return 'block'


def dim_arg(args: tuple, kwargs: dict, pos: int, default: Any) -> Any:
    if 'dim' in kwargs:
        return kwargs['dim']
    return args[pos] if len(args) > pos else default


def replay(func: Any, args: tuple, kwargs: dict, labels: list[torch.Tensor],
           shapes: list[torch.Size], full: bool) -> Any:
    """Run the shape op ``func`` on label tensors in place of its data operand(s).

    ``args[0]`` is the data operand (a tensor, or a list of tensors for cat/stack); the
    other arguments (sizes, dims, index tensors) are passed unchanged. Labels are expanded
    fully (``full``) or only along the op's dim, so broadcast sizes never change meaning.
    """
    rank = len(shapes[0])
    if full:
        expanded = [expand_dims(lab, shp) for lab, shp in zip(labels, shapes)]
    else:
        dim = dim_arg(args, kwargs, 1, 0)
        dim = dim % rank if rank else 0
        moving = {dim} | {d for lab in labels for d in varying_dims(lab)}
        if func.overloadpacket.__name__ == 'stack':
            moving.discard(dim)
            moving = {d for d in moving if d < rank}
        expanded = [expand_dims(lab, shp, sorted(moving)) for lab, shp in zip(labels, shapes)]
    first = expanded if isinstance(args[0], (list, tuple)) else expanded[0]
    new_args = (first,) + tuple(args[1:])
    if func.overloadpacket.__name__ == 'constant_pad_nd':
        new_args = (first, args[1], 0)
        kwargs = {}
    out = func(*new_args, **kwargs)
    if isinstance(out, (list, tuple)):
        return [compress(o) for o in out]
    return compress(out)


def reduced_dims(func: Any, args: tuple, kwargs: dict, rank: int) -> tuple[list[int], bool]:
    """Dims reduced by a reduction op and whether it keeps them (``keepdim``)."""
    dims = dim_arg(args, kwargs, 1, None)
    if isinstance(dims, torch.Tensor) or (len(args) > 1 and not isinstance(
            args[1], (int, list, tuple, type(None)))):
        dims = None
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        dims = list(range(rank))
    elif isinstance(dims, int):
        dims = [dims]
    keep = kwargs.get('keepdim', args[2] if len(args) > 2 and isinstance(args[2], bool)
                      else False)
    return sorted(d % rank for d in dims) if rank else [], bool(keep)


def spatial_rank(func: Any) -> int:
    """Number of trailing spatial dims a pooling/upsampling op works on (from its name)."""
    match = re.search(r'(\d)d', func.overloadpacket.__name__)
    return int(match.group(1)) if match else 0


OP_RULES = {
    'pointwise': 'tie aligned channels of all operands (broadcasting)',
    'identity': 'labels pass unchanged',
    'direct': 'apply the same permute/transpose/unsqueeze/expand to the labels',
    'along_dim': 'replay on labels expanded along the op dim (cat offsets, split slices)',
    'full_replay': 'replay on fully expanded labels (reshape: channel -> feature blocks)',
    'reduction': 'labels of reduced dims are kept (blocked); others pass',
    'keepshape': 'labels along the op dim are kept (blocked); others pass',
    'spatial': 'labels on the trailing spatial dims are kept (blocked); others pass',
    'prelu': 'per-channel weight tied to dim 1',
    'layer_norm': 'labels on normalized dims are kept (blocked); others pass',
    'restride': 'in-place as_strided_: labels pass when it keeps the shape and every '
                'non-singleton stride (a kernel fixing its memory format); else kept',
    'block': 'labels of inputs are kept; the op is named in the summary',
}
