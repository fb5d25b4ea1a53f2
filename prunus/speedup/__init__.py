"""Physical removal of pruned channels, exact and dependency-aware (PyTorch).

``speedup(model, example_inputs, masks)`` returns a smaller copy of ``model`` whose outputs
equal the masked model's; ``ModelSpeedup(model, dummy_input, masks).speedup_model()`` does
the same in place (NNI-compatible). ``channel_groups(model, dummy_input)`` lists the layers
whose output channels are tied and must be pruned with the same indices.
"""
from prunus.speedup.core import ModelSpeedup, SpeedupError, speedup
from prunus.speedup.dependency import ChannelGroup, channel_groups, dependency_groups
from prunus.speedup.handlers import HANDLERS, SUPPORTED_LAYERS, Handler
from prunus.speedup.ops import OP_RULES
from prunus.speedup.summary import LayerSummary, SpeedupSummary

__all__ = ['ModelSpeedup', 'speedup', 'SpeedupError', 'SpeedupSummary', 'LayerSummary',
           'Handler', 'HANDLERS', 'SUPPORTED_LAYERS', 'OP_RULES', 'channel_groups',
           'dependency_groups', 'ChannelGroup']
