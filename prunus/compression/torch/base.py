"""The PyTorch pruner base class: bind to a model, score, allocate, mask.

A pruner is three stages with typed hand-offs::

    collected = pruner.collect()                  # data the criterion needs (or None)
    scores = pruner.compute_scores(collected)     # {layer: 1-D channel scores or weight-shaped}
    masks = pruner.generate_masks(scores)         # {layer: {'weight': mask, 'bias': mask}}

``compress()`` runs them and attaches the masks to the model. A new algorithm overrides
``compute_scores`` (and ``collect`` when it needs data) and declares its layer types.

Config entries with ``sparsity`` prune each selected layer on its own; entries with
``total_sparsity`` rank all layers they select together (``max_sparsity_per_layer`` caps
any single layer). Achieved counts are exactly ``round(sparsity * count)``.
"""
from __future__ import annotations

import logging
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn

from ..allocation import global_keep_masks, keep_mask
from ..config import ConfigEntry, ConfigSpec, validate_config_list
from ..owner_errors import name_errors, wrap_subclass_init
from ..selection import LayerRef, select_layers
from prunus.layers.torch import specs
from .export import export_model as _export_model
from .legacy_methods import NNIPrunerMethods
from prunus.layers.torch.masking import Masks, apply_masks, get_masks as _masks_on, strip as _strip_masks
from .report import SparsityReport, sparsity_report as _report

Scores = dict[str, torch.Tensor]


def to_numpy(scores: torch.Tensor) -> np.ndarray:
    return scores.detach().to('cpu', torch.float64).numpy().reshape(-1)


