"""dependency_aware=True: tied Keras layers are scored together and the speedup removes
every channel they mask; grouped convs keep equal channels per group."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression import available_pruners  # noqa: E402
from prunus.compression.tf import (AGPPruner, L1FilterPruner, LevelPruner,  # noqa: E402
                                   SlimPruner)
from prunus.speedup.tf import channel_groups, speedup  # noqa: E402

from .zoo import build, perturb_batchnorm, sample  # noqa: E402

L = keras.layers


def _group_of(groups, name):
    return next(set(g.names) for g in groups if name in g.names)


def _error(model, small, x):
    ref = np.asarray(model(x, training=False))
    return np.abs(np.asarray(small(x, training=False)) - ref).max() / (np.abs(ref).max() + 1e-12)


def test_channel_groups_follow_adds_multiplies_and_depthwise():
    groups = channel_groups(build('residual_add'))
    assert {'stem', 'branch'} <= _group_of(groups, 'stem')
    assert 'head' not in _group_of(groups, 'stem')
    se = _group_of(channel_groups(build('depthwise_se')), 'expand')
    assert {'expand', 'dw', 'se_expand'} <= se and 'se_reduce' not in se


def _set_filter_l1(layer, l1):
    """Every weight of output filter o equal, so that filter's L1 norm is l1[o]."""
    kernel, bias = layer.get_weights()
    per_filter = kernel[..., 0].size
    layer.set_weights([np.ones_like(kernel) * (np.asarray(l1, np.float32) / per_filter), bias])


def test_group_score_is_the_sum_of_member_scores():
    model = build('residual_add')
    _set_filter_l1(model.get_layer('stem'), [1, 2, 3, 4, 5, 6, 7, 8])
    _set_filter_l1(model.get_layer('branch'), [8, 1, 1, 1, 1, 1, 1, 0.5])
    config = [{'sparsity': 0.5, 'op_types': ['Conv2D']}]
    alone = L1FilterPruner(model, config).calc_masks()
    np.testing.assert_array_equal(alone['stem']['bias'], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(alone['branch']['bias'], [1, 0, 0, 0, 1, 1, 1, 0])
    tied = L1FilterPruner(model, config, dependency_aware=True).calc_masks()
    # sums 9, 3, 4, 5, 6, 7, 8, 8.5: the four lowest go in both layers
    for name in ('stem', 'branch'):
        np.testing.assert_array_equal(tied[name]['bias'], [1, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(tied['head']['weight'], alone['head']['weight'])


@pytest.mark.parametrize('name, types', [
    ('residual_add', ['Conv2D']),
    ('depthwise_se', ['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D', 'Conv2DTranspose']),
    ('grouped_conv', ['Conv2D']),
])
def test_speedup_removes_every_dependency_aware_masked_channel(name, types):
    model = build(name)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': types}], dependency_aware=True)
    pruner.compress()
    small, summary = speedup(model, pruner, return_summary=True)
    assert summary['pruned_but_kept'] == {}
    assert _error(model, small, sample(model)) < 1e-5
    masked = {n: int((e['weight'].reshape(-1, e['weight'].shape[-1]).max(axis=0) == 0).sum())
              for n, e in pruner.get_masks().items() if type(pruner.layers[n]).__name__ == 'Conv2D'}
    for row in summary['layers']:
        if row['layer'] in masked:
            assert row['channels_after'] == row['channels_before'] - masked[row['layer']]


def test_grouped_conv_masks_are_equal_per_group_and_groups_can_drop():
    model = build('grouped_conv')
    masks = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['a', 'g']}],
                           dependency_aware=True).calc_masks()
    # 'a' feeds g (4 groups of 2 inputs); g's outputs are read by g2 (2 groups)
    assert masks['a']['bias'].reshape(4, 2).sum(axis=1).tolist() == [1, 1, 1, 1]
    assert masks['g']['bias'].reshape(4, 2).sum(axis=1).tolist() == [1, 1, 1, 1]
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 4))
    y = L.Conv2D(4, 1, name='a')(x)
    y = L.Conv2D(4, 3, groups=4, name='dw_like')(y)  # one channel per group
    model = keras.Model(x, L.Dense(2)(L.Flatten()(y)))
    masks = {n: {'weight': np.ones(tuple(model.get_layer(n).kernel.shape), np.float32) * [1, 0, 1, 0],
                 'bias': np.array([1, 0, 1, 0], np.float32)} for n in ('a', 'dw_like')}
    small = speedup(model, masks)
    assert (small.get_layer('dw_like').groups, small.get_layer('dw_like').filters) == (2, 2)
    for name, entry in masks.items():
        layer = model.get_layer(name)
        layer.set_weights([w * entry['weight' if w.ndim > 1 else 'bias'] for w in layer.get_weights()])
    assert _error(model, small, sample(model)) < 1e-5


