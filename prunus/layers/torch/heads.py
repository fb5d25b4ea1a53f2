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

from dataclasses import dataclass, field, replace

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

    def owner(self, attention: nn.Module) -> nn.Module:
        return attention.get_submodule(self.module) if self.module else attention


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
    inner = q.out_features
    if k.out_features != inner or v.out_features != inner or (out_name and out is None):
        return None  # grouped-query attention (fewer K/V heads) is not a plain layout
    attr, heads, dim = _heads(module, inner)
    if heads is None:
        return None
    slices = [_rows(n, m, 0, inner) for n, m in zip(names, (q, k, v))]
    out_slice = None if out is None else replace(_rows(out_name, out, 0, inner, axis=1), bias=None)
    if out is not None and out.in_features != inner:
        return None
    width = tuple(a for a in ('all_head_size',) if module.__dict__.get(a) == inner)
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


_SEPARATE = ((('query', 'key', 'value'), None, 'bert'),
             (('query', 'key', 'value'), 'dense', 'proj'),  # ALBERT: projection inside
             (('q_lin', 'k_lin', 'v_lin'), 'out_lin', 'distilbert'),
             (('q_proj', 'k_proj', 'v_proj'), 'out_proj', 'proj'),
             (('q_proj', 'k_proj', 'v_proj'), 'o_proj', 'proj'))
# not (q, k, v, o): MPNet and T5 add a per-head position bias computed once per model and
# passed to every layer, which cannot lose one layer's heads


def _relative_heads(module: nn.Module) -> bool:
    return hasattr(module, 'relative_attention_bias') or hasattr(module, 'has_relative_attention_bias')


def attention_layout(module: nn.Module) -> AttentionLayout | None:
    """The head layout of ``module`` if it is an attention module prunus knows, else None."""
    if isinstance(module, nn.MultiheadAttention):
        return _mha(module)
    for names, out, kind in _SEPARATE:
        if all(isinstance(getattr(module, n, None), nn.Linear) for n in names):
            if out is None and any(isinstance(getattr(module, o, None), nn.Linear)
                                   for o in ('out_proj', 'o_proj', 'dense', 'out_lin')):
                continue
            if _relative_heads(module):
                return None  # per-head position biases shared across layers (T5)
            found = _separate(module, names, out, kind)
            if found is not None:
                return found
    return _gpt2(module) or _packed(module)
