"""Framework-agnostic core of prunus: config_list rules, layer selection, sparsity
allocation, schedules, the pruner registry and the error types. Imports neither torch nor
tensorflow."""
from .allocation import global_keep_masks, keep_mask, lowest, prune_count
from .config import ConfigEntry, ConfigSpec, validate_config_list
from .errors import PrunusError, SpeedupError
from .patterns import BlockPattern, NMPattern, Pattern, parse_pattern
from .pruning_config import WeightPruningConfig
from .pruning_yaml import config_from_mapping, load_pruning_yaml
from .schedules import DECAY_TYPES, StepSchedule, agp_sparsity, decay_sparsity, lottery_round_sparsity
from .registry import available_pruners, get_pruner, register_pruner
from .selection import LayerRef, Selection, select_layers

__all__ = [
    'ConfigEntry', 'ConfigSpec', 'validate_config_list', 'PrunusError', 'SpeedupError',
    'LayerRef', 'Selection', 'select_layers',
    'prune_count', 'lowest', 'keep_mask', 'global_keep_masks',
    'register_pruner', 'available_pruners', 'get_pruner',
    'Pattern', 'BlockPattern', 'NMPattern', 'parse_pattern',
    'WeightPruningConfig', 'config_from_mapping', 'load_pruning_yaml',
    'DECAY_TYPES', 'StepSchedule', 'agp_sparsity', 'decay_sparsity', 'lottery_round_sparsity',
]
