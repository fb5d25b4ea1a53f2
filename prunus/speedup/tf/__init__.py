"""Physically removing pruned channels from Keras 3 models.

Example::

    from prunus.speedup.tf import speedup
    small = speedup(model, pruner.get_masks())    # a new, smaller keras.Model
    small.save('small.keras')

The result computes, in inference mode, what the masked model computes: a channel is
removed only where nothing downstream still depends on it, and a removed channel that
carries a constant (a BatchNorm shift through an activation) has that constant folded into
the next layer's bias, or, for a zero-padded conv, where the constant meets the padding at
the borders, into a frozen (non-trainable) constant path of that conv. A zero BatchNorm scale (Network Slimming
masks) makes its channel such a constant, so the filters feeding it go too. Supported layer
types are the keys of :data:`HANDLERS` (and ``keras.ops`` calls those of
:data:`OP_HANDLERS`); any other layer is kept as it is, together with the channels it
touches. Grouped convolutions keep equal channels per group.
``channel_groups(model)`` lists the layers whose output channels are tied, which the
pruners' ``dependency_aware=True`` prunes together.
"""
from prunus.layers.tf.handlers import HANDLERS, LayerHandler
from prunus.layers.tf.op_handlers import OP_HANDLERS
from prunus.compression.errors import SpeedupError
from prunus.tf_speedup.api import speedup
from prunus.tf_speedup.dependency import ChannelGroup, channel_groups

__all__ = ['speedup', 'SpeedupError', 'HANDLERS', 'OP_HANDLERS', 'LayerHandler',
           'channel_groups', 'ChannelGroup']
