"""Remember the dependency-aware pruner's structure trace for the speedup that follows.

``L1FilterPruner(model, ..., dependency_aware=True, dummy_input=x)`` traces ``model`` on
``x``; ``speedup(model, x, pruner)`` would trace it again. The first trace is kept here,
keyed weakly on the model (it goes when the model goes), and handed out only while

* the model has the same modules, layer settings (``extra_repr``) and the very same
  parameter and buffer objects with the same shapes (mask buffers aside: pruning adds
  them), and
* the inputs are the same objects, unchanged (tensor version counters), with the same
  non-tensor values, and the custom handlers are the same.

Even then the speedup only takes the structure from it and re-checks it by running the
masked model (:func:`prunus.speedup.replay.replay`).
"""
from __future__ import annotations

import dataclasses
import itertools
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from prunus.layers.torch import masking
from prunus.layers.torch.handlers import Handler
from prunus.speedup.trace import Site, Trace


@dataclass
class _Entry:
    model_key: tuple
    input_key: tuple
    input_refs: list[weakref.ref]
    handlers_key: tuple
    trace: Trace


_CACHE: weakref.WeakKeyDictionary[nn.Module, _Entry] = weakref.WeakKeyDictionary()


def fingerprint(model: nn.Module) -> tuple:
    """What must not change for a trace of ``model`` to stay valid (see module doc)."""
    parts = []
    for name, module in model.named_modules():
        masks = {f'{p}_mask' for p in masking.masked_names(module)}
        tensors = tuple((n, id(t), tuple(t.shape), t.dtype) for n, t in
                        itertools.chain(module._parameters.items(), module._buffers.items())
                        if t is not None and n not in masks)
        parts.append((name, type(module), module.extra_repr(), tensors))
    return tuple(parts)


def _inputs_key(inputs: Any) -> tuple[tuple, list[weakref.ref]]:
    leaves, spec = tree_flatten(inputs)
    key, refs = [], []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            key.append((id(leaf), tuple(leaf.shape), leaf.dtype, leaf.device, leaf._version))
            refs.append(weakref.ref(leaf))
        else:
            key.append(repr(leaf))
    return (str(spec), tuple(key)), refs


def _handlers_key(custom: dict[type, Handler] | None) -> tuple:
    return tuple(sorted((id(k), id(v)) for k, v in (custom or {}).items()))


def remember(model: nn.Module, inputs: Any, custom: dict[type, Handler] | None,
             trace: Trace) -> None:
    """Keep ``trace`` of ``model`` on ``inputs`` for a later :func:`recall`."""
    input_key, refs = _inputs_key(inputs)
    # only the structure is kept: no modules of the traced copy, no output
    sites = {n: Site(n, None, s.handler, s.out_ids, s.calls) for n, s in trace.sites.items()}
    light = dataclasses.replace(trace, sites=sites, output=None)
    _CACHE[model] = _Entry(fingerprint(model), input_key, refs, _handlers_key(custom), light)


def recall(model: nn.Module, inputs: Any, custom: dict[type, Handler] | None
           ) -> Trace | None:
    """The remembered trace of ``model`` on ``inputs``, or None if anything changed."""
    entry = _CACHE.get(model)
    if entry is None:
        return None
    input_key, refs = _inputs_key(inputs)
    same_inputs = input_key == entry.input_key and all(
        old() is new() for old, new in zip(entry.input_refs, refs))
    if (not same_inputs or _handlers_key(custom) != entry.handlers_key
            or fingerprint(model) != entry.model_key):
        return None
    return entry.trace
