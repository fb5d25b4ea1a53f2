"""Which channels of a Keras model can be removed without changing its outputs.

The model is run once, layer by layer, on :class:`Flow` objects instead of tensors. A
flow carries, for every position of the tensor's last (channel) axis, a channel-group id
and whether the position is *constant*: spatially uniform and independent of the model
input, as a pruned filter's output is (zero, or its activation of a BatchNorm shift).
Layers that tie channels (Add, Multiply, shared layers) merge ids with a union-find.

A group is removed unless something blocks it: a model input or output, a layer the
handlers do not support, or a mixing layer (Conv, Dense) that reads it while it is not
constant or cannot fold its constant into the bias exactly. So a channel the masked model
still uses is never removed, whatever the masks say.

A folded constant goes into a constant path of the rebuilt layer (one value per output,
or, for a zero-padded conv, where the constant meets the padding at the borders, a
one-channel kernel; :mod:`prunus.layers.tf.constants`), so no channel is kept for it.

A BatchNormalization whose scale is zero for a channel (Network Slimming) outputs its
shift there whatever the input: the position becomes constant at its output, so the
consumers can fold it, and as the BatchNorm's input and output share the group,
the filters feeding it go with it unless something else still reads them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
from keras import tree

from prunus.compression.errors import SpeedupError
from prunus.compression.grouping import UnionFind
from prunus.layers.tf.handlers import LayerHandler, layer_weights
from prunus.layers.tf.op_handlers import OP_HANDLERS


def require_graph(model: keras.Model) -> None:
    """SpeedupError unless ``model`` is Sequential or Functional (its graph can be walked)."""
    if isinstance(model, keras.Sequential) or (
            hasattr(model, '_run_through_graph') and hasattr(model, '_nodes_by_depth')):
        return
    raise SpeedupError(
        f"cannot rebuild '{model.name}' ({type(model).__name__}): it is a subclassed "
        'model, whose structure lives in Python code; speedup needs a Functional or '
        'Sequential model. Its masks still apply (pruner.strip() bakes them in).')


@dataclass
class Flow:
    """What flows along one tensor: channel ids, a batch-1 value, constant positions."""

    ids: np.ndarray
    value: np.ndarray
    const: np.ndarray

    def constants(self) -> np.ndarray:
        """The value at each channel position (meaningful where ``const`` is True)."""
        return self.value.reshape(-1, self.value.shape[-1])[0].astype(np.float64)


@dataclass
class Plan:
    """What the analysis learned about one layer (first call; later calls are tied)."""

    layer: Any
    role: str
    handler: LayerHandler | None = None
    name: str = ''
    in_ids: list[np.ndarray] = field(default_factory=list)
    out_ids: np.ndarray | None = None
    const_in: np.ndarray | None = None
    out_shape: tuple = ()


def _uniform(flow: Flow) -> Flow:
    """Clears ``const`` where the value is not spatially uniform (zero padding, borders)."""
    flat = flow.value.reshape(-1, flow.value.shape[-1])
    spread = flat.max(axis=0) - flat.min(axis=0)
    scale = 1.0 + np.abs(flat).max(axis=0)
    return Flow(flow.ids, flow.value, flow.const & (spread <= 1e-6 * scale))


class Analysis:
    """Runs the flow pass over a Functional or Sequential model (nested ones included)."""

    def __init__(self, handlers: dict[str, LayerHandler],
                 op_handlers: dict[str, LayerHandler] = OP_HANDLERS):
        self.handlers = handlers
        self.op_handlers = op_handlers
        self.ids = UnionFind()
        self.blocked: dict[int, str] = {}
        self.plans: dict[int, Plan] = {}
        self.prefix: list[str] = []

    # --- union-find over channel ids --------------------------------------------------
    def fresh(self, n: int) -> np.ndarray:
        return self.ids.fresh(n)

    def find(self, i: int) -> int:
        return self.ids.find(i)

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        self.ids.union_many(a, b)

    def block(self, ids: np.ndarray, reason: str) -> None:
        for i in np.asarray(ids).reshape(-1).tolist():
            self.blocked.setdefault(i, reason)

    def kept(self, ids: np.ndarray, roots: set[int] | None = None) -> np.ndarray:
        """Boolean keep vector over ``ids`` (after every union and block); ``roots``: the
        blocked roots when the caller already has them."""
        if roots is None:
            roots = {self.find(i) for i in self.blocked}
        return np.array([self.find(i) in roots for i in ids.tolist()], dtype=bool)

    # --- the pass -------------------------------------------------------------------
    def run(self, model: keras.Model) -> None:
        require_graph(model)
        inputs = []
        for tensor in model.inputs:
            shape = tuple(1 if d is None else d for d in tensor.shape)
            flow = Flow(self.fresh(shape[-1]), np.zeros(shape, np.float32),
                        np.zeros(shape[-1], bool))
            self.block(flow.ids, 'model input')
            inputs.append(flow)
        for flow in tree.flatten(self.container(model, inputs)):
            self.block(flow.ids, 'model output')
        self.settle()

    def settle(self) -> None:
        """Keeps extra channels until every grouped conv keeps equal channels per group.

        A group with all its inputs and outputs removed is dropped; every other group keeps
        the largest kept count of any group (at least one), on the input and output side.
        Keeping a channel can unbalance another grouped conv, so this runs to a fixpoint
        (it ends: the kept set only grows).
        """
        changed = True
        while changed:
            changed = False
            for plan in self.plans.values():
                if plan.role == 'mixing' and plan.handler.groups(plan.layer) > 1:
                    changed |= self._balance(plan, plan.handler.groups(plan.layer))

    def _balance(self, plan: Plan, g: int) -> bool:
        sides = [ids.reshape(g, -1) for ids in (plan.in_ids[0], plan.out_ids)]
        keeps = [self.kept(ids.reshape(-1)).reshape(g, -1) for ids in sides]
        alive = keeps[0].any(axis=1) | keeps[1].any(axis=1)
        changed = False
        for ids, keep in zip(sides, keeps):
            target = max(int(keep[alive].sum(axis=1).max(initial=0)), 1)
            for b in np.flatnonzero(alive):
                missing = target - int(keep[b].sum())
                if missing > 0:
                    self.block(ids[b, np.flatnonzero(~keep[b])[:missing]],
                               f"grouped '{plan.layer.name}' keeps equal channels per group")
                    changed = True
        return changed

    def container(self, model: keras.Model, inputs: list[Flow]) -> Any:
        if isinstance(model, keras.Sequential):
            flow = inputs[0]
            for layer in model.layers:
                flow = self.visit(layer, (flow,), {})
            return flow
        require_graph(model)
        return model._run_through_graph(
            inputs, operation_fn=lambda op: (lambda *a, **k: self.visit(op, a, k)))

    def name_of(self, layer) -> str:
        return '/'.join(self.prefix + [layer.name])

    def visit(self, layer, args: tuple, kwargs: dict) -> Any:
        flows = [x for x in tree.flatten((args, kwargs)) if isinstance(x, Flow)]
        if isinstance(layer, keras.Model):
            plan = self.plans.setdefault(id(layer), Plan(layer, 'container'))
            self._tie_calls(plan, flows)
            self.prefix.append(layer.name)
            try:
                return self.container(layer, flows)
            finally:
                self.prefix.pop()
        name = self.name_of(layer)
        try:
            to_value = lambda x: keras.ops.convert_to_tensor(x.value) if isinstance(x, Flow) else x
            out = layer(*tree.map_structure(to_value, args), **tree.map_structure(to_value, kwargs))
            return self._flow_out(layer, name, flows, out)
        except SpeedupError:
            raise
        except Exception as exc:
            raise SpeedupError(f"speedup cannot analyse layer '{name}' "
                               f'({type(layer).__name__}): {exc}') from exc

    def _tie_calls(self, plan: Plan, flows: list[Flow]) -> None:
        """The first call defines the layer's input ids; later calls are tied to them."""
        if not plan.in_ids:
            plan.in_ids = [f.ids for f in flows]
            return
        for old, new in zip(plan.in_ids, flows):
            if len(old) != len(new.ids):
                self.block(np.concatenate([old, new.ids]), f"'{plan.layer.name}' reused on other shapes")
            else:
                self.union(old, new.ids)

    def _flow_out(self, layer, name: str, flows: list[Flow], out: Any) -> Any:
        outputs = tree.flatten(out)
        table = self.handlers if isinstance(layer, keras.layers.Layer) else self.op_handlers
        handler = table.get(type(layer).__name__)
        reason = None if handler is not None else f"'{name}' ({type(layer).__name__}) has no handler"
        if reason is None:
            why = handler.supports(layer)
            reason = f"'{name}': {why}" if why else None
        if reason is None and (len(outputs) != 1 or not flows):
            reason = f"'{name}' has {len(outputs)} outputs"
        first = id(layer) not in self.plans
        plan = self.plans.setdefault(
            id(layer), Plan(layer, 'pin' if reason else handler.role, handler, name))
        self._tie_calls(plan, flows)
        if reason is not None:
            for flow in flows:
                self.block(flow.ids, reason)
            result = [self._pinned(np.asarray(o), reason) for o in outputs]
            return tree.pack_sequence_as(out, result)
        value = np.asarray(outputs[0])
        plan.out_shape = value.shape
        flow = _uniform(getattr(self, '_' + plan.role)(layer, name, plan, flows, value, first))
        if first:
            plan.out_ids = flow.ids
        return flow

    def _pinned(self, value: np.ndarray, reason: str) -> Flow:
        ids = self.fresh(value.shape[-1] if value.ndim else 1)
        self.block(ids, reason)
        return Flow(ids, value.reshape(value.shape or (1,)), np.zeros(len(ids), bool))

    def _mixing(self, layer, name, plan, flows, value, first) -> Flow:
        flow = flows[0]
        self.block(flow.ids[~flow.const], f"read by '{name}'")
        const = np.where(flow.const, flow.constants(), 0.0)
        if first:
            plan.const_in = const
            plan.out_ids = self.fresh(value.shape[-1])
        self._fold_blocks(layer, name, plan, flow, const, first)
        if getattr(getattr(layer, 'activation', None), '__name__', '') in ('softmax', 'log_softmax'):
            self.block(plan.out_ids, f"'{name}' ends in a softmax over its channels")
        weights = layer_weights(layer)
        return Flow(plan.out_ids, value, plan.handler.dead_out(layer, weights))

    def _fold_blocks(self, layer, name: str, plan: Plan, flow: Flow, const: np.ndarray,
                     first: bool) -> None:
        """Blocks the constant inputs that cannot be folded (into a constant path or the bias).

        The rebuilt layer folds the first call's constants, once for every call, so a
        layer called again keeps what is non-zero or differs in a later call.
        """
        if not first:
            bad = (const != 0) | (const != plan.const_in)
        elif plan.handler.can_fold(layer):
            return
        else:
            bad = const != 0
        self.block(flow.ids[bad], f"'{name}' cannot fold a constant input exactly")

    def _tied(self, layer, name, plan, flows, value, first) -> Flow:
        flow = flows[0]
        mult = value.shape[-1] // max(len(flow.ids), 1)
        if mult * len(flow.ids) != value.shape[-1]:
            self.block(flow.ids, f"'{name}' changes the channel count")
            return self._pinned(value, f"'{name}' changes the channel count")
        const = np.repeat(flow.const, mult)
        weights = layer_weights(layer)
        own = plan.handler.dead_out(layer, weights)
        if own is not None:
            const = const | own
        return Flow(np.repeat(flow.ids, mult), value, const)

    def _inner(self, layer, name, plan, flows, value, first) -> Flow:
        """A layer that only changes inside (attention heads): its channels stay."""
        reason = f"read or written by '{name}' ({type(layer).__name__}), whose channels are kept"
        for flow in flows:
            self.block(flow.ids, reason)
        return self._pinned(value, reason)

    def _merge(self, layer, name, plan, flows, value, first) -> Flow:
        if any(len(f.ids) != value.shape[-1] for f in flows):
            reason = f"'{name}' broadcasts over channels"
            for f in flows:
                self.block(f.ids, reason)
            return self._pinned(value, reason)
        for other in flows[1:]:
            self.union(flows[0].ids, other.ids)
        const = np.logical_and.reduce([f.const for f in flows])
        if type(layer).__name__ == 'Multiply':  # x * 0 is 0 whatever x is
            const |= np.logical_or.reduce([f.const & (f.constants() == 0) for f in flows])
        return Flow(flows[0].ids, value, const)

    def _concat(self, layer, name, plan, flows, value, first) -> Flow:
        return Flow(np.concatenate([f.ids for f in flows]), value,
                    np.concatenate([f.const for f in flows]))

    def _reshape(self, layer, name, plan, flows, value, first) -> Flow:
        flow = flows[0]
        in_shape, out_shape = flow.value.shape[1:], value.shape[1:]
        ids = np.broadcast_to(flow.ids, in_shape).reshape(out_shape)
        const = np.broadcast_to(flow.const, in_shape).reshape(out_shape)
        if len(out_shape) == 1:
            return Flow(ids, value, const)
        rows = ids.reshape(-1, out_shape[-1])
        if out_shape[-1] == in_shape[-1] and (rows == flow.ids).all():
            return Flow(flow.ids, value, flow.const)
        reason = f"'{name}' moves channels off the last axis"
        self.block(flow.ids, reason)
        return self._pinned(value, reason)
