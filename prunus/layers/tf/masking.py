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

from prunus.compression import mask_rules as rules
from prunus.compression.mask_rules import MaskFacts
from .files import read_mask_npz, write_mask_npz
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


def mask_facts(where: str, mask: object) -> MaskFacts:
    """What the shared mask rules need to know about one Keras (numpy-like) mask."""
    try:
        arr = np.asarray(mask)
    except Exception as exc:  # a ragged list, an object numpy cannot read
        raise TypeError(f'{where} must be an array; got {type(mask).__name__} ({exc}).') from exc
    kind = {'b': 'bool', 'i': 'int', 'u': 'int', 'f': 'float'}.get(arr.dtype.kind, 'other')
    if kind == 'other':
        return MaskFacts(arr.shape, kind, dtype=str(arr.dtype))
    finite = kind != 'float' or bool(np.isfinite(arr).all())
    binary = finite and bool(((arr == 0) | (arr == 1)).all())
    return MaskFacts(arr.shape, kind, finite, binary, str(arr.dtype))


def _layer_plan(name: str, layers: dict, entry: Mapping[str, object]) -> list:
    rules.check_module(name, layers, 'layer')
    try:
        spec = spec_of(layers[name])
    except TypeError as exc:
        raise ValueError(f'masks[{name!r}]: {exc}') from None
    variables = variables_of(layers[name])
    known = [k for k, v in (('weight', spec.weight), ('bias', spec.bias)) if v in variables]
    plan = []
    for key, mask in entry.items():
        rules.check_parameter(name, key, known, 'layer')
        variable = variables[{'weight': spec.weight, 'bias': spec.bias}[key]]
        where = rules.mask_where(name, key)
        rules.check_facts(where, mask_facts(where, mask), tuple(variable.shape))
        plan.append((name, key, variable, np.asarray(mask, dtype=np.float32)))
    return plan


def masked_variables(model: keras.Model, masks: Mapping[str, Mapping[str, np.ndarray]],
                      source: str = 'masks'):
    """Yields ``(name, key, variable, mask)`` after checking every mask against the
    shared rules (:mod:`prunus.compression.mask_rules`); nothing is changed before."""
    rules.check_structure(masks, source)
    layers = dict(iter_layers(model))
    plan = []
    with rules.naming_source(source):
        for name, entry in masks.items():
            plan += _layer_plan(name, layers, entry)
    return plan


def attach_masks(model: keras.Model, masks: Masks, source: str = 'masks') -> None:
    """Zeroes masked weights and keeps them zero through training (updates existing masks).
    Every mask is checked first, so a bad one changes nothing."""
    added = False
    for _, _, variable, mask in masked_variables(model, masks, source):
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
    """Writes masks to a ``.npz`` file (keys ``'<layer name>::weight'``, ``'...::bias'``)
    through a temporary file, so a failed write leaves no half file.

    Args:
        masks: ``{layer_name: {'weight': array, 'bias': array}}``.
        path: the ``.npz`` file to write.

    Example::

        save_masks(pruner.get_masks(), 'masks.npz')
    """
    rules.check_structure(masks)
    write_mask_npz(path, {f'{name}::{key}': np.asarray(mask) for name, entry in masks.items()
                          for key, mask in entry.items()})


def load_masks(path: str) -> Masks:
    """Reads a mask file written by :func:`save_masks`; a file that is not one is named
    in the error together with the format it should have.

    Args:
        path: the ``.npz`` file.

    Returns:
        The masks.

    Example::

        small = speedup(model, load_masks('masks.npz'))
    """
    masks: Masks = {}
    for flat, array in read_mask_npz(path).items():
        name, sep, key = flat.rpartition('::')
        if not sep:
            raise ValueError(f"mask file '{path}' holds an array named {flat!r}; a prunus Keras mask "
                             "file names them '<layer name>::weight' or '<layer name>::bias'.")
        masks.setdefault(name, {})[key] = array
    return masks
