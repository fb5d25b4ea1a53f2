"""The one-shot Keras pruners; each is its criterion plus what it prunes."""
from __future__ import annotations

import keras
import numpy as np

from ...compression.registry import register_pruner
from . import criteria
from .base import Pruner
from prunus.layers.tf.specs import WEIGHT_SPECS, filters_of, from_torch, spec_of, to_torch, variables_of


def _weight(layer: keras.layers.Layer) -> np.ndarray:
    return variables_of(layer)[spec_of(layer).weight].numpy()


@register_pruner('level', framework='tf')
class LevelPruner(Pruner):
    """Unstructured magnitude pruning: the ``round(s * n)`` smallest ``|w|`` are masked.

    Ties are broken by position in the torch element order, so the masks equal the
    PyTorch LevelPruner's on the same weights.

    Example::

        LevelPruner(model, [{'sparsity': 0.8, 'op_types': ['default']}]).compress()
    """

    supported_types = tuple(t for t in WEIGHT_SPECS if t != 'BatchNormalization')
    default_types = supported_types
    structured = False

    def layer_scores(self, name, layer):
        return criteria.magnitude(to_torch(_weight(layer), spec_of(layer)))

    def expand_keep(self, name, keep):
        layer = self.layers[name]
        spec = spec_of(layer)
        kernel = _weight(layer)
        torch_shape = to_torch(kernel, spec).shape
        return {'weight': from_torch(keep.astype(np.float32).reshape(torch_shape), spec,
                                     kernel.shape)}


@register_pruner('l1', framework='tf')
class L1FilterPruner(Pruner):
    """Prunes the output filters with the smallest sum of ``|w|`` (Li et al., 2017).

    Example::

        L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}]).compress()
    """

    p = 1

    def layer_scores(self, name, layer):
        return criteria.lp_norm(filters_of(_weight(layer), spec_of(layer)), self.p)


@register_pruner('l2', framework='tf')
class L2FilterPruner(L1FilterPruner):
    """Prunes the output filters with the smallest L2 norm ``sqrt(sum w^2)``.

    Example::

        pruner = L2FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
        model = pruner.compress()
    """

    p = 2


@register_pruner('fpgm', framework='tf')
class FPGMPruner(Pruner):
    """Prunes the filters closest to the geometric median (He et al., 2019): smallest
    summed Euclidean distance to the layer's other filters.

    Example::

        pruner = FPGMPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
        model = pruner.compress()
    """

    def layer_scores(self, name, layer):
        return criteria.geometric_median_distance(filters_of(_weight(layer), spec_of(layer)))


@register_pruner('slim', framework='tf')
class SlimPruner(Pruner):
    """Network Slimming (Liu et al., 2017): masks BatchNormalization channels with the
    smallest ``|gamma|``, ranked globally over the layers each config entry selects.

    Train with an L1 penalty on gamma first (:func:`slim_regularizer`) so scales separate.

    Example::

        pruner = SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNormalization']}])
        model = pruner.compress()
    """

    supported_types = ('BatchNormalization',)
    default_types = supported_types
    global_per_entry = True

    def layer_scores(self, name, layer):
        if not layer.scale:
            raise ValueError(f"SlimPruner needs BatchNormalization '{name}' to have scale=True.")
        return criteria.batchnorm_scale(_weight(layer))


def slim_regularizer(scale: float = 1e-4) -> keras.regularizers.Regularizer:
    """The L1 sparsity regularizer Slim trains with: ``gamma_regularizer=slim_regularizer()``.

    Args:
        scale: the penalty weight.

    Returns:
        A Keras regularizer.

    Example::

        keras.layers.BatchNormalization(gamma_regularizer=slim_regularizer(1e-4))
    """
    return keras.regularizers.L1(scale)
