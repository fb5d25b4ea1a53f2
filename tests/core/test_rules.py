"""One rule table and one renderer serve config_list, the training API and YAML."""
import pytest

from prunus.compression import WeightPruningConfig, validate_config_list
from prunus.compression.config import KEY_RULES, ConfigSpec
from prunus.compression.pruning_config import PRUNING_KEYS
from prunus.compression.rules import RULES, TRAINING_OVERRIDES, check_value, unknown_key_error
from prunus.compression.selection import LayerRef, NAME_MATCHING, matching, select_by_settings


def test_both_apis_take_their_rules_from_the_one_table():
    assert all(KEY_RULES[k] is RULES[k] for k in KEY_RULES)
    assert all(PRUNING_KEYS[k] is TRAINING_OVERRIDES.get(k, RULES[k]) for k in PRUNING_KEYS)
    assert set(TRAINING_OVERRIDES) == {'op_names'}


def test_the_same_rule_renders_the_same_message_in_both_apis():
    with pytest.raises(ValueError, match=r"config_list\[0\]\['initial_sparsity'\] must be a number in \[0, 1\); got 1.5"):
        validate_config_list([{'initial_sparsity': 1.5, 'final_sparsity': 0.5, 'op_types': ['default']}],
                             ConfigSpec(targets=('final_sparsity',), extra=('initial_sparsity',)))
    with pytest.raises(ValueError, match=r"pruning config\['initial_sparsity'\] must be a number in \[0, 1\); got 1.5"):
        WeightPruningConfig([{}], initial_sparsity=1.5)
    with pytest.raises(TypeError, match=r"here\['momentum'\] must be a number; got 'x' of type str"):
        check_value('here', 'momentum', RULES['momentum'], 'x')


def test_unknown_keys_name_the_closest_accepted_one():
    assert str(unknown_key_error('e', 'sparsty', ['sparsity', 'op_types'])) == \
        "e has unknown key 'sparsty'; did you mean 'sparsity'?"
    assert str(unknown_key_error('e', 'zzz', ['a', 'b'])) == "e has unknown key 'zzz'; accepted keys: a, b."
    assert 'does not use' in str(unknown_key_error('e', 'a', ['b'], known=['a'], user='P'))


def test_each_api_declares_how_its_names_match():
    names = ['features.conv1', 'features.conv10', 'fc']
    assert NAME_MATCHING['config_list']['op_names'] == 'exact'
    assert matching('exact', 'features.conv1', names) == ['features.conv1']
    assert matching('fullmatch', r'features\.conv1', names) == ['features.conv1']
    assert matching('search', r'conv1', names) == ['features.conv1', 'features.conv10']
    assert matching('part', 'conv', names) == ['features.conv1', 'features.conv10']


def test_training_api_selection_prefix_types_regex_names_and_exclusions():
    layers = [LayerRef('conv1', 'Conv2d'), LayerRef('conv2', 'Conv2d'), LayerRef('fc1', 'Linear'),
              LayerRef('fc2', 'Linear')]
    settings = {'pruning_op_types': ['Conv', 'Linear'], 'op_names': ['1$', 'fc'], 'excluded_op_names': ['fc2']}
    assert select_by_settings(settings, layers, prunable_types=['Conv2d', 'Linear'], where='p') == ['conv1', 'fc1']
    with pytest.raises(ValueError, match=r"p\['pruning_op_types'\] names 'LSTM'"):
        select_by_settings({**settings, 'pruning_op_types': ['LSTM']}, layers, prunable_types=['Conv2d'], where='p')
    with pytest.raises(ValueError, match=r"p\['names'\] names 'nope'"):
        select_by_settings({**settings, 'names': ['nope.weight']}, layers, prunable_types=['Conv2d'], where='p')
