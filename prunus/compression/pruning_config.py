"""Configuration of the training API (``Pruning``): global settings plus local pruners.

A config has global settings and a list of local pruner entries; every entry inherits the
global settings and overrides any of them (local wins). The key names of Intel Neural
Compressor's configs and of its predecessors are accepted as aliases, so configs written
for any of them read the same::

    >>> config = WeightPruningConfig([{'op_names': ['fc.*'], 'pattern': '2:4'}],
    ...                              target_sparsity=0.5, start_step=0, end_step=10)
    >>> settings = config.resolved()[0]
    >>> settings['pattern'], settings['target_sparsity'], settings['pruning_type']
    ('2:4', 0.5, 'snip_momentum')

Each key's rule is declared once, in :data:`prunus.compression.rules.RULES` together with
the config_list keys; messages are rendered there (``pruners[1]['pattern'] must be ...;
got ...``) and an unknown key is an error naming it, with the closest known key as a hint.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from .rules import POST_TRAINING_TYPES, PRUNING_TYPES  # noqa: F401 (the training API's pruning types, named here too)
from .rules import TRAINING_KEYS, TRAINING_OVERRIDES, KeyRule, check_value, is_int, rules_for, unknown_key_error
from .errors import ConfigTypeError, ConfigValueError

#: The group lasso coefficient used when a regularized entry sets no 'reg_coeff'.
DEFAULT_REG_COEFF = 1e-4

_TYPE_ALIASES = {'grouplasso': 'group_lasso', 'sparsegpt': 'sparse_gpt'}

#: LPOT's basic_magnitude pruned single weights of each tensor and raised the target
#: linearly with the epochs; its entries default to that where they do not say otherwise.
LPOT_DEFAULTS: dict[str, Any] = {'pattern': 'unstructured', 'sparsity_decay_type': 'linear',
                                 'pruning_scope': 'local'}

#: Canonical key -> rule (from the shared table in :mod:`prunus.compression.rules`).
#: Aliases (below) are renamed to these before checking.
PRUNING_KEYS: dict[str, KeyRule] = rules_for(TRAINING_KEYS, TRAINING_OVERRIDES)

#: Names used by older configs -> canonical names.
KEY_ALIASES = {
    'prune_type': 'pruning_type',
    'exclude_names': 'excluded_op_names',
    'not_to_prune_names': 'excluded_op_names',
    'prune_layer_type': 'pruning_op_types',
    'update_frequency_on_step': 'pruning_frequency',
    'frequency': 'update_frequency',
    'prune_domain': 'pruning_scope',
    'max_sparsity_ratio_per_layer': 'max_sparsity_ratio_per_op',
}

DEFAULTS: dict[str, Any] = {
    'target_sparsity': 0.9,
    'initial_sparsity': 0.0,
    'pruning_type': 'snip_momentum',
    'pattern': '4x1',
    'op_names': [],
    'excluded_op_names': [],
    'pruning_op_types': ['Conv', 'Linear'],
    'start_step': 0,
    'end_step': 0,
    'pruning_frequency': 1,
    'pruning_scope': 'global',
    'sparsity_decay_type': 'exp',
    'max_sparsity_ratio_per_op': 0.98,
    'reg_type': None,
    'reg_coeff': None,  # group lasso then uses DEFAULT_REG_COEFF
    'momentum': 0.9,
}


def normalize_settings(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Renames aliases, normalizes pruning types and checks every key of one mapping."""
    if not isinstance(raw, Mapping):
        raise ConfigTypeError(f'{where} must be a mapping of settings; got {type(raw).__name__}.')
    out: dict[str, Any] = {}
    for key, value in raw.items():
        canonical = KEY_ALIASES.get(key, key) if isinstance(key, str) else key
        if canonical not in PRUNING_KEYS:
            raise unknown_key_error(where, key, sorted(set(PRUNING_KEYS) | set(KEY_ALIASES)))
        if canonical == 'pruning_type' and isinstance(value, str):
            value = value.lower().replace('-', '_')
            value = _TYPE_ALIASES.get(value, value)
        if canonical in out:
            raise ConfigValueError(f"{where} sets '{canonical}' twice (once as '{key}').")
        check_value(where, canonical, PRUNING_KEYS[canonical], value)
        out[canonical] = list(value) if isinstance(value, tuple) else value
    return out


