"""Building the smaller model from an :class:`~.analysis.Analysis`: new configs, sliced
weights and folded constants (into a constant path, :mod:`prunus.layers.tf.constants`),
layer by layer through the same graph."""
from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import tree

from prunus.compression.errors import SpeedupError
from prunus.layers.tf.constants import (DECAY, OFFSET, PATH, PATHS, SCALE, SQUARES, bias_like,
                                        with_constants)
from prunus.layers.tf.handlers import layer_weights, weight_key

from .analysis import Analysis


class Rebuilder:
    """Clones every layer with its channels removed; weights are set once all are built."""

    def __init__(self, analysis: Analysis, train: dict[int, np.ndarray] | None = None,
                 decay: float = DECAY):
        self.analysis = analysis
        self.train = train or {}  # id(layer) -> train-mode input constants (NaN: none)
        self.decay = decay
        self.clones: dict[int, Any] = {}
        self.pending: list[tuple[Any, Any, dict[str, np.ndarray]]] = []

    def build(self, model: keras.Model) -> keras.Model:
        new = self.container(model, [tuple(t.shape) for t in model.inputs])
        for old, layer, weights in self.pending:
            try:
                layer.set_weights(_in_order(layer, weights) if isinstance(weights, dict) else weights)
            except Exception as exc:
                raise SpeedupError(f"speedup cannot set the weights of layer '{old.name}' "
                                   f'({type(old).__name__}): {exc}') from exc
        return new

    def container(self, model: keras.Model, shapes: list[tuple]) -> keras.Model:
        inputs = [keras.Input(batch_shape=shape, dtype=t.dtype, name=t.name)
                  for shape, t in zip(shapes, model.inputs)]
        if isinstance(model, keras.Sequential):
            return keras.Sequential(inputs + [self.clone(layer) for layer in model.layers],
                                    name=model.name)
        outputs = model._run_through_graph(inputs, operation_fn=self.clone)
        return keras.Model(tree.pack_sequence_as(model._inputs_struct, inputs), outputs,
                           name=model.name)

    def clone(self, op: Any) -> Any:
        if not isinstance(op, keras.layers.Layer):
            return op  # a keras.ops operation in the graph: stateless, kept as is
        if id(op) not in self.clones:
            plan = self.analysis.plans.get(id(op))
            if isinstance(op, keras.Model):
                shapes = [tuple(t.shape[:-1]) + (int(self.analysis.kept(ids).sum()),)
                          for t, ids in zip(op.inputs, plan.in_ids)]
                self.clones[id(op)] = self.container(op, shapes)
            else:
                self.clones[id(op)] = self.layer(op, plan)
        return self.clones[id(op)]

    def layer(self, layer, plan) -> keras.layers.Layer:
        config = layer.get_config()
        variables = list(layer.weights)
        names = [v.name for v in variables]
        inner = plan is not None and plan.role == 'inner'
        pruned = plan is not None and plan.role not in ('pin', 'inner')
        try:
            if pruned and len(set(names)) != len(names):
                raise SpeedupError(f'its variables share names ({", ".join(names)}), so their '
                                   'channels cannot be matched')
            # Pruned layers' handlers address variables by name; every other layer gets
            # its own values back in its own variable order (names repeat in Bidirectional
            # and in layers holding layers, so a name map would mix them up). A layer that
            # changes inside (attention heads) addresses its sublayers' variables by path.
            if inner:
                weights: Any = layer_weights(layer)
                plan.handler.shrink_inside(layer, config, weights)
            else:
                weights = {n: v.numpy() for n, v in zip(names, variables)} if pruned \
                    else [v.numpy() for v in variables]
            paths = False
            if pruned:
                self._prune(layer, plan, config, weights)
                paths = _complete_paths(config, weights, self.decay)
            new = from_config(layer, config, paths=paths)
        except Exception as exc:
            raise SpeedupError(f"speedup cannot rebuild layer '{layer.name}' "
                               f'({type(layer).__name__}): {exc}') from exc
        if len(weights):
            self.pending.append((layer, new, weights))
        return new

    def _prune(self, layer, plan, config: dict, weights: dict) -> None:
        kept = self.analysis.kept
        if plan.role == 'mixing':
            in_keep, out_keep = kept(plan.in_ids[0]), kept(plan.out_ids)
            removed_const = np.where(in_keep, 0.0, plan.const_in)
            train = self.train.get(id(plan.layer))
            if train is not None and len(train) == len(removed_const) \
                    and with_constants(type(layer)) is not None:
                # the trainable part takes the train-mode constants, an eval-only offset the rest
                train = np.where(in_keep, 0.0, np.where(np.isnan(train), plan.const_in, train))
                _eval_offset(layer, plan.handler, weights, removed_const - train)
                removed_const = train
            # None: the handler put them in the constant path (weights[PATH]); with an eval
            # offset alone it still lays out a zero path next to it
            delta = plan.handler.fold_in(layer, weights, removed_const) \
                if removed_const.any() or (OFFSET in weights and PATH not in weights) else None
            plan.handler.prune_in(layer, config, weights, in_keep)
            if delta is not None:
                if 'bias' not in weights:
                    config['use_bias'] = True
                    weights['bias'] = np.zeros(len(out_keep), np.float32)
                weights['bias'] = (weights['bias'] + delta).astype(np.float32)
            plan.handler.prune_out(layer, config, weights, out_keep)
        elif plan.role == 'tied':
            plan.handler.prune_in(layer, config, weights, kept(plan.in_ids[0]))
        elif plan.role == 'reshape' and type(layer).__name__ == 'Reshape':
            n_out = int(kept(plan.out_ids).sum())
            config['target_shape'] = tuple(plan.out_shape[1:-1]) + (n_out,)


