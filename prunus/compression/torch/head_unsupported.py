"""Why an attention module's heads cannot be pruned: named, never skipped in silence.

Two cases: a module that looks like attention (a head count attribute and projections)
but whose head layout prunus does not know (Q, K and V interleaved per head in one fused
weight: Bloom, Falcon, GPT-NeoX; a per-head position bias handed in from outside: MPNet),
and a per-head position bias table held outside the attention modules it feeds (BEiT's
layer-level ``relative_position_bias``), whose columns the speedup cannot remove with
the heads.
"""
from __future__ import annotations

import torch
from torch import nn

from prunus.layers.torch.heads import HEAD_COUNT_ATTRS, takes_position_bias

_FUSED = ('query_key_value', 'c_attn', 'qkv', 'qkv_proj', 'Wqkv', 'in_proj')


def _projections(module: nn.Module) -> list[str]:
    return [n for n, c in module.named_children()
            if isinstance(c, nn.Linear) or type(c).__name__ == 'Conv1D']


def _reason(module: nn.Module) -> str:
    fused = [n for n in _FUSED if n in _projections(module)]
    if fused:
        return (f"its fused Q/K/V weight '{fused[0]}' is in a layout prunus does not know "
                '(Q, K and V interleaved per head)')
    if takes_position_bias(module):
        return ('its forward adds a per-head position_bias computed outside it, for all '
                'layers at once')
    return 'no known Q/K/V/output projection layout'


def unsupported_attention(model: nn.Module, known: list[str]) -> list[str]:
    """One line per module that looks like attention but has no known head layout.

    Args:
        model: the model.
        known: names of the attention modules with a known layout.

    Example::

        unsupported_attention(bloom, [])   # ["'h.0.self_attention' (BloomAttention): ..."]
    """
    lines = []
    for name, module in model.named_modules():
        if any(k == name or k.startswith(name + '.') or name.startswith(k + '.') for k in known):
            continue
        count = next((a for a in HEAD_COUNT_ATTRS if isinstance(module.__dict__.get(a), int)), None)
        if count is None or len(_projections(module)) < 2:
            continue
        lines.append(f"'{name}' ({type(module).__name__}, {count}={module.__dict__[count]}): "
                     f'{_reason(module)}')
    return lines


def external_biases(model: nn.Module, known: dict[str, int]) -> list[str]:
    """One line per per-head position bias held outside the attention modules ``known``
    (name -> head count) whose head count it has.

    Args:
        model: the model.
        known: attention module names and their head counts.

    Example::

        external_biases(beit, {'encoder.layer.0.attention.attention': 12})
    """
    counts = set(known.values())
    lines = []
    for name, module in model.named_modules():
        if any(name == k or name.startswith(k + '.') for k in known):
            continue
        for attr in ('relative_position_bias_table', 'relative_attention_bias'):
            value = getattr(module, attr, None)
            if isinstance(value, nn.Embedding):
                value = value.weight
            if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] in counts \
                    and attr in module.__dict__.get('_parameters', {}) | module.__dict__.get('_modules', {}):
                lines.append(f"'{name}' ({type(module).__name__}).{attr} holds a position bias "
                             f'for {value.shape[1]} heads outside the attention modules')
    return lines
