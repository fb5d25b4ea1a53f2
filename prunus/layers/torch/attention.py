"""Speedup handlers for attention modules: whole heads removed, attributes updated.

An attention module whose head layout :func:`~prunus.layers.torch.heads.attention_layout`
knows is handled as one layer (the tracer does not look inside it), in one of two ways:

* *open* (Hugging Face BERT-style self-attention, whose output projection is a separate
  module: BERT, RoBERTa, ViT, DeiT, ...): its output channels are the heads' channels,
  removable in whole heads only (a head goes when its V rows and biases are zero, as
  ``TransformerHeadPruner`` masks them), so the planner removes them and the next Linear's
  input columns together;
* *closed* (DistilBERT, GPT-2, ``q_proj``...``out_proj`` models, timm/torchvision packed
  ``qkv``/``proj``): the output projection is inside, so the module removes its dead heads
  itself (V rows and bias zero, or the output projection's columns zero: either way the
  head adds nothing) and its outputs are the output projection's.

Both shrink their input features too (the Q/K/V columns), when Q, K and V read the
same tensor, and update the head count and width attributes the forward reads
(``num_attention_heads``/``all_head_size``, ``n_heads``, ``num_heads``, ``split_size``...).
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from prunus.layers.torch.heads import HEAD_DIM_ATTRS, AttentionLayout, Slice, attention_layout, head_index
from prunus.layers.torch.gqa import gqa_keep, group_size, slice_heads, update_kv_attrs
from prunus.layers.torch.handlers import DETECTORS, Handler
from prunus.layers.torch.handlers import add_bias as _add_bias, replace_tensor as _set, take as _take
from prunus.layers.torch.modules import per_head_params, to_head_pruned



def _is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == 'Conv1D' and hasattr(module, 'nf')


def _rows(s: Slice, heads: torch.Tensor, dim: int) -> torch.Tensor:
    return head_index(s, heads, dim)


def _refresh(module: nn.Module) -> None:
    """Bring a projection's size attributes in line with its new weight."""
    w = module.weight
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif _is_conv1d(module):
        module.nf = w.shape[1]
        if hasattr(module, 'nx'):
            module.nx = w.shape[0]


def _group(slices: list[Slice]) -> dict[tuple[str, str], list[Slice]]:
    """Slices by the weight they index (a packed qkv is three slices of one weight)."""
    by: dict[tuple[str, str], list[Slice]] = {}
    for s in slices:
        by.setdefault((s.module, s.weight), []).append(s)
    return by


def _projections(module: nn.Module, lay: AttentionLayout) -> list[tuple[nn.Module, list[Slice]]]:
    return [(lay.q.owner(module) if not key[0] else module.get_submodule(key[0]), group)
            for key, group in _group([lay.q, lay.k, lay.v]).items()]


def _bias_embedding(module: nn.Module, lay: AttentionLayout, keep: torch.Tensor) -> None:
    """Per-head position biases inside the attention: T5's ``relative_attention_bias``
    (an Embedding, one column per head), a child's ``relative_position_bias_table``
    (Hugging Face Swin's ``relative_position_bias``)."""
    emb = getattr(module, 'relative_attention_bias', None)
    if isinstance(emb, nn.Embedding) and emb.embedding_dim == lay.num_heads:
        _set(emb, 'weight', _take(emb.weight.data, 1, keep))
        emb.embedding_dim = len(keep)
    for child in module.children():
        table = getattr(child, 'relative_position_bias_table', None)
        if isinstance(table, torch.Tensor) and table.dim() == 2 and table.shape[1] == lay.num_heads:
            _set(child, 'relative_position_bias_table', _take(table.data, 1, keep))


def _keep_rows(module: nn.Module, owner: nn.Module, s: Slice, index: torch.Tensor) -> None:
    """Keeps rows ``index`` (along ``s.axis``) of a projection's weight and its bias."""
    _set(owner, s.weight, _take(getattr(owner, s.weight).data, s.axis, index))
    if s.bias is not None and getattr(owner, s.bias) is not None:
        _set(owner, s.bias, _take(getattr(owner, s.bias).data, 0, index))
    if owner is not module:
        _refresh(owner)


def _keep_out_columns(module: nn.Module, out: Slice, index: torch.Tensor) -> None:
    """Keeps inputs ``index`` of the output projection (its bias is no head's)."""
    owner = out.owner(module)
    _set(owner, out.weight, _take(getattr(owner, out.weight).data, out.axis, index))
    _refresh(owner)


