"""Modules that stand in for ones that cannot hold fewer heads or channels exactly.

* :class:`PrunedMultiheadAttention` stands in for ``nn.MultiheadAttention``, whose inner,
  input and output widths are all ``embed_dim``: same call signature and results, separate
  Q/K/V weights of any width, the original softmax scale.
* :class:`KeptChannelLayerNorm` normalizes over the channels it keeps only, so a masked
  residual stream computes what the narrower one does (``prune_hidden_width``).
* torchvision's ``shifted_window_attention`` derives the head width from its input
  (``C // num_heads``) and reshapes the heads' output back to ``C`` channels, so a Swin
  attention that lost heads becomes a :class:`HeadPrunedShiftedWindowAttention` (a
  subclass, same parameters and buffers, its head width an attribute): the same windows,
  shift mask, relative position bias and scale, for any number of heads.

The pruner also runs them while it collects statistics: their output projection is called
as a module, so hooks see its input (the originals use its weight directly).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

try:
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2
except ImportError:  # torchvision is optional
    ShiftedWindowAttention = ShiftedWindowAttentionV2 = None

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
    def from_mha(cls, mha: nn.MultiheadAttention, share: bool = False) -> 'PrunedMultiheadAttention':
        """The equivalent of ``mha``; ``share``: its output projection is ``mha.out_proj``
        itself (a temporary stand-in), else a plain Linear with the same parameters."""
        if mha._qkv_same_embed_dim:
            ws = mha.in_proj_weight.chunk(3)
        else:
            ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        bs = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)
        like_w = mha.in_proj_weight if mha._qkv_same_embed_dim else mha.q_proj_weight
        out = mha.out_proj
        if not share:
            out = nn.Linear(1, 1, bias=mha.out_proj.bias is not None)
            out.weight, out.bias = mha.out_proj.weight, mha.out_proj.bias
            out.in_features, out.out_features = mha.out_proj.in_features, mha.out_proj.out_features
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


def _shift_mask(pad_h: int, pad_w: int, window: list[int], shift: list[int], device) -> torch.Tensor:
    """(windows, N, N): -100 between tokens from different regions of a shifted window."""
    region = torch.zeros(pad_h, pad_w, device=device)
    count = 0
    for h in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
        for w in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
            region[h[0]:h[1], w[0]:w[1]] = count
            count += 1
    region = region.view(pad_h // window[0], window[0], pad_w // window[1], window[1])
    region = region.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])
    diff = region.unsqueeze(1) - region.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0)


def window_attention(module: nn.Module, x: torch.Tensor, bias: torch.Tensor,
                     logit_scale: torch.Tensor | None) -> torch.Tensor:
    """Shifted-window attention of ``module`` on ``x`` (B, H, W, C) with
    ``module.num_heads`` heads of ``module.head_dim``."""
    b, h, w, c = x.shape
    win, heads, dim = module.window_size, module.num_heads, module.head_dim
    pad_r, pad_b = (win[1] - w % win[1]) % win[1], (win[0] - h % win[0]) % win[0]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    _, ph, pw, _ = x.shape
    shift = [0 if win[0] >= ph else module.shift_size[0], 0 if win[1] >= pw else module.shift_size[1]]
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = (ph // win[0]) * (pw // win[1])
    x = x.view(b, ph // win[0], win[0], pw // win[1], win[1], c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b * windows, win[0] * win[1], c)
    qkv_bias = module.qkv.bias
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        third = qkv_bias.numel() // 3
        qkv_bias[third:2 * third] = 0  # Swin V2 has no key bias
    qkv = F.linear(x, module.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(x.size(0), x.size(1), 3, heads, dim).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * module.scale) @ k.transpose(-2, -1)
    attn = attn + bias
    if sum(shift) > 0:
        n = x.size(1)
        mask = _shift_mask(ph, pw, win, shift, x.device)
        attn = attn.view(x.size(0) // windows, windows, heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    attn = F.dropout(F.softmax(attn, dim=-1), p=module.attention_dropout, training=module.training)
    x = (attn @ v).transpose(1, 2).reshape(x.size(0), x.size(1), heads * dim)
    x = F.dropout(module.proj(x), p=module.dropout, training=module.training)
    out = x.shape[-1]
    x = x.view(b, ph // win[0], pw // win[1], win[0], win[1], out)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, ph, pw, out)
    if sum(shift) > 0:
        x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
    return x[:, :h, :w, :].contiguous()


if ShiftedWindowAttention is not None:
    class HeadPrunedShiftedWindowAttention(ShiftedWindowAttention):
        """Swin (V1) window attention with ``head_dim`` and ``scale`` as attributes."""

        def forward(self, x):
            return window_attention(self, x, self.get_relative_position_bias(), None)

    class HeadPrunedShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
        """Swin V2 window attention with ``head_dim`` as an attribute."""

        def forward(self, x):
            return window_attention(self, x, self.get_relative_position_bias(), self.logit_scale)

    _PRUNED = {ShiftedWindowAttention: HeadPrunedShiftedWindowAttention,
               ShiftedWindowAttentionV2: HeadPrunedShiftedWindowAttentionV2}
else:
    HeadPrunedShiftedWindowAttention = HeadPrunedShiftedWindowAttentionV2 = None
    _PRUNED = {}


def to_head_pruned(module: nn.Module, head_dim: int) -> None:
    """Turns a torchvision Swin attention into its head-pruned class, in place (the
    original's forward cannot run with fewer heads); other modules are left as they are."""
    cls = _PRUNED.get(type(module))
    if cls is None:
        return
    module.head_dim = head_dim
    module.scale = head_dim ** -0.5
    module.__class__ = cls


def per_head_params(module: nn.Module) -> list[tuple[nn.Module, str, int]]:
    """(owner, parameter, axis) of the per-head tensors besides Q/K/V and the output:
    Swin's relative position bias table (or V2's bias MLP output and logit scale)."""
    found = []
    heads = getattr(module, 'num_heads', None)
    table = getattr(module, 'relative_position_bias_table', None)
    if isinstance(table, torch.Tensor) and table.dim() == 2 and table.shape[1] == heads:
        found.append((module, 'relative_position_bias_table', 1))
    scale = getattr(module, 'logit_scale', None)
    if isinstance(scale, torch.Tensor) and scale.dim() >= 1 and scale.shape[0] == heads:
        found.append((module, 'logit_scale', 0))
    mlp = getattr(module, 'cpb_mlp', None)
    if isinstance(mlp, nn.Sequential) and isinstance(mlp[-1], nn.Linear) and mlp[-1].out_features == heads:
        found.append((mlp[-1], 'weight', 0))
        if mlp[-1].bias is not None:
            found.append((mlp[-1], 'bias', 0))
    return found


class KeptChannelLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last dim whose statistics use only the channels where the
    buffer ``keep`` is True; the other channels output zero.

    Example::

        norm = KeptChannelLayerNorm(8)
        norm.register_buffer('keep', torch.ones(8, dtype=torch.bool))
        norm.keep[6:] = False            # channels 6 and 7 output 0, the rest are normalized alone
        y = norm(torch.randn(2, 8))
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.keep
        if bool(keep.all()):
            return super().forward(x)
        idx = keep.nonzero().flatten()
        weight = None if self.weight is None else self.weight.index_select(0, idx)
        bias = None if self.bias is None else self.bias.index_select(0, idx)
        y = F.layer_norm(x.index_select(-1, idx), (len(idx),), weight, bias, self.eps)
        return x.new_zeros(x.shape).index_copy(-1, idx, y)
