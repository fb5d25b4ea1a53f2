"""nn.MultiheadAttention through the speedup: heads and input features removed.

``nn.MultiheadAttention`` cannot hold fewer heads than its ``embed_dim`` implies (its
inner width, input width and output width are all ``embed_dim``), so a speedup that
removes heads or input features replaces it with :class:`PrunedMultiheadAttention`:
the same call signature and results, separate Q/K/V weights of any width, and the
original softmax scale. The summary lists the replaced modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunus.compression.torch.heads import AttentionLayout, Slice, attention_layout
from prunus.speedup.attention import ClosedAttentionHandler, dead_heads, remove_heads
from prunus.speedup.handlers import HANDLERS

__all__ = ['PrunedMultiheadAttention', 'MultiheadAttentionHandler']


def _param(t: torch.Tensor | None, like: nn.Parameter | None) -> nn.Parameter | None:
    if t is None:
        return None
    return nn.Parameter(t.detach().clone(), like.requires_grad if like is not None else True)


class PrunedMultiheadAttention(nn.Module):
    """Multi-head attention with ``num_heads`` heads of ``head_dim`` and any input widths,
    called like ``nn.MultiheadAttention``; built from one by :meth:`from_mha`.

    Attributes ``embed_dim`` (output width), ``num_heads``, ``head_dim``, ``batch_first``
    and ``scaling`` are what the forward reads; ``_qkv_same_embed_dim`` is False so the
    fused encoder-layer fast path, which expects a plain nn.MultiheadAttention, is not taken.
    """

    _qkv_same_embed_dim = False
    in_proj_weight = None
    in_proj_bias = None

    def __init__(self, q_proj_weight, k_proj_weight, v_proj_weight, q_bias, k_bias, v_bias,
                 out_proj: nn.Linear, num_heads: int, head_dim: int, scaling: float,
                 dropout: float, batch_first: bool):
        super().__init__()
        self.q_proj_weight, self.k_proj_weight, self.v_proj_weight = q_proj_weight, k_proj_weight, v_proj_weight
        self.q_bias, self.k_bias, self.v_bias = q_bias, k_bias, v_bias
        self.out_proj = out_proj
        self.num_heads, self.head_dim, self.scaling = num_heads, head_dim, scaling
        self.dropout, self.batch_first = dropout, batch_first
        self.embed_dim = out_proj.out_features

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> 'PrunedMultiheadAttention':
        e = mha.embed_dim
        if mha._qkv_same_embed_dim:
            ws = mha.in_proj_weight.chunk(3)
        else:
            ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        bs = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        like_w = mha.in_proj_weight if mha._qkv_same_embed_dim else mha.q_proj_weight
        out = nn.Linear(e, e, bias=mha.out_proj.bias is not None,
                        device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
        out.weight = mha.out_proj.weight
        out.bias = mha.out_proj.bias
        return cls(*(_param(w, like_w) for w in ws), *(_param(b, mha.in_proj_bias) for b in bs),
                   out, mha.num_heads, mha.head_dim, float(mha.head_dim) ** -0.5, mha.dropout,
                   mha.batch_first)

    def _mask(self, attn_mask, key_padding_mask, is_causal, batch, q_len, s_len, dtype, device):
        """One additive float mask (batch, heads or 1, q_len, s_len), or None."""
        mask = None
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(q_len, s_len, dtype=torch.bool, device=device).triu(1)
        if attn_mask is not None:
            m = attn_mask
            if m.dtype == torch.bool:
                m = torch.zeros_like(m, dtype=dtype).masked_fill(m, float('-inf'))
            m = m.to(dtype)
            mask = m.view(batch, -1, q_len, s_len) if m.dim() == 3 else m.view(1, 1, q_len, s_len)
        if key_padding_mask is not None:
            k = key_padding_mask
            if k.dtype == torch.bool:
                k = torch.zeros_like(k, dtype=dtype).masked_fill(k, float('-inf'))
            k = k.to(dtype).view(batch, 1, 1, s_len)
            mask = k if mask is None else mask + k
        return mask

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if self.batch_first and not unbatched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q_len, batch, _ = query.shape
        s_len = key.shape[0]
        h, d = self.num_heads, self.head_dim

        def heads(x, w, b):  # (L, N, E) -> (N, H, L, D)
            return F.linear(x, w, b).view(x.shape[0], batch, h, d).permute(1, 2, 0, 3)

        q = heads(query, self.q_proj_weight, self.q_bias)
        k = heads(key, self.k_proj_weight, self.k_bias)
        v = heads(value, self.v_proj_weight, self.v_bias)
        mask = self._mask(attn_mask, key_padding_mask, is_causal, batch, q_len, s_len, q.dtype, q.device)
        p = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * self.scaling) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            probs = torch.softmax(scores, dim=-1)
            weights = probs.mean(1) if average_attn_weights else probs
            ctx = F.dropout(probs, p) @ v
        else:
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 scale=self.scaling)
        out = self.out_proj(ctx.permute(2, 0, 1, 3).reshape(q_len, batch, h * d))
        if self.batch_first and not unbatched:
            out = out.transpose(0, 1)
        if unbatched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        return out, weights


class MultiheadAttentionHandler(ClosedAttentionHandler):
    """nn.MultiheadAttention (and PrunedMultiheadAttention): dead heads and removed input
    features replace it with an equivalent PrunedMultiheadAttention."""

    kinds = ('mha',)
    replaced: list[str]

    def keeps_all(self, module):
        """bias_k/bias_v and add_zero_attn change the keys; those stay as they are."""
        return isinstance(module, nn.MultiheadAttention) and (
            module.bias_k is not None or module.add_zero_attn)

    def handles(self, module):
        return isinstance(module, (nn.MultiheadAttention, PrunedMultiheadAttention))

    def layout(self, module):
        if isinstance(module, PrunedMultiheadAttention):
            return _pruned_layout(module)
        return attention_layout(module)

    def prune_in(self, module, keep):
        module = self._as_pruned(module)
        for name in ('q_proj_weight', 'k_proj_weight', 'v_proj_weight'):
            w = getattr(module, name)
            setattr(module, name, nn.Parameter(w.data.index_select(1, keep.to(w.device)),
                                               w.requires_grad))

    def fold_in(self, module, removed, values):
        if not bool(values.any()):
            return
        module = self._as_pruned(module)
        for w_name, b_name in (('q_proj_weight', 'q_bias'), ('k_proj_weight', 'k_bias'),
                               ('v_proj_weight', 'v_bias')):
            w = getattr(module, w_name).data
            extra = w[:, removed.to(w.device)] @ values.to(w.device, w.dtype)
            b = getattr(module, b_name)
            setattr(module, b_name, nn.Parameter(extra if b is None else b.data + extra))

    def _as_pruned(self, module):
        if not isinstance(module, PrunedMultiheadAttention):
            raise NotImplementedError('nn.MultiheadAttention must be replaced before its '
                                      'input features are removed')
        return module

    def prune_inner(self, module, plan):
        if self.keeps_all(module):
            return module
        dead = dead_heads(module, self.layout(module))
        if bool(dead.all()):
            dead[0] = False
        shrinks = any(keep is not None and len(keep) < n for keep, n in (
            (plan.keep_in, self.count_in(module)), (plan.keep_out, self.count_out(module))))
        if not bool(dead.any()) and not shrinks and plan.fold_idx is None:
            return module  # nothing changes: the user's module stays
        if isinstance(module, nn.MultiheadAttention):
            module = PrunedMultiheadAttention.from_mha(module)
        if bool(dead.any()):
            remove_heads(module, self.layout(module), (~dead).nonzero().flatten())
        return module

    def prune_out(self, module, keep):
        super().prune_out(module, keep)
        module.embed_dim = len(keep)


def _pruned_layout(module: PrunedMultiheadAttention) -> AttentionLayout:
    inner = module.num_heads * module.head_dim
    parts = [Slice('', f'{p}_proj_weight', f'{p}_bias' if getattr(module, f'{p}_bias') is not None
                   else None, 0, 0, inner) for p in 'qkv']
    out = Slice('out_proj', 'weight', None, 1, 0, inner)
    return AttentionLayout('mha', module.num_heads, module.head_dim, *parts, out, 'num_heads')


MHA = MultiheadAttentionHandler()
HANDLERS[nn.MultiheadAttention] = MHA
HANDLERS[PrunedMultiheadAttention] = MHA
