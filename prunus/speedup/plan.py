"""Decide which channels can be removed without changing the masked model's outputs.

A *class* is a set of tied channel ids (see :mod:`prunus.speedup.labels`). A class is
removed only when

1. it has at least one producer (a non-tied layer's output channel, e.g. a Conv filter)
   and every producer's weights for it are all zero (the mask removed it everywhere),
   or a zero-scale BatchNorm (Network Slimming) produced it as a constant; or the
   only layers reading it are such BatchNorms, which ignore it: then its producers
   lose it although their masks keep it, and the BatchNorm loses it on both sides;
2. no operator that cannot drop channels uses it (``Trace.blocked``), it is not part of
   the model output;
3. wherever a layer consumes it, its value is a constant that the layer can fold (a
   BatchNorm shift after a pruned conv is a non-zero constant; a Linear folds any
   constant into a bias-like constant path, a zero-padded conv into a kernel applied to
   ones, exact at the borders); a layer that cannot (a depthwise conv reading it) keeps the channel;
4. grouped convolutions lose the same number of channels in every group, GroupNorm only
   whole groups, a layer called twice loses the same positions at every call, and every
   layer keeps at least one channel.

Rules 3-4 can undo removals, which can break other rules' assumptions, so they run to a
fixed point. Every class a mask asked to remove but that is kept gets a reason, which the
summary reports.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from prunus.speedup.trace import Site, Trace


@dataclass
class SitePlan:
    """What happens to one handled layer."""

    keep_in: torch.Tensor | None = None
    keep_out: torch.Tensor | None = None
    fold_idx: torch.Tensor | None = None
    fold_val: torch.Tensor | None = None


@dataclass
class Plan:
    """Which channels go, per layer and per functionally used parameter, and why some stay.

    Attributes:
        sites: layer name -> :class:`SitePlan`.
        params: parameter name -> (dim, indices kept along dim).
        masked: layer name -> number of output channels its mask zeroed.
        removed: layer name -> number of output channels removed.
        kept_reasons: reason -> number of masked channels kept for it.
    """

    sites: dict[str, SitePlan] = field(default_factory=dict)
    params: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)
    masked: dict[str, int] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    kept_reasons: Counter = field(default_factory=Counter)


class _Decider:
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        uf = trace.uf
        self.out_roots = {n: uf.roots(s.out_ids) for n, s in trace.sites.items()
                          if s.out_ids is not None}
        self.in_roots = {n: [uf.roots(c.in_ids) if c.in_ids is not None else None
                             for c in s.calls] for n, s in trace.sites.items()}
        self.dead = {n: s.handler.dead_out(s.module) for n, s in trace.sites.items()
                     if s.out_ids is not None}
        # (layer, roots of the ignored input channels, roots of the constants it outputs)
        self.kills = [(n, uf.roots(i), uf.roots(o)) for n, s in trace.sites.items()
                      for i, o in s.kills]
        self.reason: dict[int, str] = {}
        # removed[r]: the class with root id r goes; indexed by root, so checks vectorize
        self.removed = torch.zeros(len(uf.parent), dtype=torch.bool)

    def initial(self) -> None:
        blocked = {self.trace.uf.find(i): r for i, r in self.trace.blocked.items()}
        dead = torch.zeros_like(self.removed)
        live = torch.zeros_like(self.removed)
        for name, roots in self.out_roots.items():
            dead[roots[self.dead[name]]] = True
            live[roots[~self.dead[name]]] = True
        unread = self._unread(dead)
        for name, roots in self.out_roots.items():  # first live producer names the reason
            for r in roots[~self.dead[name] & dead[roots]].tolist():
                self.reason.setdefault(r, f"tied to channels of '{name}' that its mask keeps")
        for r, why in blocked.items():
            if dead[r]:
                self.reason[r] = why
        dead[0] = False
        unread[0] = False
        blocked_mask = torch.zeros_like(dead)
        blocked_mask[list(blocked)] = True
        self.removed = ((dead & ~live) | unread) & ~blocked_mask
        # constant by construction (all producers dead), whatever the input: may carry
        self.constant = dead & ~live

    def _unread(self, dead: torch.Tensor) -> torch.Tensor:
        """Classes only a killing layer reads (a conv feeding a zero-scale BatchNorm):
        they go although their producer keeps them. The killed outputs are constants,
        produced by the killing layer: dead producers."""
        unread = torch.zeros_like(dead)
        if not self.kills:
            return unread
        read = torch.zeros_like(dead)
        for name, site in self.trace.sites.items():
            if not site.handler.tied(site.module):
                for roots in self.in_roots[name]:
                    if roots is not None:
                        read[roots] = True
        for _, ins, outs in self.kills:
            dead[outs] = True
            unread[ins] = True
        return unread & ~read

    def keep(self, roots: torch.Tensor | list[int] | set[int], why: str) -> bool:
        roots = torch.as_tensor(list(roots) if isinstance(roots, set) else roots,
                                dtype=torch.int64).reshape(-1)
        hit = roots[self.removed[roots]].unique()
        if not len(hit):
            return False
        self.removed[hit] = False
        for r in hit.tolist():
            self.reason.setdefault(r, why)
        return True

    def gone(self, roots: torch.Tensor) -> torch.Tensor:
        return self.removed[roots]

    def check_kills(self) -> bool:
        """A killing layer (tied) keeps its input and output channels together."""
        changed = False
        for name, ins, outs in self.kills:
            split = self.gone(ins) != self.gone(outs)
            changed |= self.keep(torch.cat([ins[split], outs[split]]),
                                 f"'{name}' zeroes it, but its input or output is still "
                                 'needed elsewhere')
        return changed

    def check_site(self, name: str, site: Site) -> bool:
        changed = False
        calls = [(c, r) for c, r in zip(site.calls, self.in_roots[name]) if r is not None]
        if calls:
            gones = [self.gone(r) for _, r in calls]
            agree = torch.stack(gones).all(0)
            for g, (_, r) in zip(gones, calls):
                changed |= self.keep(r[g & ~agree],
                                     f"'{name}' is called with different channels")
            if not site.handler.tied(site.module):
                changed |= self._check_fold(name, site, calls, agree)
        changed |= self._check_groups(name, site)
        return changed

    def _check_fold(self, name, site, calls, gone) -> bool:
        changed = False
        idx = gone.nonzero().flatten()
        vals = torch.stack([c.const[idx] for c, _ in calls])
        roots = calls[0][1]
        varying = torch.isnan(vals).any(0) | (vals != vals[:1]).any(0)
        changed |= self.keep(roots[idx[varying]],
                             f"its value reaching '{name}' is not a constant "
                             '(padding/pooling border effects or input-dependent)')
        ok = ~varying
        if not site.handler.can_fold(site.module, vals[0][ok]):
            nonzero = ok & (vals[0] != 0)
            changed |= self.keep(roots[idx[nonzero]],
                                 f"a non-zero constant reaches '{name}', which cannot "
                                 'fold it exactly')
        return changed

    def _check_groups(self, name: str, site: Site) -> bool:
        g_in, g_out, whole = site.handler.groups(site.module)
        changed = False
        sides = []
        if site.out_ids is not None:
            sides.append((self.out_roots[name], g_out))
        roots_in = next((r for r in self.in_roots[name] if r is not None), None)
        if roots_in is not None:
            sides.append((roots_in, g_in))
        for roots, g in sides:
            changed |= self._uniform(name, roots, g, whole)
        return changed

    def _uniform(self, name: str, roots: torch.Tensor, g: int, whole: bool) -> bool:
        if len(roots) % g:
            return False
        gone = self.gone(roots).view(g, -1)
        counts = gone.sum(1)
        changed = False
        per = gone.shape[1]
        if whole:
            partial = (counts > 0) & (counts < per)
            changed |= self.keep(roots.view(g, -1)[partial].flatten(),
                                 f"'{name}' normalizes whole groups")
            counts = self.gone(roots).view(g, -1).sum(1)
            if bool((counts == per).all()):
                changed |= self.keep(roots.view(g, -1)[0],
                                     f"'{name}' must keep a channel")
            return changed
        target = min(int(counts.min()), per - 1)
        if bool((counts == target).all()):
            return False
        # the first `target` removed channels of each group go, the others stay
        rank = gone.cumsum(1)
        extra = gone & (rank > target)
        return self.keep(roots.view(g, -1)[extra],
                         f"'{name}' has {g} groups that must stay equal in size")


def make_plan(trace: Trace) -> Plan:
    """Decide the removals for a traced, masked model (see the module docstring)."""
    dec = _Decider(trace)
    dec.initial()
    changed = True
    while changed:
        changed = dec.check_kills()
        for name, site in trace.sites.items():
            changed |= dec.check_site(name, site)
        for where, ids, pieces in trace.uniform:
            changed |= dec._uniform(where, trace.uf.roots(ids), pieces, False)
    return _build(trace, dec)


def _build(trace: Trace, dec: _Decider) -> Plan:
    plan = Plan()
    for name, site in trace.sites.items():
        sp = SitePlan()
        if site.out_ids is not None:
            gone = dec.gone(dec.out_roots[name])
            sp.keep_out = (~gone).nonzero().flatten()
            plan.masked[name] = int(dec.dead[name].sum())
            plan.removed[name] = int(gone.sum())
        call = next(((c, r) for c, r in zip(site.calls, dec.in_roots[name]) if r is not None),
                    None)
        if call is not None:
            gone = dec.gone(call[1])
            sp.keep_in = (~gone).nonzero().flatten()
            if not site.handler.tied(site.module) and bool(gone.any()):
                sp.fold_idx = gone.nonzero().flatten()
                sp.fold_val = call[0].const[sp.fold_idx]
        if site.handler.tied(site.module):
            sp.keep_out = sp.keep_in
        plan.sites[name] = sp
    for pname, (dim, ids) in trace.params.items():
        gone = dec.gone(trace.uf.roots(ids))
        if bool(gone.any()):
            plan.params[pname] = (dim, (~gone).nonzero().flatten())
    for name, roots in dec.out_roots.items():
        kept = roots[dec.dead[name] & ~dec.gone(roots)]
        for r in kept.tolist():
            plan.kept_reasons[dec.reason.get(r, 'kept')] += 1
    for name, _, outs in dec.kills:
        for r in outs[~dec.gone(outs)].tolist():
            plan.kept_reasons[dec.reason.get(r, 'kept')] += 1
    return plan