class Pruner(NNIPrunerMethods):
    """Base of every PyTorch pruner.

    Args:
        model: the model to prune; it is not modified until ``compress()``.
        config_list: which layers to prune and how much (see :mod:`prunus.compression.config`).
        optimizer: the model's optimizer, for pruners that act during training.

    Example::

        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
        model = pruner.compress()
        pruner.export_model('pruned.pth', 'mask.pth')
    """

    #: Registry name, set by ``register_pruner``.
    registry_name: ClassVar[str] = ''
    supported_types: ClassVar[tuple[type, ...]] = specs.WEIGHTED
    default_types: ClassVar[tuple[type, ...]] = specs.WEIGHTED
    config_spec: ClassVar[ConfigSpec] = ConfigSpec()
    #: True when scores are per output channel, False when per weight element.
    structured: ClassVar[bool] = False
    #: True when 'sparsity' itself is a global budget over the entry's layers (Slim).
    global_by_default: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        wrap_subclass_init(cls)  # a constructor's errors name the pruner

    @name_errors
    def __init__(self, model: nn.Module, config_list: list[dict], optimizer: Any = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f'{type(self).__name__} needs a torch.nn.Module as model; '
                            f'got {type(model).__name__}.')
        self.bound_model = model
        self.config_list = config_list
        self.optimizer = optimizer
        self.entries = validate_config_list(config_list, self.config_spec, type(self).__name__)
        self.select_targets(model, self.entries)

    def select_targets(self, model: nn.Module, entries: list[ConfigEntry]) -> None:
        """Sets ``selections``, ``targets`` and ``entry_of`` from ``entries``."""
        modules = dict(model.named_modules())
        refs = [LayerRef(name, type(module).__name__, self._kinds(module))
                for name, module in modules.items()]
        self.selections = select_layers(
            entries, refs, supported_types=specs.names(self.supported_types),
            default_types=specs.names(self.default_types), pruner=type(self).__name__)
        self.targets: dict[str, nn.Module] = {s.layer.name: modules[s.layer.name] for s in self.selections}
        self.entry_of: dict[str, ConfigEntry] = {s.layer.name: s.entry for s in self.selections}

    # -- the three stages -------------------------------------------------------------
    def collect(self) -> Any:
        """Gathers the data the criterion needs; weight-only criteria need none."""
        return None

    def compute_scores(self, collected: Any) -> Scores:
        """Importance per output channel (structured) or per weight (unstructured)."""
        raise NotImplementedError

    def _kinds(self, module: nn.Module) -> tuple[str, ...]:
        """Supported layer classes a subclass derives from (torchvision's Conv3DSimple
        is a Conv3d): it is selected and pruned as one."""
        cls = type(module)
        return tuple(t.__name__ for t in self.supported_types if t is not cls and isinstance(module, t))

    def sparsity_of(self, entry: ConfigEntry) -> float:
        """The fraction an entry asks for now; schedules override this."""
        return entry.get('total_sparsity', entry.get('sparsity', 0.0))

    def is_global(self, entry: ConfigEntry) -> bool:
        """Whether ``entry`` ranks all its layers together (``total_sparsity``)."""
        return 'total_sparsity' in entry or self.global_by_default

    def generate_masks(self, scores: Scores) -> Masks:
        """Exact masks from scores, per layer or ranked across an entry's layers."""
        keeps = self.generate_keeps(scores)
        return {name: self.expand_keep(name, torch.from_numpy(keep)) for name, keep in keeps.items()}

    def generate_keeps(self, scores: Scores) -> dict[str, np.ndarray]:
        """Flat keep vectors (bool per channel or weight) from scores, before expansion."""
        keeps: dict[str, np.ndarray] = {}
        for entry in self.entries:
            names = [n for n in self.targets if self.entry_of[n] is entry and n in scores]
            if not names:
                continue
            sparsity = self.sparsity_of(entry)
            if self.is_global(entry):
                keeps.update(global_keep_masks({n: to_numpy(scores[n]) for n in names}, sparsity,
                                               entry.get('max_sparsity_per_layer'), entry.where,
                                               min_keep=1 if self.structured else 0))
            else:
                keeps.update({n: keep_mask(to_numpy(scores[n]), sparsity) for n in names})
        return keeps

    def expand_keep(self, name: str, keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Turns a flat keep vector into per-parameter masks for layer ``name``."""
        module = self.targets[name]
        weight = module.weight
        if not self.structured:
            return {'weight': keep.reshape(weight.shape).to(device=weight.device, dtype=weight.dtype)}
        masks = {'weight': specs.channel_mask_to_weight(module, keep, weight)}
        if getattr(module, 'bias', None) is not None:
            masks['bias'] = keep.to(device=module.bias.device, dtype=module.bias.dtype)
        return masks

    # -- public verbs -----------------------------------------------------------------
    def calc_masks(self) -> Masks:
        """Runs collect -> score -> generate without attaching anything."""
        return self.generate_masks(self.compute_scores(self.collect()))

    def compress(self) -> nn.Module:
        """Computes the masks and attaches them to the model; returns the model."""
        apply_masks(self.bound_model, self.calc_masks(), owned=True)  # fresh: no copies
        return self.bound_model

    def get_masks(self) -> Masks:
        """``{module_name: {'weight': mask, 'bias': mask}}`` as attached to the model."""
        return _masks_on(self.bound_model)

    def masks_on_model(self, model: nn.Module) -> bool:
        """Whether :meth:`get_masks` is just the mask buffers on ``model``, so the speedup
        can read them there instead of copying them."""
        return self.bound_model is model and type(self).get_masks is Pruner.get_masks

    def update_mask(self) -> None:
        """Recomputes and re-attaches masks (training-aware pruners call this on a schedule)."""
        self.compress()

    def update_epoch(self, epoch: int) -> None:
        """Tells the pruner an epoch began; one-shot pruners ignore it (as in NNI), so one
        training loop can drive any pruner."""

    def sparsity_report(self, dummy_input: Any = None) -> SparsityReport:
        """Per layer: shape, achieved sparsity, parameters and (given an input) FLOPs."""
        return _report(self.bound_model, self.get_masks(), dummy_input)

    def export_model(self, model_path: str, mask_path: str | None = None, onnx_path: str | None = None,
                     input_shape: Any = None, device: Any = None, dummy_input: Any = None,
                     opset_version: int | None = None) -> None:
        """Saves the pruned weights (masks baked in) and optionally the masks and ONNX."""
        _export_model(self.bound_model, self.get_masks(), model_path, mask_path, onnx_path,
                      input_shape, device, dummy_input, opset_version)

    def load_model_state_dict(self, model_state: Mapping[str, torch.Tensor]) -> None:
        """Loads a plain state dict into the pruned model; masks are re-applied."""
        self.bound_model.load_state_dict(model_state)

    def get_pruned_weights(self, dim: int = 0) -> dict[str, float]:
        """Achieved weight sparsity per pruned layer (NNI logged it; ``dim`` is accepted
        for its signature); also logged at INFO."""
        pruned = {name: 1.0 - float(m['weight'].float().mean()) for name, m in self.get_masks().items()}
        for name, value in pruned.items():
            logging.getLogger('prunus.pruning').info('%s: %.4f of the weights pruned', name, value)
        return pruned

    def _unwrap_model(self) -> nn.Module:
        """Bake the masks into the weights and remove every prunus buffer and hook; returns the model."""
        return _strip_masks(self.bound_model)

    strip = _unwrap_model

    def __repr__(self) -> str:
        return f'{type(self).__name__}({len(self.targets)} layers)'
