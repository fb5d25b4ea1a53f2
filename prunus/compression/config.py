"""Validation of ``config_list``, the list of dicts every pruner takes.

Each key's rule is declared once in :data:`prunus.compression.rules.RULES` (a ``schema``
check plus the sentence that describes it); every error message is rendered from those
declarations, so a message always names the entry, the key, the value received and the
rule (a :class:`~prunus.compression.errors.ConfigValueError`, also a ``ValueError``)::

    >>> validate_config_list([{'sparsity': 1.5, 'op_types': ['Conv2d']}])
    Traceback (most recent call last):
    ...
    prunus.compression.errors.ConfigValueError: config_list[0]['sparsity'] must be a number in [0, 1); got 1.5.

Precedence: entries are read in order and, for a layer selected by several entries,
the *last* entry that selects it wins; an ``exclude`` entry that selects a layer
removes it from pruning unless a later entry selects it again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .rules import CONFIG_LIST_KEYS, KeyRule, check_value, rules_for, unknown_key_error
from .errors import ConfigTypeError, ConfigValueError

SELECTOR_KEYS = ('op_types', 'op_names', 'op_names_re', 'op_partial_names')
SPARSITY_ALIASES = {'sparsity_per_layer': 'sparsity'}

#: Every key a config entry may hold, with its rule (from the shared table in
#: :mod:`prunus.compression.rules`). Pruners choose which ones they accept.
KEY_RULES: dict[str, KeyRule] = rules_for(CONFIG_LIST_KEYS)


@dataclass(frozen=True)
class ConfigSpec:
    """Which config keys a pruner understands.

    Attributes:
        targets: keys that state how much to prune; a non-exclude entry needs exactly one
            of them (an empty tuple means no target is needed, as for AMC's budget).
        extra: further keys the pruner accepts besides selectors and ``exclude``.

    Example::

        spec = ConfigSpec(targets=('final_sparsity', 'sparsity'), extra=('start_epoch', 'end_epoch'))
        validate_config_list([{'final_sparsity': 0.8, 'op_types': ['Linear']}], spec, 'AGPPruner')
    """

    targets: tuple[str, ...] = ('sparsity', 'total_sparsity')
    extra: tuple[str, ...] = ('max_sparsity_per_layer',)

    @property
    def accepted(self) -> tuple[str, ...]:
        """Every key an entry may hold: the selectors, ``exclude``, the targets and the extras."""
        keys = set(self.targets) | set(self.extra) | set(SELECTOR_KEYS) | {'exclude'}
        if 'sparsity' in self.targets:
            keys.add('sparsity_per_layer')
        return tuple(sorted(keys))


@dataclass(frozen=True)
class ConfigEntry:
    """One validated entry of ``config_list``; aliases are resolved to canonical keys.

    Example::

        entry = validate_config_list([{'sparsity_per_layer': 0.5, 'op_types': ['Conv2d']}])[0]
        entry.get('sparsity')   # 0.5: the alias is resolved
    """

    index: int
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exclude(self) -> bool:
        """Whether this entry removes the layers it selects."""
        return bool(self.values.get('exclude', False))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of canonical ``key``, or ``default`` when the entry does not set it."""
        return self.values.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    @property
    def where(self) -> str:
        """``config_list[i]``: how error messages name this entry."""
        return f'config_list[{self.index}]'


def _check_entry_shape(index: int, values: dict[str, Any], spec: ConfigSpec, pruner: str) -> None:
    where = f'config_list[{index}]'
    if not any(key in values for key in SELECTOR_KEYS):
        raise ConfigValueError(f"{where} selects no layers: give at least one of "
                         f"{', '.join(repr(k) for k in SELECTOR_KEYS)}.")
    given = [key for key in spec.targets if key in values]
    if values.get('exclude', False):
        if given or 'granularity' in values:
            key = given[0] if given else 'granularity'
            raise ConfigValueError(f"{where} is an exclude entry and cannot also set '{key}'.")
        return
    if spec.targets and not given:
        raise ConfigValueError(f"{where} needs one of {', '.join(repr(k) for k in spec.targets)} "
                         f'(how much {pruner} should prune).')
    if len(given) > 1:
        raise ConfigValueError(f"{where} sets both '{given[0]}' and '{given[1]}'; give only one.")
    if 'max_sparsity_per_layer' in values and 'total_sparsity' not in values:
        raise ConfigValueError(f"{where}['max_sparsity_per_layer'] only applies together with "
                         "'total_sparsity'.")


def validate_config_list(config_list: Any, spec: ConfigSpec = ConfigSpec(),
                         pruner: str = 'this pruner') -> list[ConfigEntry]:
    """Checks ``config_list`` against ``spec`` and returns canonical entries.

    Raises:
        TypeError: a value has the wrong type (the message names entry and key).
        ValueError: a value is out of range, a key is unknown, or an entry is incomplete.

    Args:
        config_list: the user's list of dicts.
        spec: the keys the pruner understands.
        pruner: the pruner's name, for messages.

    Returns:
        One :class:`ConfigEntry` per dict, in order, with aliases resolved.

    Example::

        entries = validate_config_list([{'sparsity': 0.5, 'op_types': ['default']},
                                        {'exclude': True, 'op_names': ['fc']}])
    """
    if isinstance(config_list, Mapping) or not isinstance(config_list, (list, tuple)):
        raise ConfigTypeError(f'config_list must be a list of dicts; got {type(config_list).__name__}.')
    if not config_list:
        raise ConfigValueError('config_list is empty; give at least one entry such as '
                         "{'sparsity': 0.5, 'op_types': ['default']}.")
    entries = []
    for index, raw in enumerate(config_list):
        if not isinstance(raw, Mapping):
            raise ConfigTypeError(f'config_list[{index}] must be a dict; got {type(raw).__name__}.')
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in spec.accepted:
                raise unknown_key_error(f'config_list[{index}]', key, spec.accepted, known=KEY_RULES, user=pruner)
            check_value(f'config_list[{index}]', key, KEY_RULES[key], value)
            canonical = SPARSITY_ALIASES.get(key, key)
            if canonical in values:
                raise ConfigValueError(f"config_list[{index}] sets both '{canonical}' and its alias '{key}'.")
            values[canonical] = list(value) if isinstance(value, tuple) else value
        _check_entry_shape(index, values, spec, pruner)
        entries.append(ConfigEntry(index, values))
    return entries
