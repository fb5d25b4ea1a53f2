"""``ModelSpeedup`` with NNI's signature:
``ModelSpeedup(model, dummy_input, masks_file, map_location=None, batch_dim=0, confidence=8,
customized_replace_func=None)``, and its ``bound_model``.

prunus traces the model once with ``dummy_input`` and infers which channels go exactly, so
NNI's ``confidence`` (the batch size of its statistical shape inference) and ``batch_dim``
(where that batch is stacked) change nothing; both are still checked, so a call that was
wrong for NNI fails here too. ``map_location`` is where a masks *file* is loaded to.
``customized_replace_func`` maps layer types (classes or their names) to prunus
:class:`~prunus.speedup.Handler` objects; NNI's replacement functions, which rebuilt a
module from its inferred masks, have no equivalent (prunus handlers remove channels one
direction at a time) and are refused with a message saying so.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .core import ModelSpeedup as CoreModelSpeedup
from prunus.layers.torch.handlers import Handler


def _input_dims(dummy_input: Any) -> int | None:
    """Dimensions of the (first) input tensor, None when there is none to check against."""
    if isinstance(dummy_input, torch.Tensor):
        return dummy_input.dim()
    values = dummy_input.values() if isinstance(dummy_input, dict) else (
        dummy_input if isinstance(dummy_input, (tuple, list)) else ())
    tensor = next((v for v in values if isinstance(v, torch.Tensor)), None)
    return None if tensor is None else tensor.dim()


def _handlers(model: nn.Module, replace: Any) -> dict[type, Handler] | None:
    if replace is None:
        return None
    if not isinstance(replace, dict):
        raise TypeError('ModelSpeedup: customized_replace_func must be a dict {layer type: Handler}; '
                        f'got {type(replace).__name__}.')
    types = {type(m).__name__: type(m) for m in model.modules()}
    handlers: dict[type, Handler] = {}
    for key, value in replace.items():
        cls = types.get(key) if isinstance(key, str) else key
        if not isinstance(cls, type):
            raise ValueError(f"ModelSpeedup: customized_replace_func names '{key}', which is no layer type of "
                             'the model.')
        if not isinstance(value, Handler):
            raise TypeError(f"ModelSpeedup: customized_replace_func['{key}'] is {type(value).__name__}; prunus "
                            'needs a prunus.speedup.Handler (NNI replacement functions have no equivalent).')
        handlers[cls] = value
    return handlers


class ModelSpeedup(CoreModelSpeedup):
    """NNI-compatible in-place speedup (see the module doc for NNI's extra arguments).

    Example::

        ModelSpeedup(model, dummy_input, 'mask.pth', map_location='cpu').speedup_model()
    """

    def __init__(self, model: nn.Module, dummy_input: Any, masks_file: Any = None, map_location: Any = None,
                 batch_dim: int = 0, confidence: int = 8, customized_replace_func: Any = None, *,
                 custom_handlers: dict[type, Handler] | None = None, check: bool = True) -> None:
        if not isinstance(confidence, int) or isinstance(confidence, bool) or confidence < 1:
            raise ValueError(f'ModelSpeedup: confidence must be an integer >= 1; got {confidence!r}.')
        dims = _input_dims(dummy_input)
        if not isinstance(batch_dim, int) or isinstance(batch_dim, bool) or (
                dims is not None and not -dims <= batch_dim < dims):
            raise ValueError(f'ModelSpeedup: batch_dim must be a dimension of dummy_input '
                             f'({dims} dims); got {batch_dim!r}.')
        if isinstance(masks_file, (str, os.PathLike)) and map_location is not None:
            masks_file = torch.load(masks_file, map_location=map_location, weights_only=True)
        handlers = {**(_handlers(model, customized_replace_func) or {}), **(custom_handlers or {})}
        super().__init__(model, dummy_input, masks_file, custom_handlers=handlers or None, check=check)
        self.map_location, self.batch_dim, self.confidence = map_location, batch_dim, confidence

    @property
    def bound_model(self) -> nn.Module:
        """NNI's name for the model being sped up (shrunk in place by ``speedup_model()``)."""
        return self.model

