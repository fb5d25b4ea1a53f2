"""Keras 3 pruners with the legacy-NNI API: the same config_list and names as PyTorch.

Example::

    from prunus.compression.tf import L1FilterPruner
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    model = pruner.compress()
    model.fit(x, y, callbacks=pruner.callbacks())   # masked weights stay exactly zero

``op_types`` are Keras class names (``'Conv2D'``, ``'Dense'``, ``'BatchNormalization'``, ...)
plus ``'default'``; ``op_names`` are layer names, ``'outer/inner'`` inside nested models.
In a custom ``tf.GradientTape`` loop, ``optimizer.apply_gradients`` keeps masked weights
at zero by itself (the masks are variable constraints); after changing weights any other
way call ``pruner.apply_masks()``.
"""
from .agp import AGPCallback, AGPPruner
from .base import MaskCallback, Pruner
from .data_driven import (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                          DataDrivenPruner, TaylorFOWeightFilterPruner)
from prunus.layers.tf.masking import Masks, apply_masks, load_masks, save_masks, strip
from .reconstruction import Refit, reconstruct
from .pruners import (FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner, SlimPruner,
                      slim_regularizer)

__all__ = [
    'Pruner', 'DataDrivenPruner', 'MaskCallback', 'AGPCallback', 'Masks',
    'LevelPruner', 'L1FilterPruner', 'L2FilterPruner', 'FPGMPruner', 'SlimPruner',
    'ActivationAPoZRankFilterPruner', 'ActivationMeanRankFilterPruner',
    'TaylorFOWeightFilterPruner', 'AGPPruner',
    'apply_masks', 'strip', 'save_masks', 'load_masks', 'slim_regularizer',
    'reconstruct', 'Refit',
]
