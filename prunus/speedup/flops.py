"""FLOPs of the ATen operators a forward runs, by torch's own FLOP formulas.

``torch.utils.flop_counter.FlopCounterMode`` tracks the module hierarchy of every
operator, which about doubles the cost of a forward pass. The speedup only needs the
total, so it applies the same per-operator formulas (``flop_registry``, the table
FlopCounterMode itself uses) from its own dispatch mode: the tracer adds them while it
records, and :class:`FlopCount` counts a plain forward (the exactness check).
"""
from __future__ import annotations

from typing import Any

from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


def op_flops(func: Any, args: tuple, kwargs: dict, out: Any) -> int:
    """FLOPs of one ATen call (a multiply-accumulate counts 2), 0 for uncounted ops."""
    formula = flop_registry.get(func.overloadpacket)
    if formula is None:
        return 0
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
