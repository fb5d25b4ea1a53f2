"""Where the attention heads of a module live: the layout of its Q/K/V and output weights.

Attention is head-major in every common implementation: the inner width is
``num_heads * head_dim``, and head ``h`` owns rows ``h * head_dim ... (h + 1) * head_dim``
of each of the Q, K and V projections (one block per projection when they are packed in
one weight, ``[q; k; v]``) and the same columns of the output projection. A
:class:`Slice` names one such range of one weight; an :class:`AttentionLayout` collects
them for one attention module, so the pruner (head masks) and the speedup (head removal)
read the same facts::

    layout = attention_layout(bert.encoder.layer[0].attention.self)
    layout.num_heads, layout.head_dim      # 12, 64
    layout.q.module, layout.q.axis         # 'query', 0

Detected layouts (by child names and head-count attributes, so classes copied from these
are recognized too): ``nn.MultiheadAttention``; Hugging Face BERT-style self-attention
(``query``/``key``/``value``, the output projection outside: BERT, RoBERTa, ViT, DeiT, ...,
or inside as ``dense``: ALBERT); DistilBERT (``q_lin``...``out_lin``);
``q_proj``/``k_proj``/``v_proj`` with ``out_proj``/``o_proj`` (BART, CLIP, OPT, Llama without
grouped-query attention, ...); GPT-2
(``c_attn``/``c_proj`` ``Conv1D``); a packed ``qkv`` with ``proj`` (torchvision Swin, timm).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field, replace

import torch
from torch import nn


#: Attributes that hold a module's head count (and head width), in the order looked for.
HEAD_COUNT_ATTRS = ('num_attention_heads', 'num_heads', 'n_heads', 'n_head')
HEAD_DIM_ATTRS = ('attention_head_size', 'head_dim', 'head_size')


@dataclass(frozen=True)
class Slice:
    """A head-major range of one weight: ``module`` (relative to the attention module,
    '' for itself), the parameter names, the axis the heads run along and its range."""

    module: str
    weight: str
    bias: str | None
    axis: int
    start: int
    stop: int
    #: rows from one head to the next, when Q, K and V interleave per head in one weight
    #: (GPT-NeoX: ``[q_0 k_0 v_0 q_1 ...]``, stride ``3 * head_dim``); 0: heads contiguous.
    #: ``stop - start`` is the slice's width either way.
    stride: int = 0

    def owner(self, attention: nn.Module) -> nn.Module:
        return attention.get_submodule(self.module) if self.module else attention


def head_index(s: Slice, heads, dim: int):
    """Indices along ``s.axis`` of heads ``heads`` (of width ``dim``) in slice ``s``."""
    heads = torch.as_tensor(heads, dtype=torch.long).reshape(-1, 1)
    return (s.start + heads * (s.stride or dim) + torch.arange(dim)).reshape(-1)


@dataclass
class AttentionLayout:
    """Q/K/V and output slices of one attention module, and the attributes its forward
    reads the head count and inner width from."""

    kind: str
    num_heads: int
    head_dim: int
    q: Slice
    k: Slice
    v: Slice
    out: Slice | None
    heads_attr: str | None
    width_attrs: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def inner(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_heads(self) -> int:
        """Key/value heads: fewer than ``num_heads`` in grouped-query attention (GQA/MQA),
        where query head ``h`` reads key/value head ``h // (num_heads // kv_heads)``."""
        return (self.k.stop - self.k.start) // self.head_dim

    def qualified(self, prefix: str) -> 'AttentionLayout':
        """The same layout with module names qualified by ``prefix`` (the module's name)."""
        def q(s: Slice | None) -> Slice | None:
            if s is None:
                return None
            return replace(s, module='.'.join(p for p in (prefix, s.module) if p))
        return replace(self, q=q(self.q), k=q(self.k), v=q(self.v), out=q(self.out))


def _int_attr(module: nn.Module, names: tuple[str, ...]) -> tuple[str | None, int | None]:
    for name in names:
        value = module.__dict__.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return name, value
    return None, None


def _linear(module: nn.Module, name: str) -> nn.Module | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def _is_conv1d(child: nn.Module | None) -> bool:
    # transformers' GPT-2 Conv1D: weight (in, out), y = x @ W + b; matched by name so
    # transformers need not be installed
    return child is not None and type(child).__name__ == 'Conv1D' and hasattr(child, 'nf')


def _rows(name: str, module: nn.Module, start: int, stop: int, axis: int = 0,
          weight: str = 'weight', bias: str = 'bias') -> Slice:
    has_bias = getattr(module, bias, None) is not None
    return Slice(name, weight, bias if has_bias else None, axis, start, stop)


def _heads(module: nn.Module, inner: int) -> tuple[str | None, int | None, int | None]:
    """(head-count attribute, heads, head width); a module that keeps only its head
    width (Llama: ``view(..., -1, head_dim)``) has no head-count attribute to update."""
    attr, heads = _int_attr(module, HEAD_COUNT_ATTRS)
    _, dim = _int_attr(module, HEAD_DIM_ATTRS)
    if heads is None and dim is not None and inner % dim == 0:
        return None, inner // dim, dim
    if heads is None or inner % heads:
        return None, None, None
    if dim is not None and dim * heads != inner:
        return None, None, None
    return attr, heads, inner // heads


