"""Record one real forward pass and the channel labels of every activation in it.

Why a dispatch mode and not torch.fx: ``torch.fx.symbolic_trace`` runs the model on proxies,
so Python control flow that looks at values, ``len()`` of tensors, non-tensor arguments and
many real models fail to trace. Here the model runs *for real* on the example input while a
``TorchDispatchMode`` sees every ATen operator that executes, and module hooks see every
call of a layer that has a handler (Conv, Linear, BatchNorm, ...). Whatever Python the
model runs (branches on values, dict/tuple outputs, several inputs, a module called twice)
is simply what gets recorded. The price is that only the path taken for this input is seen,
which is also the path the exactness check verifies.

Inside a handled layer the operators are not recorded: the layer's handler knows how its
channels map (see :mod:`prunus.layers.torch.handlers`). Everywhere else the operator table of
:mod:`prunus.speedup.ops` propagates labels (see :mod:`prunus.speedup.labels`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from prunus.speedup import ops
from prunus.speedup.flops import op_flops
from prunus.speedup.observe import call_model, channel_constants, op_signature, tensors_in
from prunus.layers.torch.handlers import Handler, find_handler
from prunus.layers.torch import attention, conv1d, mha, rnn  # noqa: F401  (they register their handlers)
from prunus.speedup.labels import (UnionFind, broadcast_union, compress, expand_dims,
                                   none_like, varying_dims)


@dataclass
class Call:
    """One call of a handled layer: the ids and constant values of its input channels."""

    in_ids: torch.Tensor | None
    const: torch.Tensor | None
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


@dataclass
class Site:
    """A handled layer of the model and everything recorded about its calls.

    ``kills`` holds, per call of a tied layer that ignores some input channels
    (:meth:`~prunus.layers.torch.handlers.Handler.killed`), the ids of those input channels
    and the fresh ids of the constant channels it outputs in their place.
    """

    name: str
    module: nn.Module
    handler: Handler
    out_ids: torch.Tensor | None = None
    calls: list[Call] = field(default_factory=list)
    kills: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)


@dataclass
class Trace:
    """Result of :func:`trace_model`.

    Attributes:
        uf: ties between channel ids.
        sites: handled layers by qualified name, in first-call order.
        params: parameters used outside handled layers: name -> (dim, ids along dim).
        blocked: id -> why that channel must be kept.
        uniform: (where, ids, pieces): an even split (chunk) of these ids, which must lose
            the same number of channels in every piece.
        output: the model's output on the example input.
        flops: FLOPs of that forward (torch's FLOP formulas, a MAC counts 2).
        signature: every operator run outside handled layers, with its output shapes, in
            order: a later run with the same signature propagates the same labels.
    """

    uf: UnionFind
    sites: dict[str, Site]
    params: dict[str, tuple[int, torch.Tensor]]
    blocked: dict[int, str]
    uniform: list[tuple[str, torch.Tensor, int]]
    output: Any
    flops: int = 0
    signature: list[tuple[Any, tuple]] = field(default_factory=list)


class _Tracer:
    def __init__(self, model: nn.Module, custom: dict[type, Handler] | None,
                 constants: bool, strict: bool) -> None:
        self.uf = UnionFind()
        self.strict = strict
        self.constants = constants
        self.flops = 0
        self.signature: list[tuple[Any, tuple]] = []
        self.labels: dict[int, tuple[torch.Tensor, torch.Tensor, bool]] = {}
        self.sites: dict[str, Site] = {}
        self.params: dict[str, tuple[int, torch.Tensor]] = {}
        self.blocked: dict[int, str] = {}
        self.uniform: list[tuple[str, torch.Tensor, int]] = []
        self.in_chunk = False
        self.skip = 0
        self.path: list[str] = []
        self.owned = {id(t): n for n, t in list(model.named_parameters()) +
                      list(model.named_buffers())}
        self.custom = custom
        self.rules: dict[Any, str] = {}

    # -- label bookkeeping -------------------------------------------------------------
    def get(self, t: torch.Tensor) -> tuple[torch.Tensor, bool]:
        entry = self.labels.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1], entry[2]
        name = self.owned.get(id(t))
        if name is not None:
            big = [d for d, s in enumerate(t.shape) if s > 1]
            if len(big) == 1:
                ids = self.uf.fresh(t.shape[big[0]])
                shape = [1] * t.dim()
                shape[big[0]] = t.shape[big[0]]
                self.params[name] = (big[0], ids)
                lab = ids.view(shape)
                self.labels[id(t)] = (t, lab, False)
                return lab, False
        return none_like(t.shape), False

    def known(self, t: torch.Tensor) -> bool:
        """Whether ``t`` may carry labels or be input-dependent (else its ops are skipped)."""
        entry = self.labels.get(id(t))
        return (entry is not None and entry[0] is t) or id(t) in self.owned

    def put(self, t: Any, lab: torch.Tensor, dynamic: bool) -> None:
        if isinstance(t, torch.Tensor) and (dynamic or bool((lab != 0).any())):
            if lab.dim() != t.dim():
                lab = none_like(t.shape)
            self.labels[id(t)] = (t, lab, dynamic)

    def block(self, lab: torch.Tensor, reason: str) -> None:
        for i in torch.unique(lab).tolist():
            if i:
                self.blocked.setdefault(i, reason)

    def where(self) -> str:
        return self.path[-1] if self.path else '<model>'

    # -- operators -------------------------------------------------------------------
    def rule(self, func: Any) -> str:
        rule = self.rules.get(func)
        if rule is None:
            rule = self.rules[func] = ops.rule_name(func)
        return rule

    def on_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        tensors = tensors_in(args)
        if kwargs:
            tensors_in(kwargs, tensors)
        if not any(self.known(t) for t in tensors):
            return
        got = [self.get(t) for t in tensors]
        dynamic = any(d for _, d in got)
        if not dynamic and not any(bool((lab != 0).any()) for lab, _ in got):
            return
        rule = self.rule(func)
        outs = out if isinstance(out, (tuple, list)) else [out]
        try:
            result = getattr(self, '_' + rule)(func, args, kwargs, tensors, got, outs)
        except Exception:  # an op the rule did not foresee: keep its channels, never crash
            if self.strict:
                raise
            result = self._block(func, args, kwargs, tensors, got, outs)
        for o, lab in zip(outs, result):
            self.put(o, lab, dynamic)

    def _reason(self, func: Any, tensors: list[torch.Tensor]) -> str:
        shapes = ', '.join(str(tuple(t.shape)) for t in tensors)
        return f"used by '{func}' in '{self.where()}' (input shapes {shapes})"

    def _block(self, func, args, kwargs, tensors, got, outs):
        for lab, _ in got:
            self.block(lab, self._reason(func, tensors))
        return [none_like(o.shape) if isinstance(o, torch.Tensor) else None for o in outs]

    def _param_along(self, t: torch.Tensor, labelled: list) -> torch.Tensor | None:
        """Labels for a parameter with several non-singleton dims (a position embedding
        (1, S, D)) met pointwise by tensors labelled along one of its dims: it gets fresh
        ids there, so its slices follow those channels (the speedup cuts it along that dim)."""
        name = self.owned.get(id(t))
        if name is None or name in self.params or not t.is_floating_point():
            return None
        dims = set()
        for lt, llab in labelled:
            off = t.dim() - lt.dim()
            dims |= {d + off for d in varying_dims(llab) if 0 <= d + off < t.dim()
                     and t.shape[d + off] > 1 and _channel_dim(llab, d)}
        if len(dims) != 1:
            return None
        d = dims.pop()
        ids = self.uf.fresh(t.shape[d])
        shape = [1] * t.dim()
        shape[d] = t.shape[d]
        self.params[name] = (d, ids)
        lab = ids.view(shape)
        self.labels[id(t)] = (t, lab, False)
        return lab

    def _pointwise(self, func, args, kwargs, tensors, got, outs):
        labelled = [(t, lab) for t, (lab, _) in zip(tensors, got) if bool((lab != 0).any())]
        tied = False
        for i, t in enumerate(tensors):
            if not bool((got[i][0] != 0).any()) and not got[i][1]:
                lab = self._param_along(t, labelled)
                if lab is not None:
                    got[i], tied = (lab, False), True
        for t, (lab, dyn) in zip(tensors, got):
            if bool((lab != 0).any()):
                continue
            for lt, llab in labelled:
                off = t.dim() - lt.dim()
                clash = any(0 <= d + off < t.dim() and t.shape[d + off] > 1
                            for d in varying_dims(llab))
                if dyn or clash:
                    self.block(llab, self._reason(func, tensors) +
                               ' together with an input-dependent or unprunable operand')
        out = broadcast_union(self.uf, [lab for lab, _ in got])
        if tied:  # the parameter tied channels that differed along another dim (tokens)
            out = compress(self.uf.roots(out))
        return [out] * len(outs)

    def _restride(self, func, args, kwargs, tensors, got, outs):
        """In-place ``as_strided_`` to the same shape with the same strides wherever a dim
        has more than one element reads every element where it was (adaptive pooling to
        1x1 fixing its memory format): labels pass; any other restride keeps its channels."""
        shape, stride, offset = getattr(self, 'restrided', ((), (), 0))
        size, new_stride = tuple(args[1]), tuple(args[2])
        new_offset = args[3] if len(args) > 3 and args[3] is not None else offset
        same = (size == shape and new_offset == offset and
                all(n == o for s, n, o in zip(size, new_stride, stride) if s > 1))
        if not same:
            return self._block(func, args, kwargs, tensors, got, outs)
        return [got[0][0]] * len(outs)

    def _identity(self, func, args, kwargs, tensors, got, outs):
        return [got[0][0]] * len(outs)

    def _direct(self, func, args, kwargs, tensors, got, outs):
        return [compress(func(got[0][0], *args[1:], **kwargs))]

    def _replay(self, func, args, kwargs, tensors, got, outs, full):
        data = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
        labs = [self.get(t)[0] for t in data]
        res = ops.replay(func, args, kwargs, labs, [t.shape for t in data], full)
        return res if isinstance(res, list) else [res]

    def _along_dim(self, func, args, kwargs, tensors, got, outs):
        name = func.overloadpacket.__name__
        if name not in ('cat', 'stack'):
            x, lab = args[0], got[0][0]
            dim = ops.dim_arg(args, kwargs, 2 if name.startswith(('split', 'unsafe_split'))
                               else 1, 0) % x.dim()
            if dim in varying_dims(lab):
                sizes = {o.shape[dim] for o in outs}
                if not self.in_chunk or len(sizes) > 1:
                    # a fixed slice bound or uneven split would shift when channels go
                    return self._block(func, args, kwargs, tensors, got, outs)
                ids = expand_dims(lab, x.shape, [dim]).movedim(dim, 0).reshape(x.shape[dim], -1)
                self.uniform.append((f"'{func}' in '{self.where()}'", ids[:, 0], len(outs)))
        return self._replay(func, args, kwargs, tensors, got, outs, full=False)

    def _full_replay(self, *a):
        outs = self._replay(*a, full=True)
        for lab in outs:
            self._tie_blocks(lab)
        return outs

    def _tie_blocks(self, lab: torch.Tensor) -> None:
        """A reshape that splits channels over several dims, e.g. ``(N, C) -> (N, g, C/g)``
        in a channel shuffle or ``(N, S, E) -> (N, S, heads, E/heads)``, only stays valid if
        every block loses the same inner positions: tie them across the outer dims."""
        dims = varying_dims(lab)
        if len(dims) < 2:
            return
        rows = lab.movedim(dims[-1], 0).reshape(lab.shape[dims[-1]], -1)
        for row in rows.tolist():
            ids = [i for i in row if i]
            for other in ids[1:]:
                self.uf.union(ids[0], other)

    def _reduction(self, func, args, kwargs, tensors, got, outs):
        x, lab = args[0], got[0][0]
        name = func.overloadpacket.__name__
        if name in ('norm', 'linalg_vector_norm'):
            args = (args[0],) + tuple(args[2:])
        dims, keep = ops.reduced_dims(func, args, kwargs, x.dim())
        if set(dims) & set(varying_dims(lab)):
            return self._block(func, args, kwargs, tensors, got, outs)
        for d in sorted(dims, reverse=True):
            if not keep:
                lab = lab.squeeze(d)
        return [lab] * len(outs)

    def _keepshape(self, func, args, kwargs, tensors, got, outs):
        x, lab = args[0], got[0][0]
        pos = 2 if func.overloadpacket.__name__ == 'topk' else 1
        dim = ops.dim_arg(args, kwargs, pos, -1) % max(x.dim(), 1)
        if dim in varying_dims(lab):
            return self._block(func, args, kwargs, tensors, got, outs)
        return [lab] * len(outs)

    def _spatial(self, func, args, kwargs, tensors, got, outs):
        x, lab = args[0], got[0][0]
        k = ops.spatial_rank(func)
        if k == 0 or any(d >= x.dim() - k for d in varying_dims(lab)):
            return self._block(func, args, kwargs, tensors, got, outs)
        return [lab if o.dim() == lab.dim() else none_like(o.shape) for o in outs]

    def _prelu(self, func, args, kwargs, tensors, got, outs):
        x, w = args[0], args[1]
        wlab = self.get(w)[0]
        if w.numel() > 1:
            shape = [1] * x.dim()
            shape[1 % x.dim()] = w.numel()
            wlab = wlab.reshape(-1).expand(w.numel()).reshape(shape)
        return [broadcast_union(self.uf, [got[0][0], wlab])]

    def _layer_norm(self, func, args, kwargs, tensors, got, outs):
        x, lab = args[0], got[0][0]
        k = len(args[1])
        if any(d >= x.dim() - k for d in varying_dims(lab)):
            return self._block(func, args, kwargs, tensors, got, outs)
        return [lab] + [none_like(o.shape) for o in outs[1:]]

    # -- handled layers --------------------------------------------------------------
    def on_module(self, name: str, module: nn.Module, handler: Handler, args: tuple,
                  output: Any) -> None:
        site = self.sites.get(name)
        if site is None:
            site = self.sites[name] = Site(name, module, handler)
        ins, outs = tensors_in(args), tensors_in(output)
        got = [self.get(t) for t in ins]
        dynamic = any(d for _, d in got)
        keeps = getattr(handler, 'keeps_all', False)
        if callable(keeps):
            keeps = keeps(module)
        if not keeps and ins:
            self._other_inputs(name, module, handler, ins, got)
        if keeps or not outs:
            for lab, _ in got:
                self.block(lab, f"input of '{name}' ({type(module).__name__}), "
                                'whose channels are kept')
            for o in outs:
                self.put(o, none_like(o.shape), dynamic)
            return
        x, lab = (ins[0], got[0][0]) if ins else (None, None)
        in_ids, const = self._input_channels(name, module, handler, x, lab)
        site.calls.append(Call(in_ids, const, tuple(x.shape) if x is not None else (),
                               tuple(outs[0].shape) if outs else ()))
        if handler.tied(module):
            out_lab = lab if in_ids is not None else none_like(outs[0].shape)
            killed = handler.killed(module) if in_ids is not None else None
            if killed is not None:
                out_lab = self._kill(site, in_ids, killed, x.dim(), handler.in_dim % x.dim())
            self.put(outs[0], out_lab, dynamic)
            return
        if site.out_ids is None:
            site.out_ids = self.uf.fresh(handler.count_out(module))
        y = outs[0]
        shape = [1] * y.dim()
        shape[handler.out_dim] = len(site.out_ids)
        self.put(y, site.out_ids.view(shape), dynamic)
        link = getattr(handler, 'link_outputs', None)
        if link is not None:  # further outputs with the same channels (an RNN's h_n)
            link(self, module, site.out_ids, ins, outs, dynamic)

    def _other_inputs(self, name: str, module: nn.Module, handler: Handler,
                      ins: list[torch.Tensor], got: list) -> None:
        """Only the first input's channels are the layer's input channels: the channels of
        any other tensor it reads stay (attention's key/value from another tensor); a
        layer that reads them all as one (``single_input``) then keeps its inputs whole."""
        others = [(t, lab) for t, (lab, _) in zip(ins[1:], got[1:])
                  if t is not ins[0] and t.is_floating_point()]
        for t, lab in others:
            self.block(lab, f"extra input of '{name}' ({type(module).__name__})")
        if others and getattr(handler, 'single_input', False):
            self.block(got[0][0], f"input of '{name}' ({type(module).__name__}), whose "
                                  'queries, keys and values come from different tensors')

    def _kill(self, site: Site, in_ids: torch.Tensor, killed: torch.Tensor, rank: int,
              dim: int) -> torch.Tensor:
        """Output labels of a tied layer whose ``killed`` channels ignore their input:
        those become new (constant) channels, no longer tied to the input's."""
        out_ids = in_ids.clone()
        fresh = self.uf.fresh(int(killed.sum()))
        out_ids[killed] = fresh
        site.kills.append((in_ids[killed], fresh))
        shape = [1] * rank
        shape[dim] = len(out_ids)
        return out_ids.view(shape)

    def _input_channels(self, name, module, handler, x, lab):
        """Ids along the layer's input-channel dim and each channel's constant value."""
        if handler.in_dim is None or x is None:
            return None, None
        d = handler.in_dim % x.dim()
        others = [v for v in varying_dims(lab) if v != d]
        if others:
            self.block(lab, f"input of '{name}' has channel labels on dims {others}")
            return None, None
        ids = expand_dims(lab, x.shape, [d]).reshape(-1)
        if not bool((ids != 0).any()):
            return None, None
        # tied layers (norms, depthwise convs) lose channels with their input: no folding
        fold = self.constants and not handler.tied(module)
        return ids, channel_constants(x, d) if fold else None


class _Recorder(TorchDispatchMode):
    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def _inplace_on_meta(self, func: Any, args: tuple) -> bool:
        """An in-place pointwise op (``relu_``, ``hardtanh_``, ``add_``) on a meta tensor,
        whose result is its first argument unchanged."""
        return (bool(args) and isinstance(args[0], torch.Tensor) and args[0].is_meta
                and func.overloadpacket.__name__.endswith('_')
                and self.tracer.rule(func) == 'pointwise')

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket.__name__ == 'as_strided_' and args:
            src = args[0]  # its layout before an in-place restride
            self.tracer.restrided = (tuple(src.shape), src.stride(), src.storage_offset())
        if self._inplace_on_meta(func, args):
            out = args[0]  # the meta kernel would only check broadcasting, slowly in Python
        else:
            out = func(*args, **kwargs)
        self.tracer.flops += op_flops(func, args, kwargs, out)
        if self.tracer.skip == 0:
            self.tracer.signature.append(op_signature(func, out))
            self.tracer.on_op(func, args, kwargs, out)
        return out


class _ChunkSpotter(TorchFunctionMode):
    """Tells ``chunk`` (pieces follow the channel count) from ``split(x, 6)`` (fixed
    sizes, which would shift when channels go): both reach ATen as ``split.Tensor``."""

    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.chunk, torch.chunk):
            self.tracer.in_chunk = True
            try:
                return func(*args, **kwargs)
            finally:
                self.tracer.in_chunk = False
        return func(*args, **kwargs)


def _channel_dim(lab: torch.Tensor, d: int) -> bool:
    """Whether ``lab`` holds distinct channel ids along ``d`` everywhere (a channel
    dim; a token dim repeats ids)."""
    fibers = lab.movedim(d, -1).reshape(-1, lab.shape[d])
    ordered = fibers.sort(1).values
    return bool((fibers != 0).all()) and bool((ordered[:, 1:] != ordered[:, :-1]).all())


def _install_hooks(model: nn.Module, tracer: _Tracer) -> list[Any]:
    handles = []
    for name, module in model.named_modules():
        handler = find_handler(module, tracer.custom)

        def pre(mod, args, _name=name, _handler=handler):
            if tracer.skip == 0:
                tracer.path.append(_name)
            if _handler is not None:
                tracer.skip += 1

        def post(mod, args, output, _name=name, _handler=handler):
            if _handler is not None:
                tracer.skip -= 1
                if tracer.skip == 0:
                    with _disable_current_modes():  # label maths is not part of the model
                        tracer.on_module(_name, mod, _handler, args, output)
            if tracer.skip == 0 and tracer.path:
                tracer.path.pop()

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post, always_call=True))
    return handles


