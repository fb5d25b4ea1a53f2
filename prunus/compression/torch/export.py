"""Saving and loading pruning results in the legacy-NNI file layout.

* model file: a plain ``state_dict`` with masks baked into the weights;
* mask file: ``{module_name: {'weight': mask, 'bias': mask}}`` saved with ``torch.save``;
* optional ONNX graph of the pruned model.
"""
from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from typing import Any, Mapping

import torch
from torch import nn

from prunus.compression.paths import atomic_path, check_writable
from prunus.layers.torch.files import normalize_mask_keys, read_mask_file, save_atomic
from prunus.layers.torch.masking import Masks, check_masks, strip
from ..mask_rules import check_structure, not_masks


def load_masks(masks: str | os.PathLike | Mapping, device: Any = None) -> Masks:
    """A mask dict from a dict or from a file written by ``export_model``.

    Args:
        masks: a mask dict or the path of a file written by ``export_model``.
        device: where to load the tensors.

    Returns:
        ``{module_name: {'weight': mask, 'bias': mask}}``.

    Example::

        masks = load_masks('mask.pth')
    """
    if isinstance(masks, (str, os.PathLike)):
        loaded = read_mask_file(masks, device)
    elif isinstance(masks, Mapping):
        check_structure(masks)
        loaded = masks
    else:
        raise not_masks(masks, pruner=False)
    return normalize_mask_keys(loaded)


def _dummy(input_shape: Any, device: Any, dummy_input: Any) -> Any:
    if dummy_input is None:
        dummy_input = torch.randn(*input_shape)
    if device is None:
        return dummy_input
    if isinstance(dummy_input, torch.Tensor):
        return dummy_input.to(device)
    if isinstance(dummy_input, dict):
        return {k: v.to(device) for k, v in dummy_input.items()}
    return tuple(t.to(device) for t in dummy_input)


def export_model(model: nn.Module, masks: Masks, model_path: str, mask_path: str | None = None,
                 onnx_path: str | None = None, input_shape: Any = None, device: Any = None,
                 dummy_input: Any = None, opset_version: int | None = None) -> None:
    """Writes the pruned state dict, and optionally the masks and an ONNX graph."""
    if onnx_path is not None and input_shape is None and dummy_input is None:
        raise ValueError('export_model needs input_shape or dummy_input to write onnx_path.')
    if onnx_path is not None and importlib.util.find_spec('onnx') is None:
        raise ImportError("export_model(onnx_path=...) needs the 'onnx' package: pip install onnx")
    check_masks(model, masks)
    for path, what in ((model_path, 'model file'), (mask_path, 'mask file'), (onnx_path, 'ONNX file')):
        if path is not None:
            check_writable(path, what)
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    for name, per_param in masks.items():
        for pname, mask in per_param.items():
            key = f'{name}.{pname}' if name else pname
            state[key] = state[key] * mask.to(state[key].device, state[key].dtype)
    if onnx_path is not None:  # the step most likely to fail goes first: all or nothing
        _export_onnx(model, onnx_path, input_shape, device, dummy_input, opset_version)
    save_atomic(state, model_path)
    if mask_path is not None:
        save_atomic({n: {p: m.detach().cpu() for p, m in per.items()} for n, per in masks.items()}, mask_path)


def _export_onnx(model: nn.Module, onnx_path: str, input_shape: Any, device: Any, dummy_input: Any,
                 opset_version: Any = None) -> None:
    plain = strip(copy.deepcopy(model))
    inputs = _dummy(input_shape, device, dummy_input)
    args = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    kwargs = {}
    if isinstance(inputs, dict):
        args, kwargs = (), inputs
    # The TorchScript exporter needs only the onnx package and handles eager models
    # with Python control flow; torch deprecates it in favour of torch.export, which
    # would also need onnxscript.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        with atomic_path(onnx_path) as tmp:
            torch.onnx.export(plain, args, tmp, kwargs=kwargs or None, dynamo=False,
                              **({'opset_version': opset_version} if opset_version is not None else {}))


def _source(mask_path: Any) -> str:
    return f"mask file '{os.fspath(mask_path)}'" if isinstance(mask_path, (str, os.PathLike)) else 'masks'


@torch.no_grad()
def apply_compression_results(model: nn.Module, mask_path: str | Mapping, device: Any = None) -> nn.Module:
    """Multiplies ``model``'s weights by the masks in ``mask_path`` (a file or a dict).

    Every mask is checked against the model first, so a mismatch changes nothing.

    Args:
        model: a fresh model of the architecture the masks were computed on.
        mask_path: a mask file from ``export_model`` or a mask dict.
        device: where to load the masks (default: each weight's device).

    Returns:
        ``model``, its masked weights zeroed.

    Raises:
        ValueError: a mask names a missing module or has the wrong shape.

    Example::

        model = apply_compression_results(MyNet(), 'mask.pth')
    """
    masks = load_masks(mask_path, device)
    check_masks(model, masks, _source(mask_path))
    modules = dict(model.named_modules())
    for name, per_param in masks.items():
        for pname, mask in per_param.items():
            param = getattr(modules[name], pname)
            param.mul_(mask.to(param.device, param.dtype))
    return model
