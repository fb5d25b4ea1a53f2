"""PyTorch pruners with the legacy-NNI API.

Example::

    from prunus.compression.torch import L1FilterPruner
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    model = pruner.compress()
"""
from .admm import ADMMPruner
from .auto import (AMCPruner, AutoCompressPruner, NetAdaptPruner, SensitivityAnalysis, SensitivityPruner,
                   SimulatedAnnealingPruner, pruned_flops)
from .base import Pruner
from .distributed import average_scores, broadcast_masks
from .export import apply_compression_results, load_masks
from .head_pruner import TransformerHeadPruner
from .width import KeptChannelLayerNorm, prune_hidden_width
from .taylor_group import RandomProjectionLoss
from .lottery import LotteryTicketPruner
from .nni_utils import (ChannelDependency, GroupDependency, count_flops_params, get_module_by_name,
                        not_safe_to_prune)
from prunus.layers.torch.masking import apply_masks, get_masks, strip
from .pruners import LevelPruner, SlimPruner
from .reconstruction import Refit, reconstruct
from .nni_compat import (AGPPruner, ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner, FPGMPruner,
                         L1FilterPruner, L2FilterPruner, TaylorFOWeightFilterPruner)
from .post_training import SparseGPTPruner, WandaPruner
from .regularization import bn_l1_penalty
from .report import SparsityReport
from .semi_structured import is_two_four, semi_structured_available, to_semi_structured
from . import common
from .launcher import Pruning, pruning
from .training import prepare_pruning
from ..pruning_config import WeightPruningConfig
from ..pruning_yaml import load_pruning_yaml

__all__ = [
    'Pruner', 'LevelPruner', 'L1FilterPruner', 'L2FilterPruner', 'FPGMPruner', 'SlimPruner',
    'ActivationAPoZRankFilterPruner', 'ActivationMeanRankFilterPruner', 'TaylorFOWeightFilterPruner',
    'apply_compression_results', 'load_masks', 'apply_masks', 'get_masks', 'strip',
    'bn_l1_penalty', 'SparsityReport', 'reconstruct', 'Refit',
    'AGPPruner', 'LotteryTicketPruner', 'ADMMPruner',
    'Pruning', 'pruning', 'common', 'prepare_pruning', 'WeightPruningConfig', 'load_pruning_yaml',
    'average_scores', 'broadcast_masks',
    'semi_structured_available', 'is_two_four', 'to_semi_structured',
    'SimulatedAnnealingPruner', 'NetAdaptPruner', 'SensitivityPruner', 'SensitivityAnalysis', 'pruned_flops',
    'AMCPruner', 'AutoCompressPruner',
    'count_flops_params', 'get_module_by_name', 'ChannelDependency', 'GroupDependency', 'not_safe_to_prune',
    'WandaPruner', 'SparseGPTPruner',
    'TransformerHeadPruner', 'prune_hidden_width', 'KeptChannelLayerNorm', 'RandomProjectionLoss',
]
