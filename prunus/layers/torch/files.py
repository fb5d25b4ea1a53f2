"""Reading and writing prunus' PyTorch files: every read names the file and the format
it expected, every write goes through a temporary file in the target directory, so a
failed export leaves nothing half-written behind."""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import torch

logger = logging.getLogger('prunus.search')

from prunus.compression import mask_rules
from prunus.compression.paths import atomic_path

MASK_FORMAT = ("a mask file written by export_model (torch.save of "
               "{module_name: {'weight': mask, 'bias': mask}})")


def check_readable(path: str | os.PathLike, what: str) -> str:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} '{path}' does not exist.")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} '{path}' is a directory, not a file.")
    return path


def load_tensors(path: str | os.PathLike, what: str, expected: str, device: Any = None) -> Any:
    """``torch.load(path, weights_only=True)`` with an error that names the file and
    what it should have held (torch's own advises ``weights_only=False``, which would
    run arbitrary code from the file)."""
    path = check_readable(path, what)
    try:
        return torch.load(path, map_location=device or 'cpu', weights_only=True)
    except Exception as exc:  # corrupt, truncated, foreign pickle: all one user error
        # torch's text advises weights_only=False, which would run code from the file
        raise ValueError(f"{what} '{path}' cannot be read as {expected}: it is corrupt, truncated, "
                         f'or holds objects other than tensors and containers ({type(exc).__name__}).') from exc


def read_mask_file(path: str | os.PathLike, device: Any = None) -> dict:
    """The mask dict in ``path``; its structure checked (values are checked against the
    model by :func:`~prunus.layers.torch.masking.check_masks`)."""
    loaded = load_tensors(path, 'mask file', MASK_FORMAT, device)
    mask_rules.check_structure(loaded, f"mask file '{os.fspath(path)}'")
    return loaded


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through a temporary file, so readers never see half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_checkpoint(path: str | os.PathLike, owner: str) -> dict | None:
    """A search's own checkpoint, or None (with a warning) when it cannot be read: a
    half-written or foreign file means starting that search afresh, not a crash."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as exc:  # corrupt or from another torch: not worth stopping for
        logger.warning("%s: checkpoint '%s' cannot be read (%s); starting afresh", owner, path, type(exc).__name__)
        return None
    if not isinstance(state, dict):
        logger.warning("%s: checkpoint '%s' is not a prunus checkpoint; starting afresh", owner, path)
        return None
    return state


def normalize_mask_keys(masks: Mapping) -> dict:
    """NNI's mask files name the entries ``'weight_mask'``/``'bias_mask'``; accept both."""
    return {name: {key.removesuffix('_mask'): m for key, m in entry.items()} for name, entry in masks.items()}
