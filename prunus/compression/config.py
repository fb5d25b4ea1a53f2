"""Validation of ``config_list``, the list of dicts every pruner takes.

Each key's rule is declared once in :data:`KEY_RULES` (a ``schema`` check plus the
sentence that describes it); every error message is rendered from those declarations,
so a message always names the entry, the key, the value received and the rule::

    >>> validate_config_list([{'sparsity': 1.5, 'op_types': ['Conv2d']}])
    Traceback (most recent call last):
    ...
    ValueError: config_list[0]['sparsity'] must be a number in [0, 1); got 1.5.

Precedence: entries are read in order and, for a layer selected by several entries,
the *last* entry that selects it wins; an ``exclude`` entry that selects a layer
removes it from pruning unless a later entry selects it again.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from schema import And, Schema, SchemaError

from .patterns import parse_pattern

SELECTOR_KEYS = ('op_types', 'op_names', 'op_names_re', 'op_partial_names')
SPARSITY_ALIASES = {'sparsity_per_layer': 'sparsity'}


@dataclass(frozen=True)
class KeyRule:
    """The type check and value check of one config key, each with its sentence."""

    type_schema: Any
    type_text: str
    value_schema: Any = None
    value_text: str = ''


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def _is_pattern(value: Any) -> bool:
    try:
        parse_pattern(value)
    except (TypeError, ValueError):
        return False
    return True


def _compiles(patterns: Iterable[str]) -> bool:
    try:
        for pattern in patterns:
            re.compile(pattern)
    except re.error:
        return False
    return True


_FRACTION = KeyRule(_is_number, 'a number', lambda v: 0 <= v < 1, 'a number in [0, 1)')
_NAMES = KeyRule(_is_str_list, 'a list of strings', lambda v: len(v) > 0, 'a non-empty list of strings')
_EPOCH = KeyRule(_is_int, 'an integer', lambda v: v >= 0, 'an integer >= 0')
_COUNT = KeyRule(_is_int, 'an integer', lambda v: v >= 1, 'an integer >= 1')

#: Every key a config entry may hold, with its rule. Pruners choose which ones they accept.
KEY_RULES: dict[str, KeyRule] = {
    'sparsity': _FRACTION,
    'sparsity_per_layer': _FRACTION,
    'total_sparsity': _FRACTION,
    'max_sparsity_per_layer': KeyRule(_is_number, 'a number', lambda v: 0 < v <= 1, 'a number in (0, 1]'),
    'op_types': _NAMES,
    'op_names': _NAMES,
    'op_names_re': KeyRule(_is_str_list, 'a list of strings',
                           And(lambda v: len(v) > 0, _compiles),
                           'a non-empty list of valid regular expressions'),
    'op_partial_names': _NAMES,
    'exclude': KeyRule(lambda v: isinstance(v, bool), 'a bool'),
    # Schedule keys of the training-aware pruners.
    'initial_sparsity': _FRACTION,
    'final_sparsity': _FRACTION,
    'start_epoch': _EPOCH,
    'end_epoch': _EPOCH,
    'frequency': _COUNT,
    'prune_iterations': _COUNT,
    # Keys of the post-training pruners (Wanda, SparseGPT).
    'pattern': KeyRule(lambda v: isinstance(v, str), 'a string', _is_pattern,
                       "a pattern such as 'unstructured' or '2:4'"),
    'comparison_group': KeyRule(lambda v: isinstance(v, str), 'a string',
                                lambda v: v in ('row', 'layer'), "'row' or 'layer'"),
}


@dataclass(frozen=True)
class ConfigSpec:
    """Which config keys a pruner understands.

    Attributes:
        targets: keys that state how much to prune; a non-exclude entry needs exactly one
            of them (an empty tuple means no target is needed, as for AMC's budget).
        extra: further keys the pruner accepts besides selectors and ``exclude``.
    """

    targets: tuple[str, ...] = ('sparsity', 'total_sparsity')
    extra: tuple[str, ...] = ('max_sparsity_per_layer',)

    @property
    def accepted(self) -> tuple[str, ...]:
        keys = set(self.targets) | set(self.extra) | set(SELECTOR_KEYS) | {'exclude'}
        if 'sparsity' in self.targets:
            keys.add('sparsity_per_layer')
        return tuple(sorted(keys))


@dataclass(frozen=True)
class ConfigEntry:
    """One validated entry of ``config_list``; aliases are resolved to canonical keys."""

    index: int
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def exclude(self) -> bool:
        return bool(self.values.get('exclude', False))

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    @property
    def where(self) -> str:
        return f'config_list[{self.index}]'


def _fmt(value: Any) -> str:
    return repr(value) if not isinstance(value, type) else value.__name__


def _check_key(index: int, key: str, value: Any) -> None:
    rule = KEY_RULES[key]
    where = f"config_list[{index}]['{key}']"
    try:
        Schema(rule.type_schema).validate(value)
    except SchemaError:
        raise TypeError(f'{where} must be {rule.type_text}; got {_fmt(value)} '
                        f'of type {type(value).__name__}.') from None
    if rule.value_schema is None:
        return
    try:
        Schema(rule.value_schema).validate(value)
    except SchemaError:
        raise ValueError(f'{where} must be {rule.value_text}; got {_fmt(value)}.') from None


def _unknown_key_error(index: int, key: Any, spec: ConfigSpec, pruner: str) -> ValueError:
    if not isinstance(key, str):
        return ValueError(f'config_list[{index}] has a key {key!r} that is not a string.')
    if key in KEY_RULES:
        return ValueError(f"config_list[{index}] has key '{key}', which {pruner} does not use; "
                          f"it accepts: {', '.join(spec.accepted)}.")
    close = difflib.get_close_matches(key, spec.accepted, n=1)
    hint = f" did you mean '{close[0]}'?" if close else f" accepted keys: {', '.join(spec.accepted)}."
    return ValueError(f"config_list[{index}] has unknown key '{key}';{hint}")


def _check_entry_shape(index: int, values: dict[str, Any], spec: ConfigSpec, pruner: str) -> None:
    where = f'config_list[{index}]'
    if not any(key in values for key in SELECTOR_KEYS):
        raise ValueError(f"{where} selects no layers: give at least one of "
                         f"{', '.join(repr(k) for k in SELECTOR_KEYS)}.")
    given = [key for key in spec.targets if key in values]
    if values.get('exclude', False):
        if given:
            raise ValueError(f"{where} is an exclude entry and cannot also set '{given[0]}'.")
        return
    if spec.targets and not given:
        raise ValueError(f"{where} needs one of {', '.join(repr(k) for k in spec.targets)} "
                         f'(how much {pruner} should prune).')
    if len(given) > 1:
        raise ValueError(f"{where} sets both '{given[0]}' and '{given[1]}'; give only one.")
    if 'max_sparsity_per_layer' in values and 'total_sparsity' not in values:
        raise ValueError(f"{where}['max_sparsity_per_layer'] only applies together with "
                         "'total_sparsity'.")


def validate_config_list(config_list: Any, spec: ConfigSpec = ConfigSpec(),
                         pruner: str = 'this pruner') -> list[ConfigEntry]:
    """Checks ``config_list`` against ``spec`` and returns canonical entries.

    Raises:
        TypeError: a value has the wrong type (the message names entry and key).
        ValueError: a value is out of range, a key is unknown, or an entry is incomplete.
    """
    if isinstance(config_list, Mapping) or not isinstance(config_list, (list, tuple)):
        raise TypeError(f'config_list must be a list of dicts; got {type(config_list).__name__}.')
    if not config_list:
        raise ValueError('config_list is empty; give at least one entry such as '
                         "{'sparsity': 0.5, 'op_types': ['default']}.")
    entries = []
    for index, raw in enumerate(config_list):
        if not isinstance(raw, Mapping):
            raise TypeError(f'config_list[{index}] must be a dict; got {type(raw).__name__}.')
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in spec.accepted:
                raise _unknown_key_error(index, key, spec, pruner)
            _check_key(index, key, value)
            canonical = SPARSITY_ALIASES.get(key, key)
            if canonical in values:
                raise ValueError(f"config_list[{index}] sets both '{canonical}' and its alias '{key}'.")
            values[canonical] = list(value) if isinstance(value, tuple) else value
        _check_entry_shape(index, values, spec, pruner)
        entries.append(ConfigEntry(index, values))
    return entries


__all__ = ['KEY_RULES', 'KeyRule', 'ConfigSpec', 'ConfigEntry', 'SELECTOR_KEYS',
           'validate_config_list']
