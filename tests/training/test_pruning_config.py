"""WeightPruningConfig and the YAML layouts: local wins, aliases, unknown keys are errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from prunus.compression import WeightPruningConfig, load_pruning_yaml
from prunus.compression.torch import Pruning

from prunus.testing.digits import make_model

FIXTURES = Path(__file__).parent / 'fixtures'


def test_step_yaml_layout_loads_with_local_overrides():
    config = load_pruning_yaml(FIXTURES / 'snip_steps.yaml')
    first, second = config.resolved()
    assert first['pattern'] == 'oc_pattern_4x1' and first['pruning_scope'] == 'global'
    assert first['excluded_op_names'] == ['conv1', 'fc.*'] and first['target_sparsity'] == 0.7
    assert first['pruning_frequency'] == 3 and first['max_sparsity_ratio_per_op'] == 0.95
    assert second['target_sparsity'] == 0.5 and second['pruning_type'] == 'magnitude'
    assert second['excluded_op_names'] == ['conv1', 'conv.*']  # global exclusions hold everywhere


def test_step_yaml_binds_to_the_model():
    pruning = Pruning(str(FIXTURES / 'snip_steps.yaml'), make_model(0))
    assert [sorted(g.modules) for g in pruning.groups] == [['conv2'], ['fc1', 'fc2']]
    assert [g.schedule.frequency for g in pruning.groups] == [3, 2]


def test_epoch_yaml_layout_loads_and_converts_epochs_to_steps():
    config = load_pruning_yaml(FIXTURES / 'magnitude_epochs.yaml')
    (settings,) = config.resolved()
    assert settings['pruning_type'] == 'basic_magnitude' and settings['names'] == ['fc1.weight']
    assert settings['target_sparsity'] == 0.75 and settings['update_frequency'] == 0.5
    # LPOT's basic_magnitude: element-wise, per tensor, linear in the epochs
    assert (settings['pattern'], settings['pruning_scope'], settings['sparsity_decay_type']) == (
        'unstructured', 'local', 'linear')
    assert config.train['iteration'] == 50
    (group,) = Pruning(config, make_model(0)).groups  # no steps_per_epoch: followed per epoch
    assert [group.schedule.sparsity_at(e) for e in (0, 1, 2, 3)] == [0.0, 0.0, 0.75, 0.75]
    pruning = Pruning(config, make_model(0), steps_per_epoch=10)
    (group,) = pruning.groups
    assert list(group.modules) == ['fc1']
    assert (group.schedule.start, group.schedule.end, group.schedule.frequency) == (10, 20, 5)


@pytest.mark.parametrize('text, message', [
    ('pruning:\n  approach:\n    weight_compression:\n      target_sparsity: 0.5\n      patern: 2:4\n',
     "pruning config has unknown key 'patern'; did you mean 'pattern'?"),
    ('pruning:\n  approach:\n    weight_compression:\n      pruners:\n        - !Pruner\n            prune_domian: global\n',
     "pruners\\[0\\] has unknown key 'prune_domian'; did you mean 'prune_domain'?"),
    ('pruning:\n  trian: {}\n  approach:\n    weight_compression: {}\n',
     "'pruning' has unknown key 'trian'"),
    ('pruning:\n  train:\n    epochz: 3\n  approach:\n    weight_compression: {}\n',
     "'pruning.train' has unknown key 'epochz'"),
    ('pruning:\n  approach:\n    weight_compresion: {}\n',
     "'pruning.approach' has unknown key 'weight_compresion'"),
    ('version: 1.0\nmodle: {}\npruning:\n  approach:\n    weight_compression: {}\n',
     "the YAML root has unknown key 'modle'"),
])
def test_unknown_yaml_keys_are_errors_naming_the_key(text, message):
    with pytest.raises(ValueError, match=message):
        load_pruning_yaml(text)


@pytest.mark.parametrize('kwargs, error, message', [
    ({'target_sparsity': 1.2}, ValueError, r"pruning config\['target_sparsity'\] must be a number in \[0, 1\); got 1.2."),
    ({'pattern': '2:x'}, ValueError, r"pruning config\['pattern'\] must be a pattern such as"),
    ({'pruning_type': 'random'}, ValueError, r"must be one of 'magnitude', 'gradient'"),
    ({'pruning_scope': 3}, TypeError, r"pruning config\['pruning_scope'\] must be a string; got 3"),
    ({'start_step': 5, 'end_step': 2}, ValueError, r"pruners\[0\]\['end_step'\] \(2\) must be >= 'start_step' \(5\)"),
    ({'excluded_op_names': ['(']}, ValueError, 'a list of valid regular expressions'),
])
def test_bad_values_rejected_with_their_rule(kwargs, error, message):
    with pytest.raises(error, match=message):
        WeightPruningConfig(**kwargs)


def test_pruning_type_aliases_and_config_object_layout():
    config = WeightPruningConfig([{'start_step': 0, 'end_step': 2}], target_sparsity=0.9,
                                 pruning_scope='local', pruning_type='GroupLasso')
    (settings,) = config.resolved()
    assert settings['pruning_type'] == 'group_lasso' and settings['end_step'] == 2


def test_selection_errors_name_the_entry():
    model = make_model(0)
    with pytest.raises(ValueError, match=r'pruners\[1\] selects no layer'):
        Pruning(WeightPruningConfig([{}, {'op_names': ['nothing_here']}]), model)
    with pytest.raises(ValueError, match=r"pruners\[0\]\['pruning_op_types'\] \['LSTM'\] matches no prunable layer"):
        Pruning(WeightPruningConfig(pruning_op_types=['LSTM']), model)
    # INC skips the layers a pattern cannot tile, and says which
    with pytest.warns(UserWarning, match=r"pruners\[0\]: pattern '2:4' does not fit layer\(s\) 'conv1' \(32x9\); "
                                         'they are skipped and stay dense'):
        (group,) = Pruning(WeightPruningConfig(pattern='2:4'), model).groups
    assert 'conv1' not in group.modules and group.skipped == ["'conv1' (32x9)"]
