"""Per-module FLOP counts from torch's own counter."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from prunus._interop import guard_triton_after_tensorflow

guard_triton_after_tensorflow()  # torch's FLOP counter imports triton
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from prunus.layers.torch.inputs import call_model  # noqa: E402


@torch.no_grad()
def module_flops(model: nn.Module, inputs: Any) -> dict[str, int]:
    """FLOPs per qualified module name (a module's count includes its children's).

    The model runs once in eval mode; its training flag is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
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