def remove_heads(module: nn.Module, lay: AttentionLayout, keep: torch.Tensor) -> None:
    """Keep only heads ``keep`` (sorted indices): Q/K/V rows, output columns, attributes."""
    dim = lay.head_dim
    for owner, pname, axis in per_head_params(module):
        _set(owner, pname, _take(getattr(owner, pname).data, axis, keep))
        if owner is not module:
            _refresh(owner)
    _bias_embedding(module, lay, keep)
    to_head_pruned(module, dim)
    which = {id(lay.q): 'q', id(lay.k): 'k', id(lay.v): 'v'}
    for owner, slices in _projections(module, lay):
        index = torch.cat([_rows(s, slice_heads(lay, which[id(s)], keep), dim)
                           for s in slices]).sort().values  # interleaved slices: in weight order
        _keep_rows(module, owner, slices[0], index)
    if lay.out is not None:
        _keep_out_columns(module, lay.out, _rows(lay.out, keep, dim))
    update_kv_attrs(module, lay, keep)  # Falcon keeps num_kv_heads == num_heads without GQA
    if lay.heads_attr:
        setattr(module, lay.heads_attr, len(keep))
    for attr in lay.width_attrs:
        setattr(module, attr, len(keep) * dim)


def _zero_blocks(t: torch.Tensor, axis: int, s: Slice, heads: int, dim: int) -> torch.Tensor:
    index = head_index(s, torch.arange(heads), dim).to(t.device)
    part = t.detach().movedim(axis, 0).index_select(0, index).reshape(heads, -1)
    return (part == 0).all(1).cpu()


def dead_heads(module: nn.Module, lay: AttentionLayout) -> torch.Tensor:
    """Bool per head: it adds nothing to the output (V rows and bias zero, or its output
    projection columns zero)."""
    h, dim, v = lay.num_heads, lay.head_dim, lay.v
    owner = v.owner(module)
    dead = _zero_blocks(getattr(owner, v.weight), v.axis, v, lay.kv_heads, dim)
    if v.bias is not None and getattr(owner, v.bias) is not None:
        dead &= _zero_blocks(getattr(owner, v.bias), 0, v, lay.kv_heads, dim)
    dead = dead.repeat_interleave(group_size(lay))  # a shared V head: all its query heads
    if lay.out is not None:
        out = lay.out.owner(module)
        dead |= _zero_blocks(getattr(out, lay.out.weight), lay.out.axis, replace(lay.out, start=0), h, dim)
    return dead


def _zero_rows(module: nn.Module, s: Slice, heads: int, dim: int, with_bias: bool = True
               ) -> torch.Tensor:
    """(heads, dim) bool: that row (column) of the slice is zero, bias included."""
    owner = s.owner(module)
    t = getattr(owner, s.weight).detach().movedim(s.axis, 0)[s.start:s.start + heads * dim]
    zero = (t.reshape(heads * dim, -1) == 0).all(1)
    if with_bias and s.bias is not None and getattr(owner, s.bias) is not None:
        zero &= getattr(owner, s.bias).detach()[s.start:s.start + heads * dim] == 0
    return zero.reshape(heads, dim).cpu()


def dead_dims(module: nn.Module, lay: AttentionLayout, value_side: bool = True) -> torch.Tensor:
    """(heads, dim) bool: head dimension j of head h adds nothing to the scores (its Q or
    K row is zero) nor, with ``value_side``, to the output (its V row or output column)."""
    h, d = lay.num_heads, lay.head_dim
    dead = _zero_rows(module, lay.q, h, d) | _zero_rows(module, lay.k, h, d)
    if value_side:
        v = _zero_rows(module, lay.v, h, d)
        if lay.out is not None:
            v |= _zero_rows(module, lay.out, h, d, with_bias=False)
        dead &= v
    return dead


def uniform_dims(dead: torch.Tensor) -> bool:
    """Every head loses the same number of dimensions, and not all of them."""
    counts = dead.sum(1)
    return bool((counts == counts[0]).all()) and 0 < int(counts[0]) < dead.shape[1]


def remove_dims(module: nn.Module, lay: AttentionLayout, keep: torch.Tensor) -> None:
    """Keep head dimensions ``keep`` (heads, new_dim) of every head; the softmax scale,
    an attribute of the module, stays that of the original width."""
    h, d, new = lay.num_heads, lay.head_dim, keep.shape[1]
    flat = (torch.arange(h).unsqueeze(1) * d + keep).reshape(-1)
    for owner, slices in _projections(module, lay):
        index = torch.cat([s.start + flat for s in sorted(slices, key=lambda s: s.start)])
        _keep_rows(module, owner, slices[0], index)
    if lay.out is not None:
        _keep_out_columns(module, lay.out, flat)
    for attr in HEAD_DIM_ATTRS:
        if module.__dict__.get(attr) == d:
            setattr(module, attr, new)
    for attr in lay.width_attrs:
        setattr(module, attr, h * new)