def trace_model(model: nn.Module, inputs: Any,
                custom_handlers: dict[type, Handler] | None = None, *,
                constants: bool = True, strict: bool = False) -> Trace:
    """Run ``model`` once on ``inputs`` (eval mode, no grad) and record channel labels.

    Args:
        model: the (already masked) model; it is not modified.
        inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
        custom_handlers: extra handlers by layer type, taking precedence over the table.
        constants: record each handled layer's per-channel constant inputs
            (``Call.const``, needed to fold removed channels; not for grouping).
        strict: raise where a rule fails on an operator instead of keeping its channels
            (a meta-device trace then falls back to a real run; see :mod:`.structure`).

    Returns:
        The :class:`Trace`, whose ``output`` is the model's output for ``inputs``.
    """
    tracer = _Tracer(model, custom_handlers, constants, strict)
    for t in tree_flatten(inputs)[0]:
        if isinstance(t, torch.Tensor):
            tracer.labels[id(t)] = (t, none_like(t.shape), True)
    handles = _install_hooks(model, tracer)
    try:
        with torch.no_grad(), _ChunkSpotter(tracer), _Recorder(tracer):
            output = call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    for t in tree_flatten(output)[0]:
        if isinstance(t, torch.Tensor):
            tracer.block(tracer.get(t)[0], 'part of the model output')
    return Trace(tracer.uf, tracer.sites, tracer.params, tracer.blocked, tracer.uniform,
                 output, tracer.flops, tracer.signature)
