"""Why an attention module's heads cannot be pruned: named, never skipped in silence.

Two cases: a module that looks like attention (a head count attribute and projections)
but whose head layout prunus does not know (Q, K and V interleaved per head in one fused
weight: Bloom, Falcon, GPT-NeoX; a per-head position bias handed in from outside: MPNet),
and a per-head position bias table held outside the attention modules it feeds (BEiT's
layer-level ``relative_position_bias``), whose columns the speedup cannot remove with
the heads.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from prunus.layers.torch.heads import HEAD_COUNT_ATTRS, HEAD_DIM_ATTRS, takes_position_bias

_FUSED = ('query_key_value', 'c_attn', 'qkv', 'qkv_proj', 'Wqkv', 'in_proj')


def _projections(module: nn.Module) -> list[str]:
    """Children that project features (Linear, Conv1d, transformers' Conv1D), and
    weight matrices held directly (XLNet's ``q``/``k``/``v``/``o``)."""
    children = [n for n, c in module.named_children()
                if isinstance(c, (nn.Linear, nn.Conv1d)) or type(c).__name__ == 'Conv1D']
    return children + [n for n, p in module._parameters.items() if p is not None and p.dim() >= 2]


def _reason(module: nn.Module) -> str:
    found = _projections(module)
    why = []
    config = module.__dict__.get('config')
    alibi = bool(config.alibi) if hasattr(config, 'alibi') else _takes(module, 'alibi')
    if takes_position_bias(module) or alibi:
        why.append('its forward adds a per-head position bias (position_bias or ALiBi) computed '
                   'outside it, for all layers at once')
    fused = [n for n in _FUSED if n in found]
    if fused:
        why.append(f"its fused Q/K/V weight '{fused[0]}' is in a layout prunus does not know "
                   '(Q, K and V interleaved per key/value group, or with an ALiBi bias)')
    return ' and '.join(why) or f'its projections {found} are not a Q/K/V/output layout prunus knows'


def _takes(module: nn.Module, arg: str) -> bool:
    try:
        return arg in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


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
        count = next((a for a in HEAD_COUNT_ATTRS + HEAD_DIM_ATTRS
                      if isinstance(module.__dict__.get(a), int)), None)
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