class _AttentionBase(Handler):
    """What open and closed attention share: the Q/K/V input side."""

    in_dim = -1
    out_dim = -1
    #: Q, K and V must read one tensor for the input features to be removable.
    single_input = True
    kinds: tuple[str, ...] = ()

    def layout(self, module: nn.Module) -> AttentionLayout:
        lay = attention_layout(module)
        if lay is None:
            raise NotImplementedError(f'{type(module).__name__} no longer has a known head layout')
        return lay

    def handles(self, module):
        lay = attention_layout(module)
        return lay is not None and lay.kind in self.kinds

    def head_count(self, module) -> int:
        return self.layout(module).num_heads

    def count_in(self, module):
        lay = self.layout(module)
        w = getattr(lay.q.owner(module), lay.q.weight)
        return w.shape[1 - lay.q.axis]

    def prune_in(self, module, keep):
        lay = self.layout(module)
        # Swin derives its head width from the input width: narrower input, same heads
        to_head_pruned(module, lay.head_dim)
        for owner, slices in _projections(module, lay):
            name = slices[0].weight
            _set(owner, name, _take(getattr(owner, name).data, 1 - slices[0].axis, keep))
            _refresh(owner)

    def can_fold(self, module, values):
        return True

    def fold_in(self, module, removed, values):
        if not bool(values.any()):
            return
        for owner, slices in _projections(module, self.layout(module)):
            w = getattr(owner, slices[0].weight).data
            vals = values.to(w.device, w.dtype)
            idx = removed.to(w.device)
            extra = w[:, idx] @ vals if slices[0].axis == 0 else vals @ w[idx, :]
            _add_bias(owner, extra)


def _weightless(module: nn.Module, lay: AttentionLayout) -> bool:
    """Whether V's weight holds no data (the structure trace runs on meta copies): the
    head-dimension mode, which reads zeros, is then left undecided (whole heads)."""
    return getattr(lay.v.owner(module), lay.v.weight).is_meta


class OpenAttentionHandler(_AttentionBase):
    """Attention whose output is the heads' concatenation (the projection is outside)."""

    kinds = ('bert',)

    def count_out(self, module):
        return self.layout(module).inner

    def _dims(self, module, lay):
        """Head-dimension mode: (heads, dim) removable dims, when no head goes whole and
        every head loses the same number (Q or K row and the V row zero)."""
        if bool(dead_heads(module, lay).any()):
            return None
        dead = dead_dims(module, lay, value_side=False)
        dead &= _zero_rows(module, lay.v, lay.num_heads, lay.head_dim, with_bias=False)
        return dead if uniform_dims(dead) else None

    def groups(self, module):
        lay = self.layout(module)
        return self.count_in(module), lay.num_heads, _weightless(module, lay) or self._dims(module, lay) is None

    def dead_out(self, module):
        lay = self.layout(module)
        dims = self._dims(module, lay)
        if dims is not None:
            return dims.reshape(-1)
        return dead_heads(module, lay).repeat_interleave(lay.head_dim)

    def prune_out(self, module, keep):
        lay = self.layout(module)
        heads = torch.unique(keep // lay.head_dim)
        per_head = keep.view(len(heads), -1) if len(keep) % len(heads) == 0 else None
        if len(heads) == lay.num_heads and per_head is not None and per_head.shape[1] < lay.head_dim:
            remove_dims(module, lay, per_head % lay.head_dim)
        else:
            remove_heads(module, lay, heads)


class ClosedAttentionHandler(_AttentionBase):
    """Attention with its output projection inside: heads are removed internally."""

    kinds = ('distilbert', 'proj', 'gpt2', 'packed')

    def _out(self, module):
        lay = self.layout(module)
        return lay.out.owner(module), lay.out.axis

    def count_out(self, module):
        out, axis = self._out(module)
        return out.weight.shape[1 - axis]

    def dead_out(self, module):
        out, axis = self._out(module)
        w = out.weight.data.movedim(1 - axis, 0).flatten(1)
        return ((w == 0).all(1)).cpu()

    def prune_out(self, module, keep):
        out, axis = self._out(module)
        _set(out, 'weight', _take(out.weight.data, 1 - axis, keep))
        if out.bias is not None:
            _set(out, 'bias', _take(out.bias.data, 0, keep))
        _refresh(out)

    def prune_inner(self, module: nn.Module, plan: object) -> nn.Module:
        """Removes the dead heads inside; returns the module (or a replacement)."""
        lay = self.layout(module)
        dead = dead_heads(module, lay)
        if lay.kv_heads != lay.num_heads:
            keep = gqa_keep(dead, lay)
            if len(keep) < lay.num_heads:
                remove_heads(module, lay, keep)
            return module  # head dimensions of shared K/V heads: not removed
        if bool(dead.all()):
            dead[0] = False  # a module needs one head; a dead one adds nothing anyway
        if bool(dead.any()):
            remove_heads(module, lay, (~dead).nonzero().flatten())
            return module
        dims = dead_dims(module, lay) if not lay.q.stride else None  # dims: contiguous heads
        if dims is not None and uniform_dims(dims):
            remove_dims(module, lay, (~dims).nonzero()[:, 1].view(lay.num_heads, -1))
        return module


OPEN, CLOSED = OpenAttentionHandler(), ClosedAttentionHandler()
#: The built-in detected handlers (they replace tensors, never write into them).
DETECTED = (OPEN, CLOSED)


def detect_attention(module: nn.Module) -> Handler | None:
    """The attention handler for ``module`` if its head layout is known."""
    for handler in (OPEN, CLOSED):
        if handler.handles(module):
            return handler
    return None


DETECTORS.append(detect_attention)
