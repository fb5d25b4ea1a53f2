"""The Keras pruner base class: config_list -> selected layers -> scores -> masks.

A pruner is the PyTorch base's three stages, under the same names::

    collected = pruner.collect()                  # data the criterion needs (or None)
    scores = pruner.compute_scores(collected)     # {layer: 1-D channel or element scores}
    masks = pruner.generate_masks(scores)         # {layer: {'weight': mask, 'bias': mask}}

A subclass declares which layer types it prunes and how it scores (:meth:`Pruner.layer_scores`
for a criterion of one layer's weights, else ``collect``/``compute_scores``); the base class
resolves ``config_list`` through the shared core, turns scores into exact masks (per layer,
or ranked globally for ``total_sparsity``), attaches them to the model and exports them.
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Sequence

import keras
import numpy as np

from ..allocation import global_keep_masks, keep_mask
from ..config import ConfigEntry, ConfigSpec, validate_config_list
from ..owner_errors import name_errors, wrap_subclass_init
from ..selection import Selection, select_layers
from prunus.layers.tf import masking
from prunus.compression.paths import atomic_path, check_writable
from .dependency import dependency_keeps, tied_groups
from prunus.layers.tf.specs import (CONV_TYPES, FILTER_TYPES, channel_mask, iter_layers, layer_refs, spec_of,
                                    variables_of)


class Pruner:
    """Base of the Keras pruners; a subclass declares only what it adds.

    Example::

        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
        model = pruner.compress()          # weights zeroed, masks kept through training
        model.fit(x, y, callbacks=pruner.callbacks())
        masks = pruner.get_masks()         # {'conv1': {'weight': ..., 'bias': ...}}

    Attributes:
        supported_types: Keras class names this pruner can prune.
        default_types: what ``'default'`` in ``op_types`` means.
        global_per_entry: rank every layer of one entry together even for ``'sparsity'``
            (Slim ranks BatchNorm scales globally).
    """

    supported_types: Sequence[str] = FILTER_TYPES
    default_types: Sequence[str] = CONV_TYPES
    config_spec = ConfigSpec()
    global_per_entry = False
    structured = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_subclass_init(cls)  # a constructor's errors name the pruner

    @name_errors
    def __init__(self, model: keras.Model, config_list: list[dict[str, Any]],
                 dependency_aware: bool = False):
        owner = type(self).__name__
        if not isinstance(dependency_aware, bool):
            raise TypeError(f'{owner}: dependency_aware must be a bool; got {dependency_aware!r}.')
        if dependency_aware and (not self.structured or self.global_per_entry):
            raise ValueError(f'{owner}: dependency_aware=True needs a pruner that ranks channels '
                             f'per layer; {owner} does not.')
        if not isinstance(model, keras.Model):
            raise TypeError(f'model must be a keras.Model; got {type(model).__name__}.')
        if not model.built:
            raise ValueError('model is not built; call it on data or give it an Input first.')
        self.model = model
        self.config_list = config_list
        self.entries = validate_config_list(config_list, self.config_spec, type(self).__name__)
        self.selections: list[Selection] = select_layers(
            self.entries, layer_refs(model), supported_types=self.supported_types,
            default_types=self.default_types, pruner=type(self).__name__)
        self.layers = {name: layer for name, layer in iter_layers(model)}
        self._masks: masking.Masks = {}
        #: entry index -> sparsity used instead of the entry's own (set by schedules).
        self.overrides: dict[int, float] = {}
        self.dependency_aware = dependency_aware
        self._groups = tied_groups(model, owner) if dependency_aware else []

    # --- the stages, named as in the PyTorch base: subclasses override these -----------
    def collect(self) -> Any:
        """Gathers the data the criterion needs (activations, gradients); weight-only
        criteria need none."""
        return None

    def compute_scores(self, collected: Any) -> dict[str, np.ndarray]:
        """1-D scores of every selected layer's channels (or elements); lower scores are
        pruned. By default each layer's :meth:`layer_scores`."""
        return {sel.layer.name: self.layer_scores(sel.layer.name, self.layers[sel.layer.name])
                for sel in self.selections}

    def layer_scores(self, name: str, layer: keras.layers.Layer) -> np.ndarray:
        """Scores of one layer, for criteria that read only its weights."""
        raise NotImplementedError

    def sparsity_of(self, entry: ConfigEntry) -> tuple[str, float]:
        """The target key and value of ``entry`` (or its entry in :attr:`overrides`)."""
        key = 'total_sparsity' if 'total_sparsity' in entry else 'sparsity'
        return key, float(self.overrides.get(entry.index, entry.get(key)))

    # --- the shared pipeline -------------------------------------------------------------
    def calc_masks(self) -> masking.Masks:
        """Masks for every selected layer from the current weights (nothing is changed):
        collect -> compute_scores -> generate_masks."""
        return self.generate_masks(self.compute_scores(self.collect()))

    def generate_masks(self, scores: dict[str, np.ndarray]) -> masking.Masks:
        """Exact masks from scores, per layer or ranked across an entry's layers."""
        return {name: self.expand_keep(name, keep) for name, keep in self.generate_keeps(scores).items()}

    def generate_keeps(self, scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Flat keep vectors (bool per channel or element) from scores, before expansion."""
        by_entry: dict[int, list[str]] = defaultdict(list)
        entries = {}
        for sel in self.selections:
            by_entry[sel.entry.index].append(sel.layer.name)
            entries[sel.entry.index] = sel.entry
        keeps: dict[str, np.ndarray] = {}
        local_scores: dict[str, np.ndarray] = {}
        local_sparsity: dict[str, float] = {}
        for index, names in by_entry.items():
            entry = entries[index]
            key, sparsity = self.sparsity_of(entry)
            chosen = {n: np.asarray(scores[n], dtype=np.float64) for n in names}
            if key == 'total_sparsity' or self.global_per_entry:
                keeps.update(global_keep_masks(chosen, sparsity, entry.get('max_sparsity_per_layer'),
                                               where=entry.where, min_keep=1 if self.structured else 0))
            else:
                keeps.update({n: keep_mask(s, sparsity) for n, s in chosen.items()})
                local_scores.update(chosen)
                local_sparsity.update(dict.fromkeys(names, sparsity))
        if self.dependency_aware:
            keeps.update(dependency_keeps(self._groups, local_scores, local_sparsity))
        return keeps

    def expand_keep(self, name: str, keep: np.ndarray) -> dict[str, np.ndarray]:
        """Weight (and bias) masks of layer ``name`` from a keep vector over its output channels."""
        layer = self.layers[name]
        spec = spec_of(layer)
        variables = variables_of(layer)
        weight = variables[spec.weight]
        masks = {'weight': channel_mask(keep, spec, tuple(weight.shape))}
        if spec.bias is not None and spec.bias in variables:
            masks['bias'] = keep.astype(np.float32).reshape(tuple(variables[spec.bias].shape))
        return masks

    def compress(self) -> keras.Model:
        """Computes masks, zeroes the masked weights and keeps them zero; returns the model."""
        self._masks = self.calc_masks()
        masking.attach_masks(self.model, self._masks)
        return self.model

    def update_masks(self) -> None:
        """Recomputes and re-applies masks from the current weights (used by schedules)."""
        self.compress()

    # --- using and exporting the masks -----------------------------------------------------
    def get_masks(self) -> masking.Masks:
        """A copy of the masks: ``{layer_name: {'weight': array, 'bias': array}}``."""
        return {n: {k: m.copy() for k, m in e.items()} for n, e in self._masks.items()}

    def load_masks(self, masks: masking.Masks | str) -> keras.Model:
        """Attaches masks from a dict or a file written by :meth:`export_model`."""
        source = 'masks'
        if isinstance(masks, (str, os.PathLike)):
            source, masks = f"mask file '{os.fspath(masks)}'", masking.load_masks(os.fspath(masks))
        masking.attach_masks(self.model, masks, source)
        self._masks = {n: {k: np.asarray(m, np.float32) for k, m in e.items()} for n, e in masks.items()}
        return self.model

    def apply_masks(self) -> None:
        """Re-zeroes masked weights; call it after weight updates that bypass the optimizer."""
        masking.apply_masks(self.model)

    def callbacks(self) -> list[keras.callbacks.Callback]:
        """Keras callbacks to pass to ``model.fit`` alongside the pruned model."""
        return [MaskCallback(self)]

    def strip(self) -> keras.Model:
        """Bakes masks into the weights and removes every trace: a plain Keras model."""
        return masking.strip(self.model)

    def export_model(self, model_path: str, mask_path: str | None = None) -> None:
        """Saves the model with masked weights (``.keras``) and optionally the masks (``.npz``);
        both paths are checked first, and each file is written whole or not at all."""
        check_writable(model_path, 'model file')
        if not os.fspath(model_path).endswith('.keras'):
            raise ValueError(f"model file '{model_path}' must end in '.keras' (the Keras 3 format).")
        if mask_path is not None:
            check_writable(mask_path, 'mask file')
        masking.apply_masks(self.model)
        with atomic_path(model_path, '.keras') as tmp:
            self.model.save(tmp)
        if mask_path is not None:
            masking.save_masks(self._masks, mask_path)

    def sparsity_report(self) -> list[dict[str, Any]]:
        """Per masked layer: name, type, weight shape, kept channels/elements, sparsity."""
        rows = []
        for name, entry in self._masks.items():
            weight = entry['weight']
            rows.append({'layer': name, 'type': type(self.layers[name]).__name__,
                         'shape': tuple(weight.shape), 'sparsity': float(1.0 - weight.mean())})
        return rows


class MaskCallback(keras.callbacks.Callback):
    """Re-applies a pruner's masks when training starts and after every epoch.

    The mask constraints already zero masked weights after every optimizer step; this
    also covers weights changed outside the optimizer (``set_weights``, a restored
    checkpoint) between ``fit`` calls.

    Example::

        model.fit(x, y, epochs=3, callbacks=[MaskCallback(pruner)])   # or pruner.callbacks()
    """

    def __init__(self, pruner: Pruner):
        super().__init__()
        self.pruner = pruner

    def on_train_begin(self, logs=None):
        self.pruner.apply_masks()

    def on_epoch_end(self, epoch, logs=None):
        self.pruner.apply_masks()
