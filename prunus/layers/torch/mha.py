"""nn.MultiheadAttention through the speedup: heads and input features removed.

``nn.MultiheadAttention`` cannot hold fewer heads than its ``embed_dim`` implies, so a
speedup that removes heads or input features replaces it with an equivalent
:class:`~prunus.layers.torch.modules.PrunedMultiheadAttention` (the summary
lists it under its new type). Importing this module registers the handler.
"""
from __future__ import annotations

from torch import nn

from prunus.layers.torch.modules import PrunedMultiheadAttention
from prunus.layers.torch.heads import AttentionLayout, Slice, attention_layout
from prunus.layers.torch.attention import (ClosedAttentionHandler, dead_dims, dead_heads, remove_dims,
                                      remove_heads, uniform_dims)
from prunus.layers.torch.handlers import HANDLERS



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
        lay = self.layout(module)
        dims = None if bool(dead.any()) else dead_dims(module, lay)
        dims = dims if dims is not None and uniform_dims(dims) else None
        if not bool(dead.any()) and dims is None and not shrinks and plan.fold_idx is None:
            return module  # nothing changes: the user's module stays
        if isinstance(module, nn.MultiheadAttention):
            module = PrunedMultiheadAttention.from_mha(module)
        if bool(dead.any()):
            remove_heads(module, self.layout(module), (~dead).nonzero().flatten())
        elif dims is not None:
            remove_dims(module, self.layout(module), (~dims).nonzero()[:, 1].view(lay.num_heads, -1))
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