def test_unbalanced_grouped_masks_keep_channels_until_every_group_is_equal():
    model = build('grouped_conv')
    a = np.ones((1, 1, 4, 8), np.float32)
    a[..., [0, 1]] = 0  # all of g's group-0 inputs
    g = np.ones((3, 3, 2, 8), np.float32)
    g[..., [0, 1, 2]] = 0  # g's group 0 entirely, one output of group 1
    masks = {'a': {'weight': a}, 'g': {'weight': g}}
    small, summary = speedup(model, masks, return_summary=True)
    # g2 (2 groups of 4 inputs) would lose 3 of group 0 but none of group 1: it keeps them,
    # so g's group 0 stays alive and must keep both inputs and outputs like the others.
    assert (small.get_layer('g').groups, small.get_layer('g').filters) == (4, 8)
    assert any(reason.startswith('grouped') for reason in summary['pruned_but_kept'])
    masked = keras.models.clone_model(model)
    masked.set_weights(model.get_weights())
    for name, entry in masks.items():
        layer = masked.get_layer(name)
        layer.kernel.assign(layer.kernel.numpy() * entry['weight'])
    assert _error(masked, small, sample(model)) < 1e-5


def test_data_driven_and_agp_pass_dependency_aware_on():
    model = build('residual_add')
    x, y = sample(model, 8), np.arange(8) % 3
    apoz = available_pruners('tf')['apoz'](model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                                           data=[(x, y)], dependency_aware=True).calc_masks()
    np.testing.assert_array_equal(apoz['stem']['bias'], apoz['branch']['bias'])
    agp = AGPPruner(model, [{'final_sparsity': 0.5, 'start_epoch': 0, 'end_epoch': 0,
                             'op_types': ['Conv2D']}], pruning_algorithm='l1', dependency_aware=True)
    agp.compress()
    masks = agp.get_masks()
    np.testing.assert_array_equal(masks['stem']['bias'], masks['branch']['bias'])


class _Sub(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = L.Conv2D(4, 3)

    def call(self, x):
        return self.conv(x)


@pytest.mark.parametrize('make, kwargs, error, message', [
    (lambda: build('seq_conv'), {'dependency_aware': 'yes'}, TypeError,
     r"L1FilterPruner: dependency_aware must be a bool; got 'yes'\."),
    (None, {}, ValueError, r'L1FilterPruner: dependency_aware=True cannot trace the model: .*subclassed'),
])
def test_dependency_aware_errors(make, kwargs, error, message):
    if make is None:
        model = _Sub()
        model(np.zeros((1, 6, 6, 3), np.float32))
        kwargs = {'dependency_aware': True}
    else:
        model = make()
    with pytest.raises(error, match=message):
        L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}], **kwargs)


@pytest.mark.parametrize('cls, types', [(LevelPruner, ['Conv2D']), (SlimPruner, ['BatchNormalization'])])
def test_dependency_aware_needs_a_per_layer_channel_pruner(cls, types):
    with pytest.raises(ValueError, match=f'{cls.__name__}: dependency_aware=True needs a pruner '
                                         f'that ranks channels per layer; {cls.__name__} does not.'):
        cls(build('seq_conv'), [{'sparsity': 0.5, 'op_types': types}], dependency_aware=True)


APPS = {'ResNet50': ['Conv2D'], 'MobileNetV2': ['Conv2D', 'DepthwiseConv2D'],
        'EfficientNetB0': ['Conv2D', 'DepthwiseConv2D']}


@pytest.mark.slow
@pytest.mark.parametrize('app', sorted(APPS))
def test_keras_applications_dependency_aware_l1_half(app):
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3), classes=10)
    perturb_batchnorm(model)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': APPS[app]}], dependency_aware=True)
    pruner.compress()
    small, summary = speedup(model, pruner, return_summary=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    assert _error(model, small, x) < 1e-4
    masked = sum(int((e['weight'].reshape(-1, e['weight'].shape[-1]).max(axis=0) == 0).sum())
                 for e in pruner.get_masks().values())
    kept = sum(summary['pruned_but_kept'].values())
    if app == 'ResNet50':
        # What stays: the stem channels the padded max-pool makes non-uniform before
        # conv2_block1_1 (zero-padded 3x3 convs take their constants in frozen paths).
        assert kept < 0.01 * masked
        assert all('conv2_block1_1' in reason for reason in summary['pruned_but_kept'])
    else:
        assert kept == 0
    assert summary['params_after'] < 0.4 * summary['params_before']
