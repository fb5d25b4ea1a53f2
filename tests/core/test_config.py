"""config_list validation: every bad input gets one pinned, actionable message."""
from __future__ import annotations

import pytest

from prunus.compression.config import KEY_RULES, ConfigSpec, validate_config_list

GOOD = {'sparsity': 0.5, 'op_types': ['Conv2d']}
AGP_SPEC = ConfigSpec(targets=('sparsity', 'final_sparsity'),
                      extra=('initial_sparsity', 'start_epoch', 'end_epoch', 'frequency'))


@pytest.mark.parametrize('config_list,error,message', [
    ({'sparsity': 0.5}, TypeError, 'config_list must be a list of dicts; got dict.'),
    ([], ValueError, 'config_list is empty;'),
    ([GOOD, 'x'], TypeError, 'config_list[1] must be a dict; got str.'),
    ([{'sparsity': 1.5, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0]['sparsity'] must be a number in [0, 1); got 1.5."),
    ([{'sparsity': -0.1, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0]['sparsity'] must be a number in [0, 1); got -0.1."),
    ([{'sparsity': '0.5', 'op_types': ['Conv2d']}], TypeError,
     "config_list[0]['sparsity'] must be a number; got '0.5' of type str."),
    ([{'sparsity': True, 'op_types': ['Conv2d']}], TypeError,
     "config_list[0]['sparsity'] must be a number; got True of type bool."),
    ([GOOD, {'sparsity': 0.5, 'op_types': 'Conv2d'}], TypeError,
     "config_list[1]['op_types'] must be a list of strings; got 'Conv2d' of type str."),
    ([{'sparsity': 0.5, 'op_types': []}], ValueError,
     "config_list[0]['op_types'] must be a non-empty list of strings; got []."),
    ([{'sparsity': 0.5, 'op_names_re': ['conv[']}], ValueError,
     "config_list[0]['op_names_re'] must be a non-empty list of valid regular expressions; got ['conv[']."),
    ([{'sparsty': 0.5, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0] has unknown key 'sparsty'; did you mean 'sparsity'?"),
    ([{'sparsity': 0.5, 'op_types': ['Conv2d'], 'final_sparsity': 0.9}], ValueError,
     "config_list[0] has key 'final_sparsity', which L1FilterPruner does not use; it accepts:"),
    ([{'sparsity': 0.5}], ValueError,
     "config_list[0] selects no layers: give at least one of 'op_types', 'op_names', "
     "'op_names_re', 'op_partial_names'."),
    ([{'op_types': ['Conv2d']}], ValueError,
     "config_list[0] needs one of 'sparsity', 'total_sparsity' (how much L1FilterPruner should prune)."),
    ([{'sparsity': 0.5, 'total_sparsity': 0.5, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0] sets both 'sparsity' and 'total_sparsity'; give only one."),
    ([{'sparsity': 0.5, 'sparsity_per_layer': 0.5, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0] sets both 'sparsity' and its alias 'sparsity_per_layer'."),
    ([{'exclude': True, 'sparsity': 0.5, 'op_names': ['fc']}], ValueError,
     "config_list[0] is an exclude entry and cannot also set 'sparsity'."),
    ([{'exclude': 'yes', 'op_names': ['fc']}], TypeError,
     "config_list[0]['exclude'] must be a bool; got 'yes' of type str."),
    ([{'sparsity': 0.5, 'max_sparsity_per_layer': 0.8, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0]['max_sparsity_per_layer'] only applies together with 'total_sparsity'."),
    ([{'total_sparsity': 0.5, 'max_sparsity_per_layer': 0, 'op_types': ['Conv2d']}], ValueError,
     "config_list[0]['max_sparsity_per_layer'] must be a number in (0, 1]; got 0."),
])
def test_bad_config_messages_are_pinned(config_list, error, message):
    with pytest.raises(error) as caught:
        validate_config_list(config_list, pruner='L1FilterPruner')
    assert str(caught.value).startswith(message)
    assert '\n' not in str(caught.value) and 'lambda' not in str(caught.value)


# Negative cases derived from the rule declarations themselves: one wrong type and one
# wrong value for every key whose rule has them.
WRONG_TYPE = {'a number': 'x', 'a list of strings': 3, 'a bool': 1, 'an integer': 1.5, 'a string': 3}
WRONG_VALUE = {'a number in [0, 1)': 1.0, 'a number in (0, 1]': 0, 'a non-empty list of strings': [],
               'an integer >= 0': -1, 'an integer >= 1': 0,
               'a non-empty list of valid regular expressions': ['('], "'row' or 'layer'": 'column',
               "a pattern such as 'unstructured' or '2:4'": '3x',
               "a pattern such as 'unstructured', '4x1', '1xchannel' or '2:4'": '3x',
               "one of 'channel', 'head'": 'heads'}


@pytest.mark.parametrize('key', sorted(KEY_RULES))
def test_every_declared_rule_rejects_what_it_forbids(key):
    rule = KEY_RULES[key]
    spec = ConfigSpec(targets=('sparsity', 'total_sparsity', 'final_sparsity'),
                      extra=tuple(KEY_RULES))
    base = {'total_sparsity': 0.5, 'op_names': ['x']} if key != 'total_sparsity' else {'op_names': ['x']}
    with pytest.raises(TypeError, match=rf"config_list\[0\]\['{key}'\] must be {rule.type_text}"):
        validate_config_list([{**base, key: WRONG_TYPE[rule.type_text]}], spec)
    if rule.value_schema is not None:
        with pytest.raises(ValueError, match=rf"config_list\[0\]\['{key}'\] must be "):
            validate_config_list([{**base, key: WRONG_VALUE[rule.value_text]}], spec)


def test_aliases_are_resolved():
    entry, = validate_config_list([{'sparsity_per_layer': 0.3, 'op_types': ['default']}])
    assert entry.get('sparsity') == 0.3 and 'sparsity_per_layer' not in entry


def test_a_pruner_spec_admits_its_schedule_keys():
    entry, = validate_config_list([{'initial_sparsity': 0.0, 'final_sparsity': 0.8, 'start_epoch': 0,
                                    'end_epoch': 10, 'frequency': 1, 'op_types': ['default']}], AGP_SPEC)
    assert entry.get('final_sparsity') == 0.8


def test_valid_entries_come_back_in_order():
    entries = validate_config_list([GOOD, {'exclude': True, 'op_names': ['fc']}])
    assert [e.index for e in entries] == [0, 1] and entries[1].exclude
