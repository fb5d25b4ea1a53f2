"""The speedup pass: mask, trace, plan, remove, verify; all on a copy of the model."""
from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten
from prunus._interop import guard_triton_after_tensorflow
from prunus.compression.errors import SpeedupError

guard_triton_after_tensorflow()  # torch's FLOP counter imports triton
from prunus.speedup.cache import recall  # noqa: E402
from prunus.speedup.copying import shared_copy, unshare  # noqa: E402
from prunus.speedup.flops import FlopCount, unfused_attention  # noqa: E402
from prunus.layers.torch import constant_folding, constants  # noqa: E402
from prunus.layers.torch.learned_constants import can_learn_sources  # noqa: E402
from prunus.layers.torch.attention import DETECTED  # noqa: E402
from prunus.layers.torch.handlers import (HANDLERS, ConvHandler, ConvTransposeHandler,  # noqa: E402
                                          Handler, LinearHandler, check_custom_handlers)
from prunus.layers.torch.inputs import blame_inputs, check_inputs, locate_failure  # noqa: E402
from prunus.layers.torch.stream_attrs import sync_width_attributes  # noqa: E402
from prunus.speedup.masks import bake_masks, load_masks
from prunus.speedup.observe import call_model
from prunus.speedup.plan import Plan, make_plan
from prunus.speedup.replay import find_handlers, replay
from prunus.speedup.summary import LayerSummary, SpeedupSummary
from prunus.speedup.trace import Trace, trace_model
from prunus.speedup.sources import Sources, measure_sources
from prunus.speedup.train_constants import train_mode_constants

_OFFSET_HANDLERS = (ConvHandler, ConvTransposeHandler, LinearHandler)

_HINT = ('pass custom_handlers={LayerType: handler} with a prunus.speedup.Handler subclass '
         'for it')


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _fold(name: str, handler: Handler, module: nn.Module, sp, train: dict,
          sources: tuple[Sources, nn.Parameter] | None) -> None:
    """Fold removed constant inputs: the train-mode constants into the layer's learnable
    constant path (a bias for the few handlers without one), with constants that learn
    where they come from removed BatchNorm shifts; the eval-mode difference into a
    decaying eval-only buffer."""
    values = sp.fold_val
    measured = train.get(name)
    if measured is not None and isinstance(handler, _OFFSET_HANDLERS):
        values = torch.where(torch.isnan(measured), sp.fold_val, measured)
    learn = None if sources is None else sources[0].sites.get(name)
    if learn is not None and isinstance(handler, (ConvHandler, LinearHandler)) \
            and can_learn_sources(module):
        rows, index, slopes = learn
        rest = torch.ones(len(sp.fold_idx), dtype=torch.bool)
        rest[rows] = False
        constant_folding.add_sources(module, sp.fold_idx[rows], values[rows], sources[1], index, slopes)
        handler.fold_in(module, sp.fold_idx[rest], values[rest])
    else:
        handler.fold_in(module, sp.fold_idx, values)
    offset = sp.fold_val - values
    if bool(offset.any()):
        constant_folding.add_constants(module, sp.fold_idx, offset, constants.OFFSET)


def _apply_plan(trace: Trace, plan: Plan, model: nn.Module, train: dict,
                sources: Sources | None = None) -> None:
    shared = None
    if sources is not None:  # one vector, registered on every layer that reads it
        like = next(model.parameters())
        shared = (sources, nn.Parameter(sources.shifts.to(like.device, like.dtype)))
    for name, site in trace.sites.items():
        sp, h, m = plan.sites[name], site.handler, site.module
        call = site.calls[0] if site.calls else None
        try:
            inner = getattr(h, 'prune_inner', None)
            if inner is not None:
                m = _replace_module(model, name, m, inner(m, sp))
                site.module = m
            if h.tied(m):
                if sp.keep_in is not None and len(sp.keep_in) < h.count_in(m):
                    h.prune_in(m, sp.keep_in)
                continue
            if sp.fold_idx is not None:
                _fold(name, h, m, sp, train, shared)
            if sp.keep_in is not None and len(sp.keep_in) < h.count_in(m):
                h.prune_in(m, sp.keep_in)
            if sp.keep_out is not None and len(sp.keep_out) < h.count_out(m):
                h.prune_out(m, sp.keep_out)
        except Exception as exc:
            shapes = f'input {call.in_shape}, output {call.out_shape}' if call else ''
            raise SpeedupError(f"Cannot remove channels of '{name}' ({type(m).__name__}, "
                               f'{shapes}): {exc}; {_HINT}.') from exc
    for pname, (dim, keep) in plan.params.items():
        owner_name, _, attr = pname.rpartition('.')
        owner = model.get_submodule(owner_name)
        old = getattr(owner, attr)
        new = old.data.index_select(dim, keep.to(old.device))
        if isinstance(old, nn.Parameter):
            setattr(owner, attr, nn.Parameter(new, old.requires_grad))
        else:
            setattr(owner, attr, new)
    sync_width_attributes(model)


