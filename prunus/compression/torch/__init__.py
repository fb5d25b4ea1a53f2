"""PyTorch pruners with the legacy-NNI API.

Example::

    from prunus.compression.torch import L1FilterPruner
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    model = pruner.compress()
"""
from .auto import (AMCPruner, AutoCompressPruner, NetAdaptPruner, SensitivityAnalysis, SensitivityPruner, SimulatedAnnealingPruner,
                   pruned_flops)
from .base import Pruner
from .data_pruners import (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                           TaylorFOWeightFilterPruner)
from .export import apply_compression_results, load_masks
from .masking import apply_masks, get_masks, strip
from .pruners import FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner, SlimPruner
from .regularization import bn_l1_penalty
from .report import SparsityReport

__all__ = [
    'Pruner', 'LevelPruner', 'L1FilterPruner', 'L2FilterPruner', 'FPGMPruner', 'SlimPruner',
    'ActivationAPoZRankFilterPruner', 'ActivationMeanRankFilterPruner', 'TaylorFOWeightFilterPruner',
    'apply_compression_results', 'load_masks', 'apply_masks', 'get_masks', 'strip',
    'bn_l1_penalty', 'SparsityReport',
    'SimulatedAnnealingPruner', 'NetAdaptPruner', 'SensitivityPruner', 'SensitivityAnalysis', 'pruned_flops',
    'AMCPruner', 'AutoCompressPruner',
]
