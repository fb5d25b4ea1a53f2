"""Per-module FLOP counts from torch's own counter."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from prunus._interop import guard_triton_after_tensorflow

guard_triton_after_tensorflow()  # torch's FLOP counter imports triton
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from prunus.layers.torch.inputs import call_model  # noqa: E402
from prunus.speedup.flops import op_flops, unfused_attention  # noqa: E402

#: Fused attention kernels torch's table lacks; counted as the speedup counts them.
FUSED_ATTENTION_OPS = ('_scaled_dot_product_flash_attention_for_cpu',
                       '_scaled_dot_product_fused_attention_overrideable')


def _fused_attention() -> dict[Any, Any]:
    mapping = {}
    for name in FUSED_ATTENTION_OPS:
        packet = getattr(torch.ops.aten, name, None)
        if packet is None:
            continue

        def count(*args: Any, out_val: Any = None, _op: Any = packet.default, **kwargs: Any) -> int:
            return op_flops(_op, args, kwargs, out_val)
        count._get_raw = True  # FlopCounterMode then passes the tensors, not their shapes
        mapping[packet] = count
    return mapping


@torch.no_grad()
def module_flops(model: nn.Module, inputs: Any) -> dict[str, int]:
    """FLOPs per qualified module name (a module's count includes its children's).

    The model runs once in eval mode; its training flag is restored afterwards. FLOPs are
    counted as the speedup counts them (:mod:`prunus.speedup.flops`): the fused attention
    kernels included, nn.MultiheadAttention's fused fast path off (so its projections
    and the encoder layer's feed-forward are attributed to their modules).
    """
    was_training = model.training
    model.eval()
    try:
        with unfused_attention(), FlopCounterMode(display=False, custom_mapping=_fused_attention()) as counter:
            call_model(model, inputs)
    finally:
        model.train(was_training)
    root = type(model).__name__
    flops: dict[str, int] = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == 'Global':
            continue
        name = '' if key == root else key[len(root) + 1:] if key.startswith(root + '.') else key
        flops[name] = int(sum(per_op.values()))
    return flops
