"""FLOPs of the ATen operators a forward runs, by torch's own FLOP formulas.

``torch.utils.flop_counter.FlopCounterMode`` tracks the module hierarchy of every
operator, which about doubles the cost of a forward pass. The speedup only needs the
total, so it applies the same per-operator formulas (``flop_registry``, the table
FlopCounterMode itself uses) from its own dispatch mode: the tracer adds them while it
records, and :class:`FlopCount` counts a plain forward (the exactness check).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

def _sdpa_flops(query: Any, key: Any, value: Any, *args: Any, **kwargs: Any) -> int:
    """Q @ K^T and P @ V of a fused attention kernel torch's table lacks (the CPU ones)."""
    *batch, q_len, e = query.shape
    s_len, ev = key.shape[-2], value.shape[-1]
    n = 1
    for b in batch:
        n *= b
    return 2 * n * q_len * s_len * (e + ev)


_EXTRA = {name: _sdpa_flops for name in
          ('_scaled_dot_product_flash_attention_for_cpu',
           '_scaled_dot_product_fused_attention_overrideable')}


@contextmanager
def unfused_attention() -> Iterator[None]:
    """Turns off the fused fast paths of nn.MultiheadAttention / TransformerEncoderLayer
    (``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``), which a traced
    run never takes (hooks and modes disable them): the checked run then executes, and
    counts, the same operators as the trace did."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def op_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs of one ATen call (a multiply-accumulate counts 2), 0 for uncounted ops."""
    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        extra = _EXTRA.get(func.overloadpacket.__name__)
        return int(extra(*args)) if extra is not None else 0
    return int(formula(*args, **kwargs, out_val=out))


class FlopCount(TorchDispatchMode):
    """Dispatch mode that sums :func:`op_flops` over a forward: ``with FlopCount() as c``
    then ``c.total``."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.total += op_flops(func, args, kwargs, out)
        return out
