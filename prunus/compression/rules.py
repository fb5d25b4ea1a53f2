"""The rule of every configuration key prunus reads, and the one place their errors are
rendered.

Both PyTorch APIs (the legacy ``config_list`` pruners and the Intel-style training API,
``WeightPruningConfig``) and the Keras pruners check their keys here: :data:`RULES` holds
each key's type and value rule with the sentence that describes it, :func:`check_value`
turns a broken rule into ``<where>['<key>'] must be <rule>; got <value>.``, and
:func:`unknown_key_error` names an unknown key with the closest accepted one. Each API
declares which keys it reads (:data:`CONFIG_LIST_KEYS`, :data:`TRAINING_KEYS`) and its
aliases.

One key means different things in the two APIs, on purpose (each API's documented
behaviour): ``op_names`` in a ``config_list`` is a list of exact layer names, in the
training API a list of regular expressions matched with ``re.search`` (see
:mod:`prunus.compression.selection`). :data:`TRAINING_OVERRIDES` declares that one
difference.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from schema import And, Schema, SchemaError

from .patterns import parse_pattern
from .schedules import DECAY_TYPES
from .errors import ConfigTypeError, ConfigValueError


@dataclass(frozen=True)
class KeyRule:
    """The type check and value check of one config key, each with its sentence."""

    type_schema: Any
    type_text: str
    value_schema: Any = None
    value_text: str = ''


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_str_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)


def compiles(patterns: Iterable[str]) -> bool:
    try:
        for pattern in patterns:
            re.compile(pattern)
    except re.error:
        return False
    return True


def _is_pattern(value: Any) -> bool:
    try:
        parse_pattern(value)
    except (TypeError, ValueError):
        return False
    return True


def one_of(choices: Sequence[str]) -> KeyRule:
    return KeyRule(lambda v: isinstance(v, str), 'a string', lambda v: v in choices,
                   'one of ' + ', '.join(repr(c) for c in choices))


#: Types pruned once after training from calibration data (``prepare_pruning(..., dataloader=)``).
POST_TRAINING_TYPES = ('sparse_gpt', 'wanda')
PRUNING_TYPES = ('magnitude', 'gradient', 'snip', 'snip_momentum', 'pattern_lock', 'group_lasso',
                 'basic_magnitude', 'retrain_free') + POST_TRAINING_TYPES

#: What a filter pruner's entry removes: output channels (the default) or attention heads.
GRANULARITIES = ('channel', 'head')

FRACTION = KeyRule(is_number, 'a number', lambda v: 0 <= v < 1, 'a number in [0, 1)')
CAP = KeyRule(is_number, 'a number', lambda v: 0 < v <= 1, 'a number in (0, 1]')
NAMES = KeyRule(is_str_list, 'a list of strings', lambda v: len(v) > 0, 'a non-empty list of strings')
REGEXES = KeyRule(is_str_list, 'a list of strings', compiles, 'a list of valid regular expressions')
STEP = KeyRule(is_int, 'an integer', lambda v: v >= 0, 'an integer >= 0')
COUNT = KeyRule(is_int, 'an integer', lambda v: v >= 1, 'an integer >= 1')

#: Every key of every configuration, with its rule.
RULES: dict[str, KeyRule] = {
    # config_list: how much, which layers
    'sparsity': FRACTION,
    'sparsity_per_layer': FRACTION,
    'total_sparsity': FRACTION,
    'max_sparsity_per_layer': CAP,
    'op_types': NAMES,
    'op_names': NAMES,
    'op_names_re': KeyRule(is_str_list, 'a list of strings', And(lambda v: len(v) > 0, compiles),
                           'a non-empty list of valid regular expressions'),
    'op_partial_names': NAMES,
    'exclude': KeyRule(lambda v: isinstance(v, bool), 'a bool'),
    # schedules (config_list of the training-aware pruners, and the training API)
    'initial_sparsity': FRACTION,
    'final_sparsity': FRACTION,
    'start_epoch': STEP,
    'end_epoch': STEP,
    'frequency': COUNT,
    'prune_iterations': COUNT,
    # the training API
    'target_sparsity': FRACTION,
    'pruning_type': one_of(PRUNING_TYPES),
    'pattern': KeyRule(lambda v: isinstance(v, str), 'a string', _is_pattern,
                       "a pattern such as 'unstructured', '4x1', '1xchannel' or '2:4'"),
    'names': KeyRule(is_str_list, 'a list of strings'),
    'excluded_op_names': REGEXES,
    'pruning_op_types': KeyRule(is_str_list, 'a list of strings', lambda v: len(v) > 0,
                                'a non-empty list of layer type names'),
    'start_step': STEP,
    'end_step': STEP,
    'pruning_frequency': COUNT,
    'update_frequency': KeyRule(is_number, 'a number', lambda v: v > 0, 'a number > 0'),
    'pruning_scope': one_of(('global', 'local')),
    'sparsity_decay_type': one_of(DECAY_TYPES),
    'max_sparsity_ratio_per_op': CAP,
    'reg_type': KeyRule(lambda v: v is None or isinstance(v, str), 'a string or None',
                        lambda v: v in (None, 'group_lasso'), "'group_lasso' or None"),
    'reg_coeff': KeyRule(is_number, 'a number', lambda v: v >= 0, 'a number >= 0'),
    'momentum': FRACTION,
    # config_list of the post-training pruners (Wanda, SparseGPT)
    'comparison_group': KeyRule(lambda v: isinstance(v, str), 'a string', lambda v: v in ('row', 'layer'),
                                "'row' or 'layer'"),
    # config_list of the filter pruners and the searches: what one pruned unit is
    'granularity': one_of(GRANULARITIES),
}

#: The keys a ``config_list`` entry may hold (each pruner accepts a subset).
CONFIG_LIST_KEYS = ('sparsity', 'sparsity_per_layer', 'total_sparsity', 'max_sparsity_per_layer',
                    'op_types', 'op_names', 'op_names_re', 'op_partial_names', 'exclude',
                    'initial_sparsity', 'final_sparsity', 'start_epoch', 'end_epoch', 'frequency',
                    'prune_iterations', 'pattern', 'comparison_group', 'granularity')
#: The canonical keys of the training API's settings.
TRAINING_KEYS = ('target_sparsity', 'initial_sparsity', 'pruning_type', 'pattern', 'op_names', 'names',
                 'excluded_op_names', 'pruning_op_types', 'start_step', 'end_step', 'pruning_frequency',
                 'start_epoch', 'end_epoch', 'update_frequency', 'pruning_scope', 'sparsity_decay_type',
                 'max_sparsity_ratio_per_op', 'reg_type', 'reg_coeff', 'momentum')
#: Where the training API's rule differs from the ``config_list`` one of the same key.
TRAINING_OVERRIDES = {'op_names': REGEXES}  # regular expressions (re.search), may be empty


def rules_for(keys: Sequence[str], overrides: Mapping[str, KeyRule] | None = None) -> dict[str, KeyRule]:
    """The rule table of one API: its ``keys`` from :data:`RULES`, with its overrides."""
    return {key: (overrides or {}).get(key, RULES[key]) for key in keys}


def _fmt(value: Any) -> str:
    return repr(value) if not isinstance(value, type) else value.__name__


def check_value(where: str, key: str, rule: KeyRule, value: Any) -> None:
    """Raises TypeError / ValueError naming ``where``, ``key``, the rule and the value."""
    here = f"{where}['{key}']"
    try:
        Schema(rule.type_schema).validate(value)
    except SchemaError:
        raise ConfigTypeError(f'{here} must be {rule.type_text}; got {_fmt(value)} '
                        f'of type {type(value).__name__}.') from None
    if rule.value_schema is None:
        return
    try:
        Schema(rule.value_schema).validate(value)
    except SchemaError:
        raise ConfigValueError(f'{here} must be {rule.value_text}; got {_fmt(value)}.') from None


def unknown_key_error(where: str, key: Any, accepted: Sequence[str], *, known: Iterable[str] = (),
                      user: str = 'this pruner', hint: bool = True) -> ValueError:
    """The error for a key ``where`` does not accept: one ``user`` does not read (it is in
    ``known``), or an unknown one, with the closest accepted key as a hint."""
    if not isinstance(key, str):
        return ConfigValueError(f'{where} has a key {key!r} that is not a string.')
    if key in known:
        return ConfigValueError(f"{where} has key '{key}', which {user} does not use; "
                          f"it accepts: {', '.join(accepted)}.")
    close = difflib.get_close_matches(key, accepted, n=1) if hint else []
    tail = f" did you mean '{close[0]}'?" if close else f" accepted keys: {', '.join(accepted)}."
    return ConfigValueError(f"{where} has unknown key '{key}';{tail}")
