"""Physically removing pruned channels from Keras 3 models.

Example::

    from prunus.speedup.tf import speedup
    small = speedup(model, pruner.get_masks())    # a new, smaller keras.Model
    small.save('small.keras')

The result computes, in inference mode, what the masked model computes: a channel is
removed only where nothing downstream still depends on it, and a removed channel that
carries a constant (a BatchNorm shift through an activation) has that constant folded into
the next layer's bias. Supported layer types are the keys of :data:`HANDLERS`; any other
layer is kept as it is, together with the channels it touches.
"""
from .analysis import SpeedupError
from .api import speedup
from .handlers import HANDLERS, LayerHandler

__all__ = ['speedup', 'SpeedupError', 'HANDLERS', 'LayerHandler']
