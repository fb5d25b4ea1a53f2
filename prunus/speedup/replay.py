"""Reuse a structure trace: one plain forward of the masked model fills in the values.

The dependency-aware pruner traced the model's channel structure before it had masks
(:mod:`prunus.speedup.structure`). The speedup needs the same structure plus what only
the masked model knows: the constant value of every removed channel where a layer
consumes it, and the masked model's output for the exactness check. :func:`replay` runs
the masked model once with hooks on the handled layers only, collects those values, and
checks the run against the trace: the same handled calls with the same shapes, and the
same operators with the same output shapes in between. Any difference returns None and
the caller traces afresh, so a reused trace is always one this run would have recorded.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from prunus.speedup.flops import op_flops
from prunus.layers.torch.handlers import Handler, find_handler
from prunus.speedup.observe import call_model, channel_constants, op_signature, tensors_in
from prunus.speedup.trace import Call, Site, Trace


class _Mismatch(Exception):
    """The run left the recorded path."""


class _Replayer(TorchDispatchMode):
    """Counts FLOPs and compares operators outside handled layers with the signature."""

    def __init__(self, signature: list) -> None:
        super().__init__()
        self.signature, self.seen, self.depth, self.flops = signature, 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.flops += op_flops(func, args, kwargs, out)
        if self.depth == 0:
            if (self.seen >= len(self.signature)
                    or self.signature[self.seen] != op_signature(func, out)):
                raise _Mismatch(str(func))
            self.seen += 1
        return out


def find_handlers(model: nn.Module, custom: dict[type, Handler] | None = None
                  ) -> dict[str, Handler]:
    """:func:`find_handler` of every module of ``model`` that has one, by qualified name
    in ``named_modules`` order: one lookup per module for the whole pass, as the
    attention detectors read every module's children (each walk of the model repeated
    that)."""
    found = {}
    for name, module in model.named_modules():
        handler = find_handler(module, custom)
        if handler is not None:
            found[name] = handler
    return found


def _bind(trace: Trace, modules: dict[str, nn.Module], handlers: dict[str, Handler]
          ) -> dict[str, Site] | None:
    sites = {}
    for name, old in trace.sites.items():
        module = modules.get(name)
        if module is None or handlers.get(name) is not old.handler:
            return None
        sites[name] = Site(name, module, old.handler, old.out_ids)
    return sites


def _hooks(modules, handlers, trace, sites, mode):
    def pre(mod, args, _h):
        mode.depth += 1

    def post(mod, args, output, _name, _h):
        mode.depth -= 1
        if mode.depth:
            return
        site, old = sites.get(_name), trace.sites.get(_name)
        if site is None or len(site.calls) >= len(old.calls):
            raise _Mismatch(_name)
        recorded = old.calls[len(site.calls)]
        ins, outs = tensors_in(args), tensors_in(output)
        x = ins[0] if ins else None
        shapes = (tuple(x.shape) if x is not None else (), tuple(outs[0].shape) if outs else ())
        if shapes != (recorded.in_shape, recorded.out_shape):
            raise _Mismatch(_name)
        const = None
        if recorded.in_ids is not None and not _h.tied(mod):  # tied layers never fold
            with _disable_current_modes():  # our measuring is not part of the model's run
                const = channel_constants(x, _h.in_dim % x.dim())
        site.calls.append(Call(recorded.in_ids, const, *shapes))

    handles = []
    for name, h in handlers.items():
        module = modules[name]
        handles.append(module.register_forward_pre_hook(lambda m, a, _h=h: pre(m, a, _h)))
        handles.append(module.register_forward_hook(
            lambda m, a, o, _n=name, _h=h: post(m, a, o, _n, _h)))
    return handles


def replay(trace: Trace, model: nn.Module, inputs: Any,
           custom_handlers: dict[type, Handler] | None = None,
           handlers: dict[str, Handler] | None = None) -> Trace | None:
    """``trace``'s structure with ``model``'s constants, output and FLOPs, or None.

    Args:
        trace: a trace of a model with the same module names and layer types (it may
            come from a meta-device copy of the unmasked model).
        model: the masked model to run (eval mode); not modified.
        inputs: the inputs the trace was recorded on.
        custom_handlers: the handlers the trace was recorded with.
        handlers: ``find_handlers(model, custom_handlers)`` if the caller has it.
    """
    modules = dict(model.named_modules())
    if handlers is None:
        handlers = find_handlers(model, custom_handlers)
    sites = _bind(trace, modules, handlers)
    if sites is None:
        return None
    mode = _Replayer(trace.signature)
    handles = _hooks(modules, handlers, trace, sites, mode)
    try:
        with torch.no_grad(), mode:
            output = call_model(model, inputs)
    except _Mismatch:
        return None
    finally:
        for h in handles:
            h.remove()
    if mode.seen != len(trace.signature) or any(
            len(site.calls) != len(trace.sites[n].calls) for n, site in sites.items()):
        return None
    return Trace(trace.uf, sites, trace.params, trace.blocked, trace.uniform, output,
                 mode.flops, trace.signature)
