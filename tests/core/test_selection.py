"""Which layers a config selects, and which entry wins when several select one."""
from __future__ import annotations

import pytest

from prunus.compression import LayerRef, select_layers, validate_config_list

LAYERS = [LayerRef('conv1', 'Conv2d'), LayerRef('bn1', 'BatchNorm2d'), LayerRef('layer1.0.conv1', 'Conv2d'),
          LayerRef('layer1.0.conv2', 'Conv2d'), LayerRef('layer1', 'Sequential'), LayerRef('fc', 'Linear')]
SUPPORTED, DEFAULT = ('Conv2d', 'Linear'), ('Conv2d',)


def select(config_list):
    entries = validate_config_list(config_list)
    chosen = select_layers(entries, LAYERS, supported_types=SUPPORTED, default_types=DEFAULT,
                           pruner='L1FilterPruner')
    return {s.layer.name: s.entry.get('sparsity') for s in chosen}


def test_default_means_the_pruners_default_types():
    assert select([{'sparsity': 0.5, 'op_types': ['default']}]) == {
        'conv1': 0.5, 'layer1.0.conv1': 0.5, 'layer1.0.conv2': 0.5}


def test_the_last_entry_that_selects_a_layer_wins():
    assert select([{'sparsity': 0.5, 'op_types': ['Conv2d']},
                   {'sparsity': 0.8, 'op_names': ['conv1']}]) == {
        'conv1': 0.8, 'layer1.0.conv1': 0.5, 'layer1.0.conv2': 0.5}
    assert select([{'sparsity': 0.8, 'op_names': ['conv1']},
                   {'sparsity': 0.5, 'op_types': ['Conv2d']}])['conv1'] == 0.5


def test_exclude_removes_unless_a_later_entry_selects_again():
    assert select([{'sparsity': 0.5, 'op_types': ['Conv2d', 'Linear']},
                   {'exclude': True, 'op_names_re': [r'layer1\..*']}]) == {'conv1': 0.5, 'fc': 0.5}
    assert select([{'sparsity': 0.5, 'op_types': ['Conv2d']},
                   {'exclude': True, 'op_partial_names': ['layer1']},
                   {'sparsity': 0.2, 'op_names': ['layer1.0.conv2']}]) == {'conv1': 0.5, 'layer1.0.conv2': 0.2}


def test_names_and_types_intersect_within_an_entry():
    assert select([{'sparsity': 0.5, 'op_types': ['Conv2d'], 'op_partial_names': ['layer1']}]) == {
        'layer1.0.conv1': 0.5, 'layer1.0.conv2': 0.5}


def test_regex_skips_layers_the_pruner_cannot_prune():
    assert select([{'sparsity': 0.5, 'op_names_re': ['layer1.*']}]) == {
        'layer1.0.conv1': 0.5, 'layer1.0.conv2': 0.5}


@pytest.mark.parametrize('config_list,message', [
    ([{'sparsity': 0.5, 'op_names': ['layer1.0.conv3']}],
     "config_list[0]['op_names'] names 'layer1.0.conv3', which matches no module; did you mean "
     "'layer1.0.conv2' or 'layer1.0.conv1' or 'layer1'?"),
    ([{'sparsity': 0.5, 'op_names': ['bn1']}],
     "config_list[0]['op_names'] names 'bn1', a BatchNorm2d, which L1FilterPruner cannot prune; "
     'it prunes: Conv2d, Linear.'),
    ([{'sparsity': 0.5, 'op_types': ['BatchNorm2d']}],
     "config_list[0]['op_types'] names 'BatchNorm2d', which L1FilterPruner cannot prune; it prunes: "
     'Conv2d, Linear.'),
    ([{'sparsity': 0.5, 'op_names_re': ['block.*']}],
     "config_list[0]['op_names_re'] pattern 'block.*' matches no module name."),
    ([{'sparsity': 0.5, 'op_partial_names': ['head']}],
     "config_list[0]['op_partial_names'] 'head' is part of no module name."),
    ([{'sparsity': 0.5, 'op_types': ['Linear'], 'op_names': ['conv1']}],
     'config_list[0] selects no layer that L1FilterPruner can prune'),
    ([{'sparsity': 0.5, 'op_types': ['Linear']}, {'exclude': True, 'op_names': ['fc']}],
     'config_list excludes every layer it selects; nothing is left to prune.'),
])
def test_selection_errors_name_entry_and_key(config_list, message):
    with pytest.raises(ValueError) as caught:
        select(config_list)
    assert str(caught.value).startswith(message)


def test_a_subclass_is_selected_by_its_base_its_own_name_and_default():
    layers = LAYERS + [LayerRef('stem', 'MyConv', kinds=('Conv2d',)), LayerRef('act', 'MyReLU')]

    def pick(op_types):
        entries = validate_config_list([{'sparsity': 0.5, 'op_types': op_types}])
        return {s.layer.name for s in select_layers(entries, layers, supported_types=SUPPORTED,
                                                     default_types=DEFAULT, pruner='L1FilterPruner')}

    assert 'stem' in pick(['Conv2d']) and 'stem' in pick(['default'])
    assert pick(['MyConv']) == {'stem'}
    with pytest.raises(ValueError, match="names 'MyReLU', which L1FilterPruner cannot prune"):
        pick(['MyReLU'])