def grouped_kv(heads: int, dim: int, kv_inner: int) -> bool:
    """Whether ``kv_inner`` key/value features are whole heads of ``dim`` that the
    ``heads`` query heads share evenly (all of them: plain multi-head attention)."""
    return kv_inner % dim == 0 and kv_inner > 0 and heads % (kv_inner // dim) == 0


def _mha(module: nn.MultiheadAttention) -> AttentionLayout | None:
    e, heads = module.embed_dim, module.num_heads
    out = _rows('out_proj', module.out_proj, 0, e, axis=1)
    out = replace(out, bias=None)
    if module._qkv_same_embed_dim:
        parts = [Slice('', 'in_proj_weight', 'in_proj_bias' if module.in_proj_bias is not None else None,
                       0, i * e, (i + 1) * e) for i in range(3)]
    else:
        bias = 'in_proj_bias' if module.in_proj_bias is not None else None
        parts = [Slice('', f'{p}_proj_weight', bias, 0, 0, e) for p in 'qkv']
    return AttentionLayout('mha', heads, e // heads, *parts, out, 'num_heads', ('embed_dim',))


def _separate(module: nn.Module, names: tuple[str, str, str], out_name: str | None,
              kind: str) -> AttentionLayout | None:
    q, k, v = (_linear(module, n) for n in names)
    if q is None or k is None or v is None:
        return None
    out = _linear(module, out_name) if out_name else None
    inner, kv_inner = q.out_features, k.out_features
    if v.out_features != kv_inner or (out_name and out is None):
        return None
    attr, heads, dim = _heads(module, inner)
    if heads is None or not grouped_kv(heads, dim, kv_inner):
        return None
    slices = [_rows(n, m, 0, w) for n, m, w in zip(names, (q, k, v), (inner, kv_inner, kv_inner))]
    out_slice = None if out is None else replace(_rows(out_name, out, 0, inner, axis=1), bias=None)
    if out is not None and out.in_features != inner:
        return None
    width = tuple(a for a in ('all_head_size', 'inner_dim') if module.__dict__.get(a) == inner)
    return AttentionLayout(kind, heads, dim, *slices, out_slice, attr, width)


def _gpt2(module: nn.Module) -> AttentionLayout | None:
    c_attn, c_proj = getattr(module, 'c_attn', None), getattr(module, 'c_proj', None)
    if not (_is_conv1d(c_attn) and _is_conv1d(c_proj)) or hasattr(module, 'q_attn'):
        return None
    inner = c_attn.weight.shape[1] // 3
    if c_attn.weight.shape[1] != 3 * inner or c_proj.weight.shape[0] != inner:
        return None
    attr, heads, dim = _heads(module, inner)
    if heads is None:
        return None
    parts = [_rows('c_attn', c_attn, i * inner, (i + 1) * inner, axis=1) for i in range(3)]
    out = replace(_rows('c_proj', c_proj, 0, inner, axis=0), bias=None)
    width = tuple(a for a in ('split_size',) if module.__dict__.get(a) == inner)
    return AttentionLayout('gpt2', heads, dim, *parts, out, attr, width)


def _packed(module: nn.Module) -> AttentionLayout | None:
    qkv, proj = _linear(module, 'qkv'), _linear(module, 'proj')
    if qkv is None or proj is None or qkv.out_features % 3:
        return None
    inner = qkv.out_features // 3
    if proj.in_features != inner:
        return None
    attr, heads, dim = _heads(module, inner)
    if heads is None:
        return None
    parts = [_rows('qkv', qkv, i * inner, (i + 1) * inner) for i in range(3)]
    out = replace(_rows('proj', proj, 0, inner, axis=1), bias=None)
    return AttentionLayout('packed', heads, dim, *parts, out, attr)


def _fused(module: nn.Module) -> AttentionLayout | None:
    """One Linear holding ``[q; k; v]`` one after the other, K and V possibly with fewer
    heads (Phi-3 ``qkv_proj``/``o_proj``; multi-query GPTBigCode ``c_attn``/``c_proj`` and
    Falcon ``query_key_value``/``dense``).
    Layouts that interleave Q, K and V per head (Bloom, Falcon, GPT-NeoX, GPTBigCode
    without ``multi_query``) are not this one, and are not recognized."""
    for fused_name, out_name in (('qkv_proj', 'o_proj'), ('c_attn', 'c_proj'),
                                 ('query_key_value', 'dense')):
        fused, out = _linear(module, fused_name), _linear(module, out_name)
        if fused is not None and out is not None:
            break
    else:
        return None
    flags = module.__dict__
    if hasattr(module, 'q_attn') or flags.get('new_decoder_architecture') or _takes_alibi(module):
        return None  # ALiBi slopes are built per head count for the whole model (Bloom)
    inner = out.in_features
    if fused_name != 'qkv_proj' and flags.get('multi_query') is not True:
        return _interleaved(module, fused_name, fused, out_name, out)
    kv_inner, odd = divmod(fused.out_features - inner, 2)
    attr, heads, dim = _heads(module, inner)
    if odd or heads is None or not grouped_kv(heads, dim, kv_inner):
        return None
    parts = [_rows(fused_name, fused, a, b) for a, b in
             ((0, inner), (inner, inner + kv_inner), (inner + kv_inner, inner + 2 * kv_inner))]
    out_slice = replace(_rows(out_name, out, 0, inner, axis=1), bias=None)
    # what the forward splits the fused output by (GPTBigCode: embed_dim, split_size)
    width = tuple(a for a in ('embed_dim', 'split_size') if module.__dict__.get(a) == inner)
    extra = {'config_heads': True}  # Phi-3 reads config.num_attention_heads in forward
    return AttentionLayout('proj', heads, dim, *parts, out_slice, attr, width, extra)


def _takes_alibi(module: nn.Module) -> bool:
    """Whether the forward adds ALiBi biases: the config says so where it has the switch
    (Falcon takes an ``alibi`` argument it may not use); else the argument is there (Bloom)."""
    config = module.__dict__.get('config')
    if hasattr(config, 'alibi'):
        return bool(config.alibi)
    try:
        return 'alibi' in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _interleaved(module: nn.Module, fused_name: str, fused: nn.Linear, out_name: str,
                 out: nn.Linear) -> AttentionLayout | None:
    """Q, K and V interleaved per head in one weight, ``[q_0 k_0 v_0 q_1 k_1 v_1 ...]``
    (GPT-NeoX ``query_key_value``, GPTBigCode and Falcon without multi-query)."""
    inner = out.in_features
    if fused.out_features != 3 * inner:
        return None
    attr, heads, dim = _heads(module, inner)
    if heads is None:
        return None
    parts = [replace(_rows(fused_name, fused, i * dim, i * dim + inner), stride=3 * dim)
             for i in range(3)]
    out_slice = replace(_rows(out_name, out, 0, inner, axis=1), bias=None)
    width = tuple(a for a in ('embed_dim', 'split_size') if module.__dict__.get(a) == inner)
    return AttentionLayout('proj', heads, dim, *parts, out_slice, attr, width)


_SEPARATE = ((('query', 'key', 'value'), None, 'bert'),
             (('query', 'key', 'value'), 'dense', 'proj'),  # ALBERT: projection inside
             (('q_lin', 'k_lin', 'v_lin'), 'out_lin', 'distilbert'),
             (('q_proj', 'k_proj', 'v_proj'), 'out_proj', 'proj'),
             (('q_proj', 'k_proj', 'v_proj'), 'o_proj', 'proj'),
             (('q_proj', 'k_proj', 'v_proj'), 'dense', 'proj'),  # Phi
             (('query_proj', 'key_proj', 'value_proj'), None, 'bert'),  # DeBERTa-v2
             (('q', 'k', 'v'), 'o', 'proj'))  # T5


def takes_position_bias(module: nn.Module) -> bool:
    """Whether the forward takes a per-head ``position_bias`` from outside: T5 passes the
    first layer's bias (and its zero bias for cross-attention) on to every later layer,
    so all layers in one role must keep the same heads."""
    try:
        return 'position_bias' in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def _relative_heads(module: nn.Module) -> bool:
    return hasattr(module, 'relative_attention_bias') or hasattr(module, 'has_relative_attention_bias')


def _shared_bias(module: nn.Module, found: AttentionLayout) -> AttentionLayout | None:
    """``found``, marked ``shared_bias`` when the forward takes a per-head position bias;
    None when that bias comes from a module outside the attention (MPNet's encoder holds
    its ``relative_attention_bias``), whose columns the speedup cannot reach."""
    if not takes_position_bias(module):
        return found
    if not _relative_heads(module):
        return None
    found.extra['shared_bias'] = True
    return found


def _other_projections(module: nn.Module, names: tuple[str, ...]) -> list[str]:
    return [n for n, c in module.named_children() if isinstance(c, nn.Linear) and n not in names]


def attention_layout(module: nn.Module) -> AttentionLayout | None:
    """The head layout of ``module`` if it is an attention module prunus knows, else None."""
    if isinstance(module, nn.MultiheadAttention):
        return _mha(module)
    for names, out, kind in _SEPARATE:
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
            if out is None and any(isinstance(getattr(module, o, None), nn.Linear)
                                   for o in ('out_proj', 'o_proj', 'dense', 'out_lin')):
                continue
            if _other_projections(module, names + ((out,) if out else ())):
                continue  # more projections (Longformer's global Q/K/V, ConvBERT's convolution)
            found = _separate(module, names, out, kind)
            if found is not None:
                return _shared_bias(module, found)
    return _gpt2(module) or _packed(module) or _fused(module)
