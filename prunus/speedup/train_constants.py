"""The constants removed channels take in train mode, where the masked model's BatchNorms
normalize with batch statistics (a pruned filter's channel is then exactly ``beta``).

Measured with one more run of the masked work model: BatchNorms use batch statistics and
update nothing (``track_running_stats`` off for the run, so the user's shared buffers are
never written), every other layer stays in eval mode (no dropout noise). See
:mod:`prunus.layers.torch.constants` for why the fold uses them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from prunus.speedup.observe import call_model, channel_constants
from prunus.speedup.plan import Plan
from prunus.speedup.trace import Trace



def _record(values: dict, name: str, idx: torch.Tensor, dim: int):
    def pre(module, args):
        if not args or not isinstance(args[0], torch.Tensor):
            return
        got = channel_constants(args[0], dim % args[0].dim())[idx]
        old = values.get(name)
        values[name] = got if old is None else torch.where(old == got, old, float('nan'))
    return pre


def _norms(work: nn.Module) -> list[nn.Module]:
    return [m for m in work.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


@contextmanager
def train_mode_norms(work: nn.Module) -> Iterator[None]:
    """BatchNorms normalize with batch statistics and update nothing; the rest as it was."""
    saved = [(m, m.training) for m in _norms(work)]
    try:
        for m, _ in saved:
            m.training, m.track_running_stats = True, False
        yield
    finally:
        for m, was in saved:
            m.training, m.track_running_stats = was, True


def train_mode_constants(work: nn.Module, trace: Trace, plan: Plan, inputs: Any
                         ) -> dict[str, torch.Tensor]:
    """Per layer folding removed inputs: their train-mode constants at ``fold_idx``
    (NaN where not constant); empty when the run is not possible (a SyncBatchNorm outside
    a process group, a batch of one pixel)."""
    wanted = {n: sp for n, sp in plan.sites.items()
              if sp.fold_idx is not None}
    if not _norms(work) or not wanted:
        return {}
    values: dict[str, torch.Tensor] = {}
    handles = [trace.sites[n].module.register_forward_pre_hook(
        _record(values, n, sp.fold_idx, trace.sites[n].handler.in_dim))
        for n, sp in wanted.items()]
    try:
        with train_mode_norms(work), torch.no_grad():
            call_model(work, inputs)
    except Exception:  # noqa: BLE001 - train mode is optional; eval constants stay exact
        return {}
    finally:
        for h in handles:
            h.remove()
    return values