def _eval_offset(layer, handler, weights: dict, offset: np.ndarray) -> None:
    """Adds what the constants ``offset`` contribute to ``weights[OFFSET]``, in the layout
    of the constant path (``K``, not ``K / s``: the offset is frozen)."""
    if not offset.any():
        return
    scratch = {k: v for k, v in weights.items() if k not in PATHS}
    delta = handler.fold_in(layer, scratch, offset)
    if delta is None:
        kernel = scratch[PATH].astype(np.float64) * scratch[SCALE]
    elif bias_like(layer):  # a custom handler's bias change: the vector path's layout
        kernel = delta
    else:
        raise ValueError('its handler folds constants into the bias, but zero padding '
                         'reaches its kernel (the bias cannot take them exactly)')
    weights[OFFSET] = (kernel + weights[OFFSET] if OFFSET in weights else kernel).astype(np.float32)


def _complete_paths(config: dict, weights: dict, decay: float) -> bool:
    """Whether the rebuilt layer has constant paths; if so, every path variable gets a
    value (zeros for those not used) and the config its offset decay."""
    present = [name for name in PATHS if name in weights]
    if not present:
        return False
    like = weights[PATH] if PATH in weights else weights[OFFSET]
    for name in (PATH, OFFSET):
        weights.setdefault(name, np.zeros_like(like))
    # only without a path from the handler (bias-like, see _eval_offset): one per output
    weights.setdefault(SCALE, np.zeros_like(like))
    weights.setdefault(SQUARES, np.zeros_like(weights[SCALE]))
    config.setdefault('offset_decay', decay)
    return True


def from_config(layer: keras.layers.Layer, config: dict, paths: bool = False) -> keras.layers.Layer:
    """A new layer like ``layer`` (``paths``: its subclass with constant paths).
    A ``Lambda`` is the same object again: it is stateless, and rebuilding it would mean
    deserializing Python bytecode (Keras refuses that outside ``safe_mode=False``,
    rightly, for files)."""
    if isinstance(layer, keras.layers.Lambda):
        return layer
    cls = with_constants(type(layer)) if paths else type(layer)
    if cls is None:  # the handler said it can fold, but this type has no constant path
        raise SpeedupError(f'{type(layer).__name__} has no subclass with constant paths')
    return cls.from_config(config)


def _in_order(layer: keras.layers.Layer, weights: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``weights`` in the order of the new layer's variables: by name, or by position where
    the names do not carry over (a custom layer's unnamed ``add_weight`` gets a fresh
    ``variable_N`` in every instance) and the shapes agree."""
    names = [weight_key(layer, v) for v in layer.weights]
    if all(n in weights for n in names):
        return [weights[n] for n in names]
    values = list(weights.values())
    if len(values) == len(names) and all(tuple(v.shape) == tuple(w.shape)
                                         for v, w in zip(layer.weights, values)):
        return values
    missing = [n for n in names if n not in weights]
    raise KeyError(f'no value for its variable(s) {missing}')