def _check_schedule(settings: dict[str, Any], where: str) -> None:
    epochs = 'start_epoch' in settings or 'end_epoch' in settings
    if epochs and not ('start_epoch' in settings and 'end_epoch' in settings):
        raise ConfigValueError(f"{where} gives only one of 'start_epoch' and 'end_epoch'; give both.")
    start, end = ('start_epoch', 'end_epoch') if epochs else ('start_step', 'end_step')
    if settings[end] < settings[start]:
        raise ConfigValueError(f"{where}['{end}'] ({settings[end]}) must be >= '{start}' ({settings[start]}).")
    if not epochs and 'update_frequency' in settings:
        if not is_int(settings['update_frequency']):
            raise ConfigValueError(f"{where}['update_frequency'] counts steps here and must be an integer; "
                             f"got {settings['update_frequency']!r}.")
        settings['pruning_frequency'] = settings.pop('update_frequency')
    if settings['initial_sparsity'] > settings['target_sparsity']:
        raise ConfigValueError(f"{where}['initial_sparsity'] ({settings['initial_sparsity']}) must not exceed "
                         f"'target_sparsity' ({settings['target_sparsity']}).")


class WeightPruningConfig:
    """Global settings and local pruner entries of the training API.

    Args:
        pruning_configs: local entries, each a dict of settings overriding the global ones
            for the layers it selects (``op_names`` regexes, ``pruning_op_types``).
        **settings: global settings; see :data:`PRUNING_KEYS` and :data:`KEY_ALIASES`.

    Raises:
        TypeError, ValueError: a key is unknown or a value breaks its rule (the message
            names the entry and the key); nothing is bound to a model yet.

    Example::

        config = WeightPruningConfig([{'op_names': ['layer1.*'], 'pattern': '2:4'}],
                                     target_sparsity=0.8, pruning_type='snip_momentum',
                                     start_step=0, end_step=1000)
    """

    def __init__(self, pruning_configs: Sequence[Mapping[str, Any]] | None = None, **settings: Any):
        if pruning_configs is None:
            pruning_configs = [{}]
        if isinstance(pruning_configs, Mapping) or not isinstance(pruning_configs, (list, tuple)):
            raise ConfigTypeError('pruning_configs must be a list of dicts; got '
                            f'{type(pruning_configs).__name__}.')
        self.global_settings = normalize_settings(settings, 'pruning config')
        self.pruning_configs = [normalize_settings(local, f'pruners[{i}]')
                                for i, local in enumerate(pruning_configs or [{}])]
        self.train: dict[str, Any] = {}
        self.resolved()  # validates the merged entries now, not when bound to a model

    def resolved(self) -> list[dict[str, Any]]:
        """Per local entry: defaults, then global settings, then the entry's own (local wins;
        ``excluded_op_names`` is the exception: global and local exclusions both apply)."""
        merged = []
        for index, local in enumerate(self.pruning_configs):
            given = {**self.global_settings, **local}
            lpot = LPOT_DEFAULTS if given.get('pruning_type') == 'basic_magnitude' else {}
            settings = {**DEFAULTS, **lpot, **given}
            # Exclusions add up: a global "do not prune" list holds for every local entry.
            settings['excluded_op_names'] = (self.global_settings.get('excluded_op_names', [])
                                             + local.get('excluded_op_names', []))
            _check_schedule(settings, f'pruners[{index}]')
            merged.append(settings)
        return merged

    def __repr__(self) -> str:
        return f'WeightPruningConfig({self.pruning_configs!r}, **{self.global_settings!r})'
