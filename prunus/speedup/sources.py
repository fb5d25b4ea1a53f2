"""Which removed BatchNorm shifts a removed channel's constant comes from, and how strongly.

In the masked model a pruned filter's channel is exactly its BatchNorm's shift ``beta``
in train mode, and that shift keeps learning during fine-tuning: its gradient comes
from every consumer of the constant, through the activations and residual adds on the
way (measured: freezing those shifts in the masked model costs it what the sped-up model
with fixed constants lost, 1.1 points at 75% on a residual CNN). So the sped-up model
keeps them as one trainable vector and each consumer computes its constants from it.

What each constant is as a function of the shifts is read off the model, not assumed:
forward-mode derivatives of the consumers' train-mode inputs with respect to each
BatchNorm's shift, in one batched run: two samples per group of BatchNorms that share no
channel label, with tangents ``1`` and ``k+1`` on their removed channels ``k`` (the shift's derivative is injected at its output,
and taken away at every BatchNorm's input, which maps a constant to its own shift, and
at every consumer, past which only its own rows matter). The run uses the inputs' first
sample cut to 8 pixels a side (the constants do not depend on the input), or the whole
first sample where that fails or gives other constants than the real run (a Linear on a
flatten); a row whose constant still differs learns nothing. A constant that depends on
one channel ``k`` of a BatchNorm with slope ``a`` shows ``a`` and ``a (k+1)``; anything
else (channels of one BatchNorm mixed, a slope that varies in space) fails that check
and the constant stays fixed, as before. The constants are then ``c0 + sum a (beta -
beta0)``: exact while each activation on the way stays on the side it was (a ReLU whose
input crosses zero during fine-tuning is the one case where it differs from the masked model).
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

_PROBES = 2
_SIDE = 8  # probes run on the inputs' first sample cut to 8 pixels a side: cheap
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


def _small(x: torch.Tensor, copies: int, side: int | None) -> torch.Tensor:
    """The first sample of ``x``, its spatial dims cut to ``side``, ``copies`` times."""
    if x.dim() == 0:
        return x
    one = x[:1]
    if side is not None and x.dim() >= 3 and x.is_floating_point():
        one = one[(slice(None), slice(None)) + tuple(slice(0, side) for _ in x.shape[2:])]
    return one.expand(copies, *one.shape[1:]).clone()


def _probe_inputs(inputs: Any, copies: int, side: int | None) -> Any:
    if isinstance(inputs, torch.Tensor):
        return _small(inputs, copies, side)
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(_probe_inputs(v, copies, side) for v in inputs)
    if isinstance(inputs, dict):
        return {k: _probe_inputs(v, copies, side) for k, v in inputs.items()}
    return inputs


def _primal(x: torch.Tensor) -> torch.Tensor:
    return fwad.unpack_dual(x).primal


def _inject(tangent: torch.Tensor):
    def hook(module, args, out):  # d out / d beta = 1 everywhere: the shift's tangent
        out = _primal(out)
        return fwad.make_dual(out, tangent.view(tangent.shape + (1,) * (out.dim() - 2))
                              .expand_as(out).contiguous())
    return hook


def _strip_input(module, args):  # a train-mode BatchNorm maps a constant to its own beta
    return (_primal(args[0]),) + tuple(args[1:]) if args else args


def _strip_output(module, args, out):  # past a consumer only its own rows matter
    return _primal(out) if isinstance(out, torch.Tensor) else out


def _probe(work: nn.Module, inputs: Any, trace: Trace, plan: Plan, wanted: list[str],
           norms: list, colors: list[list[int]], side: int | None
           ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward of ``_PROBES`` samples per color: sample ``PROBES * c + p`` gets the
    tangent ``(k+1)^p`` on the removed channels ``k`` of every BatchNorm of color ``c``.
    Returns per site (samples, rows) tangents of its removed inputs (NaN where not
    constant) and the primal constants (to check against the real run)."""
    modules = dict(work.named_modules())
    tangents: dict[str, torch.Tensor] = {}
    primals: dict[str, torch.Tensor] = {}

    def read(module, args, _name):
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if x is None:
            return
        tangent = fwad.unpack_dual(x).tangent
        dim = trace.sites[_name].handler.in_dim % x.dim()
        idx = plan.sites[_name].fold_idx
        primal = channel_constants(_primal(x)[0], dim - 1)[idx]  # dim within one sample
        if tangent is None:
            rows = torch.zeros(x.shape[0], len(idx), dtype=torch.float32)
        else:  # all samples in one reduction: a ResNet-50's probe has 14
            rows = channel_constants(tangent, dim, per_sample=True)[:, idx]
        for store, now in ((tangents, rows), (primals, primal)):
            old = store.get(_name)  # a layer called twice must see the same constants
            store[_name] = now if old is None else torch.where(old == now, old, float('nan'))
        return (_primal(x),) + tuple(args[1:])  # the layer itself runs without tangents

    count = _PROBES * len(colors)
    handles = []
    for c, members in enumerate(colors):
        for i in members:
            _, norm, gone = norms[i]
            k = torch.arange(norm.num_features, dtype=norm.bias.dtype, device=norm.bias.device)
            pattern = torch.zeros(count, norm.num_features, dtype=k.dtype, device=k.device)
            for p in range(_PROBES):
                pattern[_PROBES * c + p] = torch.where(gone.to(k.device), (k + 1) ** p, 0)
            handles.append(norm.register_forward_hook(_inject(pattern)))
    for module in work.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            handles.append(module.register_forward_pre_hook(_strip_input))
    for n in wanted:
        handles.append(modules[n].register_forward_pre_hook(lambda m, a, _n=n: read(m, a, _n)))
        handles.append(modules[n].register_forward_hook(_strip_output))
    try:
        with fwad.dual_level(), torch.no_grad():
            call_model(work, _probe_inputs(inputs, count, side))
    finally:
        for h in handles:
            h.remove()
    return tangents, primals


