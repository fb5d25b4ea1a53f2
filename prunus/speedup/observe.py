"""What one run of a model shows, shared by the tracer and the replay: how to call the
model, the tensors in arguments, per-channel constants and operator signatures."""
from __future__ import annotations

from typing import Any

import torch

from prunus.layers.torch.inputs import call_model


def tensors_in(obj: Any, acc: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """The tensors in an op's arguments or a module's inputs/outputs, in order (a lean
    ``tree_flatten``: this runs for every recorded operator)."""
    acc = [] if acc is None else acc
    if isinstance(obj, torch.Tensor):
        acc.append(obj)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            tensors_in(item, acc)
    elif isinstance(obj, dict):
        for item in obj.values():
            tensors_in(item, acc)
    return acc


def channel_constants(x: torch.Tensor, dim: int, per_sample: bool = False) -> torch.Tensor:
    """Per index along ``dim``: the value of ``x`` where it is the same everywhere, NaN
    where it varies (float32, on the CPU). ``per_sample``: the same for every sample
    along dim 0 at once, shape (samples, channels)."""
    rest = [v for v in range(x.dim()) if v != dim and not (per_sample and v == 0)]
    xf = x.detach().float()
    lo, hi = (xf.amin(rest), xf.amax(rest)) if rest else (xf, xf)
    return lo.masked_fill(lo != hi, float('nan')).cpu()


def op_signature(func: Any, out: Any) -> tuple[Any, tuple]:
    """One operator and its output shapes (see ``Trace.signature``)."""
    return func, tuple(tuple(o.shape) for o in tensors_in(out))