def _replace_module(model: nn.Module, name: str, old: nn.Module, new: nn.Module) -> nn.Module:
    """Puts ``new`` where ``old`` was (a handler swapped in an equivalent module), in the
    mode ``old`` was in: a fresh module trains, and its dropout would break the check."""
    if new is not old:
        new.train(old.training)
        parent, _, attr = name.rpartition('.')
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return new


def _counts_changed(trace: Trace, before: dict[str, tuple]) -> dict[int, int]:
    changed = {}
    for name, site in trace.sites.items():
        h, m = site.handler, site.module
        old_in, old_out = before[name][:2]
        if len(before[name]) > 2:  # attention: its head count and inner width too
            old_heads, old_inner = before[name][2:]
            lay = h.layout(m)
            if old_heads != lay.num_heads:
                changed[old_heads] = lay.num_heads
                changed[old_inner] = lay.inner
        if old_out != h.count_out(m):
            changed[old_out] = h.count_out(m)
        if old_in is not None and old_in != h.count_in(m):
            changed[old_in] = h.count_in(m)
    return changed


def _attribute_hint(model: nn.Module, path: list[str], changed: dict[int, int]) -> str:
    hits = []
    for name in reversed(path):  # the innermost module holding a stale count names it
        module = model.get_submodule(name)
        for attr, value in vars(module).items():
            if not attr.startswith('_') and isinstance(value, int) and value in changed:
                hits.append(f"{type(module).__name__}.{attr}={value} in '{name}' "
                            f'(now {changed[value]})')
        if hits:
            break
    if not hits:
        return ''
    return ('; attribute(s) holding a channel count: ' + ', '.join(hits) +
            ': compute it from the tensor shape in forward, or update it in a custom handler')


def _run_checked(model: nn.Module, inputs: Any, changed: dict[int, int]) -> tuple[Any, int]:
    try:
        with torch.no_grad(), unfused_attention(), FlopCount() as counter:
            out = call_model(model, inputs)
        return out, counter.total
    except Exception as exc:
        path = locate_failure(model, inputs)[0]  # only on failure: hooks cost time on success
        where = path[-1] if path else '<model>'
        where_type = type(model.get_submodule(where)).__name__ if path else ''
        raise SpeedupError(
            f"The sped-up model fails in '{where}' ({where_type}): {exc}"
            f'{_attribute_hint(model, path, changed)}; the model is unchanged.') from exc


def _compare(ref: Any, out: Any) -> float:
    """The largest difference relative to the output scale; ``inf`` where a value is
    NaN or infinite in one output and not the same in the other (a NaN difference
    must fail the check, not compare as 0)."""
    refs, outs = tree_flatten(ref)[0], tree_flatten(out)[0]
    if len(refs) != len(outs):
        raise SpeedupError(f'The sped-up model returns {len(outs)} outputs where the masked '
                           f'model returns {len(refs)}.')
    worst = 0.0
    for r, o in zip(refs, outs):
        if not isinstance(r, torch.Tensor):
            continue
        if not isinstance(o, torch.Tensor) or r.shape != o.shape:
            raise SpeedupError(f'The sped-up model returns shape {getattr(o, "shape", o)} '
                               f'where the masked model returns {tuple(r.shape)}.')
        worst = max(worst, _relative_error(r, o.to(r.device)))
    return worst


def _relative_error(r: torch.Tensor, o: torch.Tensor) -> float:
    if not r.numel():
        return 0.0
    if not (r.is_floating_point() or r.is_complex()):
        return 0.0 if torch.equal(r, o) else float('inf')
    same = (r == o) | (r.isnan() & o.isnan())  # equal infinities and NaN where NaN was
    differ = ~same
    if not bool(torch.isfinite(r[differ]).all() and torch.isfinite(o[differ]).all()):
        return float('inf')
    finite = r[torch.isfinite(r)]
    # outputs all near zero (a normalization then a mean) differ by rounding alone
    scale = max(float(finite.abs().max()) if finite.numel() else 0.0, 1e-3)
    diff = (r - o).abs().masked_fill(same, 0)
    return float(diff.max()) / scale


