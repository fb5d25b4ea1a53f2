"""Physical removal of pruned channels, exact and dependency-aware (PyTorch).

``speedup(model, example_inputs, masks)`` returns a smaller copy of ``model`` whose outputs
equal the masked model's; ``ModelSpeedup(model, dummy_input, masks).speedup_model()`` does
the same in place (NNI-compatible). ``save(small, path)`` writes the smaller model so that
``load(path, OriginalNet())`` rebuilds it (the file opens with ``weights_only=True``);
``fix_constants(small)`` freezes, after fine-tuning, the constant paths it learns with.
``channel_groups(model, dummy_input)`` lists the layers whose output channels are tied and
must be pruned with the same indices.

The Keras speedup's face is :mod:`prunus.speedup.tf` (its code lives in
:mod:`prunus.tf_speedup`); on an install without torch only that face is usable, so the
PyTorch names below are defined only when torch is installed.
"""
from importlib.util import find_spec

from prunus._interop import guard_triton_after_tensorflow

if find_spec('torch') is not None:
    guard_triton_after_tensorflow()  # before torch's FLOP counter can pull in triton
    from prunus.layers.torch.handlers import HANDLERS, SUPPORTED_LAYERS, Handler
    from prunus.compression.errors import SpeedupError
    from prunus.speedup.core import speedup
    from prunus.speedup.nni import ModelSpeedup
    from prunus.speedup.dependency import (ChannelGroup, EvenSplit, channel_groups, dependency_groups,
                                           dependency_structure)
    from prunus.speedup.ops import OP_RULES
    from prunus.speedup.persist import load, save
    from prunus.speedup.fixing import fix_constants
    from prunus.speedup.summary import LayerSummary, SpeedupSummary

__all__ = ['ModelSpeedup', 'speedup', 'SpeedupError', 'SpeedupSummary', 'LayerSummary',
           'Handler', 'HANDLERS', 'SUPPORTED_LAYERS', 'OP_RULES', 'channel_groups',
           'dependency_groups', 'dependency_structure', 'ChannelGroup', 'EvenSplit', 'save', 'load',
           'fix_constants']
