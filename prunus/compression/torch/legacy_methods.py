"""The public methods of NNI's legacy ``Pruner`` / ``Compressor`` that prunus' own verbs
do not already cover, mixed into :class:`~prunus.compression.torch.Pruner`.

NNI wrapped each layer in a ``PrunerModuleWrapper``; prunus keeps masks as buffers on the
layer itself, so a "wrapper" here is a read-only :class:`LayerWrapper` view (``name``,
``type``, ``module``, ``config``, ``weight_mask``, ``bias_mask``), and ``calc_mask`` takes
one, its layer name or the module itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..config import validate_config_list
from prunus.layers.torch.masking import Masks, apply_masks


@dataclass(frozen=True)
class LayerInfo:
    """NNI's ``LayerInfo``: a selected layer's name, module and type name."""

    name: str
    module: nn.Module

    @property
    def type(self) -> str:
        return type(self.module).__name__


@dataclass(frozen=True)
class LayerWrapper(LayerInfo):
    """What NNI's ``get_modules_wrapper()`` listed: a layer, its config and its masks."""

    config: Mapping[str, Any] | None = None

    @property
    def weight_mask(self) -> torch.Tensor | None:
        return self.module._buffers.get('weight_mask')

    @property
    def bias_mask(self) -> torch.Tensor | None:
        return self.module._buffers.get('bias_mask')


class NNIPrunerMethods:
    """NNI's legacy ``Pruner`` methods, on top of the three stages (see the module doc)."""

    bound_model: nn.Module
    targets: dict[str, nn.Module]
    config_list: list[dict]

    def _layer_name(self, wrapper: Any, owner: str) -> str:
        name = wrapper if isinstance(wrapper, str) else getattr(wrapper, 'name', None)
        if isinstance(wrapper, nn.Module):
            name = next((n for n, m in self.targets.items() if m is wrapper), None)
        if name not in self.targets:
            raise ValueError(f'{type(self).__name__}.{owner}: {wrapper!r} is not a layer this pruner selected '
                             f"(selected: {', '.join(self.targets) or 'none'}).")
        return name

    def calc_mask(self, wrapper: Any, wrapper_idx: int | None = None, **kwargs: Any) -> dict[str, torch.Tensor]:
        """``{'weight_mask': ..., 'bias_mask': ...}`` the pruner computes for one layer now
        (nothing is attached; ``compress()`` does that)."""
        name = self._layer_name(wrapper, 'calc_mask')
        masks = self.calc_masks()[name]
        return {f'{key}_mask': value for key, value in masks.items()}

    def select_config(self, layer: Any) -> dict | None:
        """The ``config_list`` entry that decides for ``layer`` (None when not selected)."""
        name = layer if isinstance(layer, str) else getattr(layer, 'name', None)
        entry = self.entry_of.get(name)
        return None if entry is None else self.config_list[entry.index]

    def get_modules_to_compress(self) -> list[tuple[LayerInfo, dict]]:
        """``[(LayerInfo, config), ...]`` for every selected layer, in model order."""
        return [(LayerInfo(n, m), self.select_config(n)) for n, m in self.targets.items()]

    def get_modules_wrapper(self) -> list[LayerWrapper]:
        """One :class:`LayerWrapper` per selected layer."""
        return [LayerWrapper(n, m, self.select_config(n)) for n, m in self.targets.items()]

    def validate_config(self, model: nn.Module, config_list: list[dict]) -> None:
        """Raises the pruner's one-line error if ``config_list`` is invalid for it."""
        validate_config_list(config_list, self.config_spec, type(self).__name__)

    def set_wrappers_attribute(self, name: str, value: Any) -> None:
        """Sets attribute ``name`` on every selected layer (NNI set it on the wrappers)."""
        for module in self.targets.values():
            setattr(module, name, value)

    def reset(self, checkpoint: Mapping[str, torch.Tensor] | None = None) -> None:
        """Loads ``checkpoint`` (a state dict) if given and resets every mask to ones."""
        if checkpoint is not None:
            self.bound_model.load_state_dict(checkpoint)
        ones: Masks = {}
        for name, module in self.targets.items():
            ones[name] = {p: torch.ones_like(getattr(module, p)) for p in ('weight', 'bias')
                          if isinstance(getattr(module, p, None), torch.Tensor)}
        apply_masks(self.bound_model, ones)

    def patch_optimizer(self, *tasks: Callable[[], Any]) -> None:
        """Runs ``tasks`` after every ``optimizer.step()`` of the pruner's optimizer."""
        self._hook_optimizer('register_step_post_hook', tasks)

    def patch_optimizer_before(self, *tasks: Callable[[], Any]) -> None:
        """Runs ``tasks`` before every ``optimizer.step()`` of the pruner's optimizer."""
        self._hook_optimizer('register_step_pre_hook', tasks)

    def _hook_optimizer(self, register: str, tasks: tuple) -> None:
        optimizer = getattr(self, 'optimizer', None)
        if optimizer is None:
            raise ValueError(f'{type(self).__name__}: patching the optimizer needs the pruner to have one '
                             '(pass optimizer=).')
        for task in tasks:
            getattr(optimizer, register)(lambda opt, args, kwargs, task=task: task())

