"""Least-squares reconstruction for Keras 3: refit a pruned model's Dense and Conv layers
to compute what the dense model's same layers computed (the PyTorch
:func:`prunus.compression.torch.reconstruct`, same semantics).

Layers are refit in model (execution) order, each from the inputs the pruned model, with
its earlier layers already refit, now feeds it; see :mod:`prunus.compression.least_squares`
for the solve. Masked entries stay zero and the masks stay attached, so the speedup still
computes exactly what the (refit) masked model does: reconstruct before
:func:`prunus.speedup.tf.speedup`.

Refit: ``Dense`` and ``Conv1D/2D/3D`` with ``groups=1``, top-level layers called once.
Left alone: depthwise / separable / transposed / grouped convs, layers inside nested models
and layers shared between several calls (naming one in ``layers`` is an error).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import keras
import numpy as np

from prunus.compression.least_squares import (Refit, check_ridge, keep_row_lengths,
                                              residual_left, solve_update)
from prunus.layers.tf.masking import MaskConstraint
from prunus.layers.tf.patches import (from_kernel_matrix, input_columns, is_unfoldable,
                                      kernel_matrix, output_rows)
from prunus.layers.tf.specs import iter_layers

_OWNER = 'reconstruct'


def _as_batches(calibration_data: Any) -> list[Any]:
    if isinstance(calibration_data, (np.ndarray, Mapping)) or hasattr(calibration_data, 'shape') \
            or not isinstance(calibration_data, Iterable):
        raise TypeError(f'{_OWNER}: calibration_data must be an iterable of batches (arrays, '
                        f'tuples or dicts of inputs); got {type(calibration_data).__name__}.')
    batches = list(calibration_data)
    if not batches:
        raise ValueError(f'{_OWNER}: calibration_data is empty; give at least one batch.')
    return batches


def _called_once(layer: keras.layers.Layer) -> bool:
    try:
        layer.input  # noqa: B018 - raises for a layer called more than once
    except (AttributeError, ValueError):
        return False
    return True


def _select(model: keras.Model, layers: Iterable[str] | None) -> list[str]:
    top = {layer.name: layer for layer in model.layers}
    if layers is None:
        return [n for n, layer in top.items() if is_unfoldable(layer) and _called_once(layer)]
    names = list(layers)
    every = dict(iter_layers(model))
    for name in names:
        if name not in every:
            raise ValueError(f"{_OWNER}: layers names '{name}', which is not a layer of the model.")
        if name not in top:
            raise ValueError(f"{_OWNER}: layer '{name}' is inside a nested model; only the "
                             'top-level layers can be refit.')
        if not is_unfoldable(top[name]):
            raise ValueError(f"{_OWNER}: layer '{name}' is a {type(top[name]).__name__}; only "
                             'Dense and Conv1D/2D/3D (groups=1) layers can be refit.')
        if not _called_once(top[name]):
            raise ValueError(f"{_OWNER}: layer '{name}' is called more than once in the model; "
                             'a shared layer cannot be refit.')
    return [n for n in top if n in names]


def _check_reference(model: keras.Model, reference: keras.Model, names: list[str]) -> None:
    if reference is model:
        raise ValueError(f'{_OWNER}: reference is the pruned model itself; give a copy of the '
                         'dense model taken before pruning (clone_model + set_weights).')
    ref = {layer.name: layer for layer in getattr(reference, 'layers', [])}
    for name in names:
        other, mine = ref.get(name), model.get_layer(name)
        if other is None or getattr(other, 'kernel', None) is None:
            raise ValueError(f"{_OWNER}: the reference model has no layer '{name}'; it must be the "
                             'same architecture as the pruned model (before speedup).')
        if tuple(other.kernel.shape) != tuple(mine.kernel.shape):
            raise ValueError(f"{_OWNER}: layer '{name}' has kernel shape {tuple(mine.kernel.shape)} "
                             f'in the model but {tuple(other.kernel.shape)} in the reference; '
                             'reconstruct before the speedup, against the dense model.')


def _mask(variable) -> np.ndarray | None:
    constraint = variable.constraint
    return constraint.mask.numpy() if isinstance(constraint, MaskConstraint) else None


def _keep(layer: keras.layers.Layer, bias: bool) -> np.ndarray:
    """Bool ``(out, cols [+ bias])``: the entries that may change."""
    mask = _mask(layer.kernel)
    keep = np.ones(kernel_matrix(layer.kernel.numpy()).shape, bool) if mask is None else \
        kernel_matrix(mask) != 0
    if bias:
        bias_mask = _mask(layer.bias)
        kept = np.ones(keep.shape[0], bool) if bias_mask is None else bias_mask.reshape(-1) != 0
        keep = np.concatenate([keep, kept[:, None]], axis=1)
    return keep


def _inputs(model: keras.Model):
    """The model's inputs in the structure its callers pass (a Sequential has no
    ``model.input``)."""
    if isinstance(model, keras.Sequential):
        return model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return model.input


def _call(sub: keras.Model, batch: Any) -> list[np.ndarray]:
    if isinstance(batch, tuple):
        batch = list(batch)
    out = sub(batch, training=False)
    return [np.asarray(keras.ops.convert_to_numpy(t)) for t in (out if isinstance(out, (list, tuple)) else [out])]


class _Normal:
    """``X^T X``, ``X^T R``, ``||R||^2`` and ``||y_dense||^2`` of one layer (the norms
    over the output features its masks keep)."""

    def __init__(self, layer: keras.layers.Layer):
        self.layer = layer
        self.bias = bool(getattr(layer, 'use_bias', False)) and layer.bias is not None
        keep = _keep(layer, self.bias)
        self.kept = keep.any(axis=1)
        self.gram = self.cross = None
        self.residual = self.target = 0.0

    def add(self, x: np.ndarray, y: np.ndarray, y_dense: np.ndarray) -> None:
        cols = input_columns(self.layer, x)
        if self.bias:
            cols = np.concatenate([cols, np.ones((cols.shape[0], 1))], axis=1)
        dense = output_rows(self.layer, y_dense)
        res = dense - output_rows(self.layer, y)
        self.residual += float((res[:, self.kept] ** 2).sum())
        self.target += float((dense[:, self.kept] ** 2).sum())
        gram, cross = cols.T @ cols, cols.T @ res
        self.gram = gram if self.gram is None else self.gram + gram
        self.cross = cross if self.cross is None else self.cross + cross


def _current(layer: keras.layers.Layer, bias: bool) -> np.ndarray:
    """``(out, cols [+ bias])`` float64 weights."""
    old = kernel_matrix(layer.kernel.numpy()).astype(np.float64)
    if bias:
        old = np.concatenate([old, layer.bias.numpy().astype(np.float64)[:, None]], axis=1)
    return old


def _apply(layer: keras.layers.Layer, new: np.ndarray, bias: bool) -> None:
    cols = new.shape[1] - (1 if bias else 0)
    for variable, value in ((layer.kernel, from_kernel_matrix(new[:, :cols], tuple(layer.kernel.shape))),
                            *(((layer.bias, new[:, -1]),) if bias else ())):
        mask = _mask(variable)
        value = value if mask is None else value * mask
        variable.assign(value.astype(variable.dtype))


def _refit_layer(model, reference, name, batches, ridge, head) -> Refit | None:
    layer = model.get_layer(name)
    mine = keras.Model(_inputs(model), [layer.input, layer.output])
    theirs = keras.Model(_inputs(reference), [reference.get_layer(name).output])
    normal = _Normal(layer)
    for batch in batches:
        x, y = _call(mine, batch)
        (y_dense,) = _call(theirs, batch)
        if y.shape != y_dense.shape:
            raise ValueError(f"{_OWNER}: layer '{name}' outputs {y.shape} in the model but "
                             f'{y_dense.shape} in the reference.')
        normal.add(x, y, y_dense)
    scale = max(normal.target, 1e-30)
    if normal.residual <= 1e-12 * scale:
        return None  # this layer already computes what the dense one does
    update = solve_update(normal.gram, normal.cross, _keep(layer, normal.bias), ridge, normal.bias)
    old = _current(layer, normal.bias)
    if head:
        update = keep_row_lengths(old, update)
    _apply(layer, old + update, normal.bias)
    left = residual_left(normal.residual, normal.gram, normal.cross, update)
    return Refit((normal.residual / scale) ** 0.5, (left / scale) ** 0.5)


def reconstruct(model: keras.Model, reference: keras.Model, calibration_data: Iterable[Any], *,
                layers: Iterable[str] | None = None, ridge: float = 0.3,
                exact_heads: bool = False) -> dict[str, Refit]:
    """Refit ``model``'s Dense / Conv layers (masked, before the speedup) to reproduce
    ``reference``, by ridge least squares in float64, masked entries kept zero.

    Args:
        model: the pruned Functional or Sequential model, masks attached
            (``pruner.compress()`` done).
        reference: the dense model before pruning (a ``keras.models.clone_model`` copy
            with the weights set), same architecture and layer names.
        calibration_data: batches as the model takes them (arrays, tuples of inputs,
            dicts); a few hundred samples are enough. Layers run in inference mode.
        layers: names of the Dense / Conv1D/2D/3D layers to refit; default every such
            top-level layer (groups=1, called once; depthwise, separable, transposed and
            grouped convs are left alone).
        ridge: the regularization, relative to the mean input energy (the mean diagonal
            of ``X^T X``): smaller fits the calibration data closer, larger moves the
            weights less.
        exact_heads: by default the model's heads (layers whose output the model returns)
            keep their output rows' lengths (kernel column and bias) and only their
            directions are fit, which fine-tunes better; True fits them like every layer.

    Returns:
        ``{layer_name: Refit(before, after)}`` for each layer that was changed (a layer
        whose output already equals the dense one is left as is and not listed).

    Example::

        dense = keras.models.clone_model(model); dense.set_weights(model.get_weights())
        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                dependency_aware=True)
        pruner.compress()
        reconstruct(model, dense, [x[i:i + 256] for i in range(0, 1024, 256)])
        small = speedup(model, pruner)   # still equals the (refit) masked model
    """
    ridge = check_ridge(ridge, _OWNER)
    batches = _as_batches(calibration_data)
    names = _select(model, layers)
    _check_reference(model, reference, names)
    heads = {id(t) for t in model.outputs}
    saved = {n: [v.numpy().copy() for v in model.get_layer(n).weights] for n in names}
    try:
        report = {}
        for name in names:
            head = id(model.get_layer(name).output) in heads and not exact_heads
            refit = _refit_layer(model, reference, name, batches, ridge, head)
            if refit is not None:
                report[name] = refit
        return report
    except Exception:
        for name, values in saved.items():  # a failure part-way leaves the model as it was
            for variable, value in zip(model.get_layer(name).weights, values):
                variable.assign(value)
        raise
