"""Which removed BatchNorm shifts a removed channel's constant comes from, and how strongly.

In the masked model a pruned filter's channel is exactly its BatchNorm's shift ``beta``
in train mode, and that shift keeps learning during fine-tuning: its gradient comes
from every consumer of the constant, through the activations and residual adds on the
way (measured: freezing those shifts in the masked model costs it what the sped-up model
with fixed constants lost, 1.1 points at 75% on a residual CNN). So the sped-up model
keeps them as one trainable vector and each consumer computes its constants from it.

What each constant is as a function of the shifts is read off the model, not assumed:
forward-mode derivatives of the consumers' train-mode inputs with respect to each
BatchNorm's shift, three probes per BatchNorm (tangents ``1``, ``k+1`` and ``(k+1)^2``
on channel ``k``). A constant that depends on one channel ``k`` of a BatchNorm with
slope ``a`` shows ``a``, ``a (k+1)`` and ``a (k+1)^2``; anything else (two channels of one
BatchNorm mixed, a slope that varies in space) fails that check and the constant stays
fixed, as before. The constants are then ``c0 + sum a (beta - beta0)``: exact while each
activation on the way stays on the side it was (a ReLU whose input crosses zero during
fine-tuning is the one case where it differs from the masked model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.autograd import forward_ad as fwad

from prunus.layers.torch.inputs import call_model
from prunus.speedup.observe import channel_constants
from prunus.speedup.plan import Plan
from prunus.speedup.trace import Trace
from prunus.speedup.train_constants import train_mode_norms

_PROBES = 3
_TOLERANCE = 1e-4


@dataclass
class Sources:
    """The removed shifts the sped-up model learns, and who reads them.

    Attributes:
        shifts: the removed channels' BatchNorm shifts at removal, in one vector.
        sites: consumer name -> (rows: positions in its ``fold_idx``, index (rows, M)
            into ``shifts``, slopes (rows, M); a slope of 0 pads a row with fewer sources).
    """

    shifts: torch.Tensor
    sites: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _removed(plan: Plan, name: str, norm: nn.Module) -> torch.Tensor | None:
    sp = plan.sites.get(name)
    keep = None if sp is None else sp.keep_in
    if keep is None or len(keep) == norm.num_features:
        return None
    gone = torch.ones(norm.num_features, dtype=torch.bool)
    gone[keep] = False
    return gone


def _probe(work: nn.Module, inputs: Any, trace: Trace, plan: Plan, wanted: list[str],
           norm_name: str, norm: nn.Module) -> list[dict[str, torch.Tensor]]:
    """Per probe: site -> the tangent of its removed inputs' constants."""
    modules = dict(work.named_modules())
    k = torch.arange(norm.num_features, dtype=norm.bias.dtype, device=norm.bias.device) + 1
    got: list[dict[str, torch.Tensor]] = []
    for power in range(_PROBES):
        seen: dict[str, torch.Tensor] = {}

        def pre(module, args, _name):
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            tangent = None if x is None else fwad.unpack_dual(x).tangent
            if tangent is None:
                return
            dim = trace.sites[_name].handler.in_dim % x.dim()
            now = channel_constants(tangent, dim)[plan.sites[_name].fold_idx]
            old = seen.get(_name)  # a layer called twice must see the same constants
            seen[_name] = now if old is None else torch.where(old == now, old, float('nan'))

        handles = [modules[n].register_forward_pre_hook(lambda m, a, _n=n: pre(m, a, _n))
                   for n in wanted]
        bias = norm._parameters['bias']
        try:
            with fwad.dual_level():
                norm._parameters['bias'] = fwad.make_dual(bias.detach(), k ** power)
                call_model(work, inputs)
        finally:
            norm._parameters['bias'] = bias
            for h in handles:
                h.remove()
        got.append(seen)
    return got


def _decode(tangents: list[torch.Tensor], gone: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the three probes of one site and one BatchNorm, per row: whether it depends
    on the BatchNorm's shifts at all, whether on exactly one removed channel (clean),
    that channel and the slope."""
    slope, first, second = (t.double() for t in tangents)
    channel = first / torch.where(slope == 0, torch.ones_like(slope), slope) - 1
    whole = channel.round()
    clean = (slope != 0) & torch.isfinite(channel) & ((channel - whole).abs() < _TOLERANCE)
    clean &= (whole >= 0) & (whole < len(gone))
    idx = whole.clamp(0, len(gone) - 1).long()
    clean &= gone[idx]
    expected = slope * (whole + 1) ** 2
    clean &= (second - expected).abs() <= _TOLERANCE * expected.abs().clamp_min(1e-12)
    depends = (slope != 0) | ~torch.isfinite(slope)
    return depends, clean, torch.where(clean, idx, 0), slope


def measure_sources(work: nn.Module, trace: Trace, plan: Plan, inputs: Any,
                    train: dict[str, torch.Tensor]) -> Sources | None:
    """The learnable sources of the removed constants that ``train`` measured, or None
    (no BatchNorm loses channels, or the model cannot run with forward-mode tangents)."""
    norms = [(n, m) for n, m in work.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
             and m._parameters.get('bias') is not None and m.bias.requires_grad]
    norms = [(n, m, g) for n, m in norms if (g := _removed(plan, n, m)) is not None]
    wanted = [n for n in train if plan.sites[n].fold_idx is not None]
    if not norms or not wanted:
        return None
    rows: dict[str, list[list[tuple[int, float]]]] = {
        n: [[] for _ in range(len(plan.sites[n].fold_idx))] for n in wanted}
    broken: dict[str, torch.Tensor] = {n: torch.zeros(len(r), dtype=torch.bool)
                                       for n, r in rows.items()}
    shift_of: dict[tuple[int, int], int] = {}
    values: list[float] = []
    try:
        with train_mode_norms(work):
            for ni, (name, norm, gone) in enumerate(norms):
                probes = _probe(work, inputs, trace, plan, wanted, name, norm)
                for site in wanted:
                    if site not in probes[0]:
                        continue
                    depends, clean, idx, slope = _decode([p[site] for p in probes], gone)
                    broken[site] |= depends & ~clean
                    for r in clean.nonzero().flatten().tolist():
                        key = (ni, int(idx[r]))
                        if key not in shift_of:
                            shift_of[key] = len(values)
                            values.append(float(norm.bias.detach()[key[1]]))
                        rows[site][r].append((shift_of[key], float(slope[r])))
    except Exception:  # noqa: BLE001 - learnable sources are optional; constants stay exact
        return None
    if not values:
        return None
    sites = {}
    for site, per_row in rows.items():
        use = [r for r, deps in enumerate(per_row) if deps and not broken[site][r]]
        if not use:
            continue
        width = max(len(per_row[r]) for r in use)
        index = torch.zeros(len(use), width, dtype=torch.long)
        slopes = torch.zeros(len(use), width, dtype=torch.float64)
        for i, r in enumerate(use):
            for j, (s, a) in enumerate(per_row[r]):
                index[i, j], slopes[i, j] = s, a
        sites[site] = (torch.tensor(use, dtype=torch.long), index, slopes)
    if not sites:
        return None
    return Sources(torch.tensor(values, dtype=torch.float64), sites)
