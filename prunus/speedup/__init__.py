"""Physical removal of pruned channels, exact and dependency-aware (PyTorch).

``speedup(model, example_inputs, masks)`` returns a smaller copy of ``model`` whose outputs
equal the masked model's; ``ModelSpeedup(model, dummy_input, masks).speedup_model()`` does
the same in place (NNI-compatible). ``save(small, path)`` writes the smaller model so that
``load(path, OriginalNet())`` rebuilds it (the file opens with ``weights_only=True``). ``channel_groups(model, dummy_input)`` lists the layers
whose output channels are tied and must be pruned with the same indices.

The Keras speedup lives in :mod:`prunus.speedup.tf`. Names here load on first use, so
importing ``prunus.speedup.tf`` never imports torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from prunus._interop import guard_triton_after_tensorflow

_EXPORTS = {
    'ModelSpeedup': 'core', 'SpeedupError': 'core', 'speedup': 'core',
    'ChannelGroup': 'dependency', 'channel_groups': 'dependency', 'dependency_groups': 'dependency',
    'EvenSplit': 'dependency', 'dependency_structure': 'dependency',
    'HANDLERS': 'handlers', 'SUPPORTED_LAYERS': 'handlers', 'Handler': 'handlers',
    'OP_RULES': 'ops',
    'LayerSummary': 'summary', 'SpeedupSummary': 'summary',
    'save': 'persist', 'load': 'persist',
}

__all__ = ['ModelSpeedup', 'speedup', 'SpeedupError', 'SpeedupSummary', 'LayerSummary',
           'Handler', 'HANDLERS', 'SUPPORTED_LAYERS', 'OP_RULES', 'channel_groups',
           'dependency_groups', 'dependency_structure', 'ChannelGroup', 'EvenSplit', 'save', 'load']


if TYPE_CHECKING:  # type checkers see the real names; at run time they load on first use
    from .core import ModelSpeedup, SpeedupError, speedup
    from .dependency import (ChannelGroup, EvenSplit, channel_groups, dependency_groups,
                             dependency_structure)
    from .handlers import HANDLERS, SUPPORTED_LAYERS, Handler
    from .ops import OP_RULES
    from .persist import load, save
    from .summary import LayerSummary, SpeedupSummary


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'prunus.speedup' has no attribute '{name}'")
    guard_triton_after_tensorflow()
    value = getattr(importlib.import_module(f'prunus.speedup.{_EXPORTS[name]}'), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
