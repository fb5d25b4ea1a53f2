"""Keeping masked Keras weights at zero through training, and removing every trace after.

The mechanism is the variable's ``constraint``: Keras 3 optimizers apply a variable's
constraint right after every update, in ``model.fit`` and in custom loops that call
``optimizer.apply_gradients`` alike, so a constraint that multiplies by the mask keeps
masked weights exactly zero after every step (momentum and Adam state included, since the
constraint runs after the update). A user's own constraint is kept and applied first.
The mask lives in a non-trainable ``tf.Variable`` captured by the constraint, so a pruner
that updates masks during training (AGP) never forces ``model.fit`` to retrace.

Masks are plain numpy dicts ``{layer_name: {'weight': array, 'bias': array}}`` with the
shape of the Keras variable ('bias' only when masked).
"""
from __future__ import annotations

from typing import Mapping

import keras
import numpy as np
import tensorflow as tf

from .specs import iter_layers, spec_of, variables_of

Masks = dict[str, dict[str, np.ndarray]]


class MaskConstraint:
    """Variable constraint ``w -> inner(w) * mask``; ``inner`` is the user's constraint."""

    def __init__(self, mask: np.ndarray, inner=None):
        self.mask = tf.Variable(mask, trainable=False, dtype=tf.float32, name='prunus_mask')
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * tf.cast(self.mask, w.dtype)


def masked_variables(model: keras.Model, masks: Mapping[str, Mapping[str, np.ndarray]]):
    """Yields ``(name, key, variable, mask)`` after checking every name and shape."""
    layers = dict(iter_layers(model))
    plan = []
    for name, entry in masks.items():
        if name not in layers:
            raise ValueError(f"mask names layer '{name}', which the model does not have.")
        spec = spec_of(layers[name])
        variables = variables_of(layers[name])
        for key, mask in entry.items():
            var_name = {'weight': spec.weight, 'bias': spec.bias}.get(key)
            if var_name is None or var_name not in variables:
                raise ValueError(f"mask '{name}'['{key}'] has no matching variable in the layer.")
            variable = variables[var_name]
            mask = np.asarray(mask, dtype=np.float32)
            if tuple(mask.shape) != tuple(variable.shape):
                raise ValueError(f"mask '{name}'['{key}'] has shape {mask.shape}, but the "
                                 f'variable has shape {tuple(variable.shape)}.')
            plan.append((name, key, variable, mask))
    return plan


def attach_masks(model: keras.Model, masks: Masks) -> None:
    """Zeroes masked weights and keeps them zero through training (updates existing masks)."""
    added = False
    for _, _, variable, mask in masked_variables(model, masks):
        current = variable.constraint
        if isinstance(current, MaskConstraint):
            current.mask.assign(mask)  # read by the traced train step: no retrace needed
        else:
            variable.constraint = MaskConstraint(mask, current)
            added = True
        variable.assign(variable * mask.astype(variable.dtype))
    if added:
        # A train function traced before the constraints existed would not apply them.
        model.train_function = None


def apply_masks(model: keras.Model) -> None:
    """Re-zeroes every masked weight; for training code that bypasses the optimizer.

    Args:
        model: a model with prunus masks.

    Example::

        model.set_weights(weights)
        apply_masks(model)
    """
    for variable in model.weights:
        if isinstance(variable.constraint, MaskConstraint):
            variable.assign(variable * tf.cast(variable.constraint.mask, variable.dtype))


def strip(model: keras.Model) -> keras.Model:
    """Bakes the masks into the weights and removes them, leaving a plain Keras model.

    Args:
        model: a masked model.

    Returns:
        The plain model.

    Example::

        strip(model).save('pruned.keras')
    """
    apply_masks(model)
    for variable in model.weights:
        if isinstance(variable.constraint, MaskConstraint):
            variable.constraint = variable.constraint.inner
    model.train_function = None
    return model


def save_masks(masks: Masks, path: str) -> None:
    """Writes masks to a ``.npz`` file (keys ``'<layer name>::weight'``, ``'...::bias'``).

    Args:
        masks: ``{layer_name: {'weight': array, 'bias': array}}``.
        path: the ``.npz`` file to write.

    Example::

        save_masks(pruner.get_masks(), 'masks.npz')
    """
    np.savez(path, **{f'{name}::{key}': mask for name, entry in masks.items()
                      for key, mask in entry.items()})


def load_masks(path: str) -> Masks:
    """Reads a mask file written by :func:`save_masks`.

    Args:
        path: the ``.npz`` file.

    Returns:
        The masks.

    Example::

        small = speedup(model, load_masks('masks.npz'))
    """
    masks: Masks = {}
    with np.load(path) as data:
        for flat in data.files:
            name, _, key = flat.rpartition('::')
            masks.setdefault(name, {})[key] = data[flat]
    return masks