def _decode(tangents: list[torch.Tensor], gone: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the two probes of one site and one BatchNorm, per row: whether it depends
    on the BatchNorm's shifts at all, whether on exactly one removed channel (clean),
    that channel and the slope."""
    slope, first = (t.double() for t in tangents)
    channel = first / torch.where(slope == 0, torch.ones_like(slope), slope) - 1
    whole = channel.round()
    clean = (slope != 0) & torch.isfinite(channel) & ((channel - whole).abs() < _TOLERANCE)
    clean &= (whole >= 0) & (whole < len(gone))
    idx = torch.nan_to_num(whole, nan=0.0).clamp(0, len(gone) - 1).long()
    clean &= gone[idx]
    depends = (slope != 0) | ~torch.isfinite(slope)
    return depends, clean, torch.where(clean, idx, 0), slope


def _roots(trace: Trace, name: str, idx: torch.Tensor | None) -> torch.Tensor | None:
    """The channel-label roots of ``name``'s inputs at ``idx`` (None: not the same in
    every call, or not labelled)."""
    got = None
    for call in trace.sites[name].calls:
        if call.in_ids is None:
            return None
        ids = call.in_ids if idx is None else call.in_ids[idx]
        now = trace.uf.roots(ids)
        if got is not None and not torch.equal(got, now):
            return None
        got = now
    return got


def _colors(trace: Trace, norms: list) -> tuple[list[list[int]], list[dict[int, int]]]:
    """Group the BatchNorms so that no two of a group share a channel label (no constant
    can then depend on two of them: channel-wise paths keep labels, adds join them);
    per group, the label roots of its members' removed channels -> member."""
    colors: list[list[int]] = []
    owners: list[dict[int, int]] = []
    for i, (name, _, gone) in enumerate(norms):
        roots = _roots(trace, name, gone.nonzero().flatten())
        mine = None if roots is None else set(roots.tolist())
        for c, owner in enumerate(owners):
            if mine is not None and -1 not in owner and not mine & owner.keys():
                break
        else:
            c = len(colors)
            colors.append([])
            owners.append({})
        colors[c].append(i)
        owners[c].update({r: i for r in mine} if mine is not None else {-1: i})
    return colors, owners


def _agrees(primals: dict[str, torch.Tensor], train: dict[str, torch.Tensor]) -> bool:
    """Whether the probe run's constants are the real run's wherever those are constant."""
    for site, got in primals.items():
        real = train[site].double()
        known = torch.isfinite(real)
        if not bool(torch.isclose(got.double()[known], real[known], rtol=1e-4, atol=1e-6).all()):
            return False
    return True