def _summarize(trace: Trace, plan: Plan, before: dict, model: nn.Module) -> SpeedupSummary:
    summary = SpeedupSummary(kept=dict(plan.kept_reasons))
    for name, site in trace.sites.items():
        h, m = site.handler, site.module
        old_in, old_out = before[name][:2]
        summary.layers.append(LayerSummary(
            name, type(m).__name__, old_in, None if old_in is None else h.count_in(m),
            old_out, h.count_out(m), plan.masked.get(name, 0), site.out_ids is not None))
    summary.zero_weights = sum(p.numel() - int(torch.count_nonzero(p))
                               for n, p in model.named_parameters()
                               if n.endswith('weight') and p.dim() > 1)
    return summary


def _kills_channels(work: nn.Module, handlers: dict[str, Handler]) -> bool:
    """Whether a tied layer ignores some input channels (a zero-scale BatchNorm): the
    structure trace was taken before masking, so it cannot know, and must not be reused."""
    for name, handler in handlers.items():
        module = work.get_submodule(name)
        if handler.tied(module) and handler.killed(module) is not None:
            return True
    return False


def _masked_trace(work: nn.Module, inputs: Any, custom: dict[type, Handler] | None,
                  cached: Trace | None, what: str = 'example_inputs') -> tuple[Trace, bool]:
    """The masked work model's trace: the pruner's structure trace re-checked by one
    plain run when there is one that still fits, else a full trace. A trace that fails
    because the model itself rejects the inputs says so, naming the layer."""
    with blame_inputs(work, inputs, what):
        if cached is not None:
            handlers = find_handlers(work, custom)
            trace = None if _kills_channels(work, handlers) else \
                replay(cached, work, inputs, custom, handlers)
            if trace is not None:
                return trace, True
        return trace_model(work, inputs, custom), False


def _verify(work: nn.Module, inputs: Any, trace: Trace, before: dict, tolerance: float
            ) -> int:
    """Run the sped-up model, compare with the masked model's output; return its FLOPs."""
    out, flops_after = _run_checked(work, inputs, _counts_changed(trace, before))
    error = _compare(trace.output, out)
    if error > tolerance:
        raise SpeedupError(f'The sped-up model differs from the masked model by {error:.2e} '
                           f'of the output scale (tolerance {tolerance:.0e}); this is a '
                           'prunus bug, please report it with the model; the model is unchanged.')
    return flops_after


def _attempt(model: nn.Module, inputs: Any, mask_dict: dict,
             custom: dict[type, Handler] | None, tolerance: float | None,
             cached: Trace | None, what: str = 'example_inputs', learn: bool = True
             ) -> tuple[nn.Module, SpeedupSummary]:
    work = shared_copy(model)  # shares tensors with model; they get replaced, not written
    bake_masks(work, model, mask_dict)
    work.eval()
    params_before = _param_count(work)
    trace, reused = _masked_trace(work, inputs, custom, cached, what)
    plan = make_plan(trace)
    train = train_mode_constants(work, trace, plan, inputs)
    sources = measure_sources(work, trace, plan, inputs, train) if learn else None
    before = {n: (s.handler.count_in(s.module) if s.handler.in_dim is not None else None,
                  s.handler.count_out(s.module)) for n, s in trace.sites.items()}
    for n, s in trace.sites.items():
        if hasattr(s.handler, 'head_count'):
            lay = s.handler.layout(s.module)
            before[n] += (lay.num_heads, lay.inner)
    heads = {n: s.handler.head_count(s.module) for n, s in trace.sites.items()
             if hasattr(s.handler, 'head_count')}
    builtin = set(map(id, HANDLERS.values())) | set(map(id, DETECTED))
    for site in trace.sites.values():
        if id(site.handler) not in builtin:  # a user's handler may write in place
            unshare(site.module, model)
    with torch.no_grad():
        _apply_plan(trace, plan, work, train, sources)
    flops_after = None if tolerance is None else _verify(work, inputs, trace, before, tolerance)
    unshare(work, model)
    work.train(model.training)
    summary = _summarize(trace, plan, before, work)
    summary.params_before, summary.params_after = params_before, _param_count(work)
    summary.flops_before, summary.flops_after = trace.flops, flops_after
    summary.trace_reused = reused
    summary.learned_constants = [n for n, m in work.named_modules()
                                 if constants.SOURCE_WEIGHTS in m._parameters]
    summary.heads = {n: (h, trace.sites[n].handler.head_count(trace.sites[n].module))
                     for n, h in heads.items()}
    summary.heads = {n: c for n, c in summary.heads.items() if c[0] != c[1]}
    return work, summary