class _Rows:
    """What the probes showed: per site and removed input, (shift, slope) pairs; rows that
    must stay fixed; the removed shifts in the order they were met."""

    def __init__(self, plan: Plan, wanted: list[str]) -> None:
        self.rows: dict[str, dict[int, list[tuple[int, float]]]] = {n: {} for n in wanted}
        self.broken = {n: torch.zeros(len(plan.sites[n].fold_idx), dtype=torch.bool)
                       for n in wanted}
        self.shift_of: dict[tuple[int, int], int] = {}
        self.values: list[float] = []

    def add(self, site: str, row: int, norm_index: int, shifts: list[float], channel: int,
            slope: float) -> None:
        key = (norm_index, channel)
        if key not in self.shift_of:
            self.shift_of[key] = len(self.values)
            self.values.append(shifts[channel])
        self.rows[site].setdefault(row, []).append((self.shift_of[key], slope))

    def read_site(self, site: str, block: torch.Tensor, who: torch.Tensor, norms: list) -> None:
        """One color's probes of ``site``; ``who``: per row, the member it can read (-1:
        none)."""
        for ni in set(who.tolist()):
            mine = who == ni
            if ni < 0:  # a tangent where no BatchNorm of the color has the label
                self.broken[site] |= mine & (block != 0).any(0)
                continue
            norm, gone = norms[ni][1], norms[ni][2]
            depends, clean, idx, slope = _decode(list(block), gone)
            depends, clean = depends & mine, clean & mine
            self.broken[site] |= depends & ~clean
            rows = clean.nonzero().flatten().tolist()
            if not rows:
                continue
            # Python lists: reading tensors element by element costs more than the probe
            shifts, channels, slopes = norm.bias.detach().tolist(), idx.tolist(), slope.tolist()
            for r in rows:
                self.add(site, r, ni, shifts, channels[r], slopes[r])

    def sources(self) -> Sources | None:
        sites = {}
        for site, per_row in self.rows.items():
            broken = self.broken[site].tolist()
            use = sorted(r for r in per_row if not broken[r])
            if not use:
                continue
            width = max(len(per_row[r]) for r in use)
            padded = [per_row[r] + [(0, 0.0)] * (width - len(per_row[r])) for r in use]
            index = torch.tensor([[shift for shift, _ in row] for row in padded], dtype=torch.long)
            slopes = torch.tensor([[a for _, a in row] for row in padded], dtype=torch.float64)
            sites[site] = (torch.tensor(use, dtype=torch.long), index, slopes)
        return Sources(torch.tensor(self.values, dtype=torch.float64), sites) if sites else None


def _run_probes(work, inputs, trace, plan, wanted, norms, colors, train):
    probed = None
    for side in (_SIDE, None):  # cut down, else the first sample whole (a Linear on a flatten)
        try:
            with train_mode_norms(work):
                probed = _probe(work, inputs, trace, plan, wanted, norms, colors, side)
        except Exception:  # noqa: BLE001 - learnable sources are optional; constants stay exact
            continue
        if _agrees(probed[1], train):
            break
    return probed


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
    colors, owners = _colors(trace, norms)
    probed = _run_probes(work, inputs, trace, plan, wanted, norms, colors, train)
    if probed is None:
        return None
    tangents, primals = probed
    found = _Rows(plan, wanted)
    for site in (s for s in wanted if s in tangents):
        # the probe run's constants must be the real run's, or the row learns nothing
        found.broken[site] |= ~torch.isclose(primals[site].double(), train[site].double(),
                                             rtol=1e-4, atol=1e-6)
        roots = _roots(trace, site, plan.sites[site].fold_idx)
        for c, owner in enumerate(owners):
            block = tangents[site][_PROBES * c:_PROBES * (c + 1)]
            if not bool(block.any()):  # no BatchNorm of this color reaches the site
                continue
            if -1 in owner:  # one BatchNorm without labels: it alone has this color
                who = torch.full((block.shape[1],), owner[-1])
            elif roots is None:
                found.broken[site] |= (block != 0).any(0)
                continue
            else:
                who = torch.tensor([owner.get(int(r), -1) for r in roots])
            found.read_site(site, block, who, norms)
    return found.sources()