def _speedup_copy(model: nn.Module, inputs: Any, masks: Any,
                  custom: dict[type, Handler] | None, tolerance: float | None,
                  what: str = 'example_inputs', learn: bool = True
                  ) -> tuple[nn.Module, SpeedupSummary]:
    """The sped-up copy and its summary; ``tolerance=None`` skips the exactness check.
    Everything given is checked before any work: the model, the inputs, the handlers,
    the masks."""
    start = time.perf_counter()
    if not isinstance(model, nn.Module):
        raise TypeError(f'model must be a torch.nn.Module; got {type(model).__name__}.')
    check_inputs(inputs, what)
    custom = check_custom_handlers(custom)
    mask_dict = load_masks(masks, model)
    cached = recall(model, inputs, custom)
    try:
        work, summary = _attempt(model, inputs, mask_dict, custom, tolerance, cached, what,
                                 learn)
    except SpeedupError:
        if cached is None or tolerance is None:
            raise
        # the reused structure may be what failed: decide again from a fresh trace
        work, summary = _attempt(model, inputs, mask_dict, custom, tolerance, None, what, learn)
    summary.seconds = time.perf_counter() - start
    return work, summary


def speedup(model: nn.Module, example_inputs: Any, masks: Any = None,
            custom_handlers: dict[type, Handler] | None = None, *,
            return_summary: bool = False, tolerance: float = 1e-4, check: bool = True,
            learn_constants: bool = True) -> Any:
    """Return a copy of ``model`` with the masked channels physically removed.

    The copy computes, in eval mode, the same outputs as the masked model (checked on
    ``example_inputs`` before returning; max abs difference below ``tolerance`` times the
    output's largest magnitude). The user's model is never modified.

    Args:
        model: the model; it may carry prunus mask buffers and hooks.
        example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
        masks: ``{module_name: {'weight': mask, 'bias': mask}}``, a path to a saved one,
            a pruner (its ``get_masks()``), or None to use only the masks on the model.
        custom_handlers: ``{LayerType: Handler()}`` for layers the table does not know.
        return_summary: also return the :class:`SpeedupSummary`.
        tolerance: allowed relative output difference.
        check: run the sped-up model on ``example_inputs`` and compare (the default). With
            False the result is not run: it is exact by construction, but a model that
            fails after the speedup (a channel count kept in an attribute) fails later in
            your code, and ``summary.flops_after`` is None.
        learn_constants: where a removed channel's constant is a removed BatchNorm shift,
            keep that shift and the layer's weights on it trainable, as in the masked
            model, so that fine-tuning the result follows the masked model (the default;
            costs one batched probe run on a cut-down input). False fixes the constants:
            fewer parameters while training, the same eval outputs.

    Returns:
        The smaller model, or ``(model, summary)`` with ``return_summary=True``.

    Raises:
        SpeedupError: naming the layer or operation that could not be handled.

    Example::

        small = speedup(model, torch.randn(1, 3, 64, 64), pruner)
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f'speedup: tolerance must be a number >= 0; got {tolerance!r}.')
    if not isinstance(learn_constants, bool):
        raise TypeError(f'speedup: learn_constants must be True or False; got {learn_constants!r}.')
    small, summary = _speedup_copy(model, example_inputs, masks, custom_handlers,
                                   float(tolerance) if check else None,
                                   learn=learn_constants)
    return (small, summary) if return_summary else small


class ModelSpeedup:
    """NNI-compatible in-place speedup: ``ModelSpeedup(model, x, 'mask.pth').speedup_model()``.

    The work happens on a copy; only when it succeeded are the copy's submodules and
    parameters swapped into ``model``, so a failure leaves ``model`` as it was. The
    :class:`SpeedupSummary` is in ``self.summary`` afterwards. ``check=False`` skips
    running the result (see :func:`speedup`).

    Example::

        ModelSpeedup(model, torch.randn(1, 3, 224, 224), 'mask.pth').speedup_model()
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks_file_or_dict: Any = None, *,
                 custom_handlers: dict[type, Handler] | None = None, check: bool = True) -> None:
        self.model = model
        self.check = check
        self.dummy_input = dummy_input
        self.masks = masks_file_or_dict
        self.custom_handlers = custom_handlers
        self.summary: SpeedupSummary | None = None

    def speedup_model(self) -> nn.Module:
        """Shrink ``self.model`` in place and return it."""
        small, self.summary = _speedup_copy(self.model, self.dummy_input, self.masks,
                                            self.custom_handlers, 1e-4 if self.check else None,
                                            'dummy_input')
        state = dict(small.__dict__)
        self.model.__dict__.clear()
        self.model.__dict__.update(state)
        return self.model
