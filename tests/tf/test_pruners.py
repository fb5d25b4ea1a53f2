"""Every registered Keras pruner: exact counts, masks through training, strip, export, errors."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from prunus.compression import available_pruners, prune_count  # noqa: E402
from prunus.compression.tf import (FPGMPruner, L1FilterPruner, L2FilterPruner,  # noqa: E402
                                   LevelPruner, SlimPruner, load_masks, strip)
from prunus.layers.tf.masking import MaskConstraint  # noqa: E402

from .zoo import build, sample  # noqa: E402

DATA_DRIVEN = {'apoz', 'mean_activation', 'taylorfo'}


def _pruner(name, model, sparsity=0.5):
    cls = available_pruners('tf')[name]
    x = sample(model, 8)
    y = np.arange(8) % 3
    if name == 'agp':
        return cls(model, [{'final_sparsity': sparsity, 'start_epoch': 0, 'end_epoch': 0,
                            'op_types': ['default']}], pruning_algorithm='l1')
    if name == 'slim':
        return cls(model, [{'sparsity': sparsity, 'op_types': ['BatchNormalization']}])
    if name in DATA_DRIVEN:
        kwargs = {'criterion': keras.losses.SparseCategoricalCrossentropy(from_logits=True)} \
            if name == 'taylorfo' else {}
        return cls(model, [{'sparsity': sparsity, 'op_types': ['default']}], data=[(x, y)], **kwargs)
    return cls(model, [{'sparsity': sparsity, 'op_types': ['default']}])


@pytest.mark.parametrize('name', sorted(available_pruners('tf')))
def test_exact_sparsity_and_masks_hold_through_fit_and_tape(name):
    model = build('seq_conv')
    pruner = _pruner(name, model)
    pruner.compress()
    masks = pruner.get_masks()
    assert masks
    for layer_name, entry in masks.items():
        weight = entry['weight']
        if name == 'level':
            assert int((weight == 0).sum()) == prune_count(weight.size, 0.5)
        elif name != 'slim':  # slim ranks globally; its total is checked below
            channels = weight.reshape(-1, weight.shape[-1]).max(axis=0)
            assert int((channels == 0).sum()) == prune_count(weight.shape[-1], 0.5)
    if name == 'slim':
        total = sum(e['weight'].size for e in masks.values())
        assert sum(int((e['weight'] == 0).sum()) for e in masks.values()) == prune_count(total, 0.5)
    x, y = sample(model, 16), np.arange(16) % 4
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=pruner.callbacks())
    opt = keras.optimizers.SGD(0.5, momentum=0.9)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model(x) ** 2)
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    for layer_name, entry in pruner.get_masks().items():
        layer = pruner.layers[layer_name]
        value = {v.name: v.numpy() for v in layer.weights}
        weight = value['gamma'] if name == 'slim' else value[next(iter(value))]
        assert np.all(weight[entry['weight'] == 0] == 0)


def test_strip_leaves_plain_model_and_export_round_trip(tmp_path):
    model = build('residual_add')
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']},
                                    {'exclude': True, 'op_names': ['head']}])
    pruner.compress()
    assert 'head' not in pruner.get_masks()
    pruner.export_model(str(tmp_path / 'm.keras'), str(tmp_path / 'masks.npz'))
    loaded = load_masks(str(tmp_path / 'masks.npz'))
    assert set(loaded) == set(pruner.get_masks())
    for n in loaded:
        np.testing.assert_array_equal(loaded[n]['bias'], pruner.get_masks()[n]['bias'])
    stripped = strip(model)
    assert not any(isinstance(v.constraint, MaskConstraint) for v in stripped.weights)
    x = sample(model)
    reloaded = keras.models.load_model(str(tmp_path / 'm.keras'))
    np.testing.assert_allclose(reloaded(x), stripped(x), atol=1e-6)


def _conv_with_filters(values):
    """A Conv2D whose output filter o has every weight equal to values[o]."""
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(len(values), 3, name='c')])
    kernel = np.ones((3, 3, 2, len(values)), np.float32) * np.asarray(values, np.float32)
    model.get_layer('c').set_weights([kernel, np.ones(len(values), np.float32)])
    return model


def test_filter_oracles():
    masks = L1FilterPruner(_conv_with_filters([3, -1, 2, 0.5]), [{'sparsity': 0.5, 'op_types': ['Conv2D']}]).calc_masks()
    np.testing.assert_array_equal(masks['c']['bias'], [1, 0, 1, 0])
    assert masks['c']['weight'][..., 1].sum() == 0
    model = _conv_with_filters([1, 1, 1, 1])
    kernel = model.get_layer('c').get_weights()[0]
    kernel[0, 0, 0, 2] = 3.0  # same L1 change as spreading, but a larger L2
    kernel[:, :, :, 3] = 0.0
    kernel[0, 0, 0, 3] = 18.0 - 1e-3  # L1 just under filter 0/1, L2 far larger
    model.get_layer('c').set_weights([kernel, np.ones(4, np.float32)])
    l1 = L1FilterPruner(model, [{'sparsity': 0.25, 'op_types': ['Conv2D']}]).calc_masks()['c']['bias']
    l2 = L2FilterPruner(model, [{'sparsity': 0.25, 'op_types': ['Conv2D']}]).calc_masks()['c']['bias']
    np.testing.assert_array_equal(l1, [1, 1, 1, 0])
    np.testing.assert_array_equal(l2, [0, 1, 1, 1])  # ties broken by lower index
    # summed distances 16, 13, 12, 13, 34 (x sqrt 18): the median filter goes first
    fpgm = FPGMPruner(_conv_with_filters([0, 1, 2, 3, 10]), [{'sparsity': 0.2, 'op_types': ['Conv2D']}])
    np.testing.assert_array_equal(fpgm.calc_masks()['c']['bias'], [1, 1, 0, 1, 1])


def test_level_ranks_in_torch_element_order():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='d')])
    # Keras kernel (in=3, out=2); torch weight (out, in). All magnitudes tie.
    model.get_layer('d').set_weights([np.ones((3, 2), np.float32), np.zeros(2, np.float32)])
    mask = LevelPruner(model, [{'sparsity': 0.5, 'op_types': ['Dense']}]).calc_masks()['d']['weight']
    # torch order prunes weight[0, 0..2] first: the first output's three inputs.
    np.testing.assert_array_equal(mask, [[0, 1], [0, 1], [0, 1]])


def test_slim_ranks_globally_with_cap():
    model = build('concat')
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)][0]
    gamma = np.arange(1, 11, dtype=np.float32)
    bn.set_weights([gamma] + bn.get_weights()[1:])
    mask = SlimPruner(model, [{'sparsity': 0.3, 'op_types': ['BatchNormalization']}]).calc_masks()
    np.testing.assert_array_equal(mask[bn.name]['weight'], [0, 0, 0] + [1] * 7)


@pytest.mark.parametrize('config, error, message', [
    ([{'sparsity': 1.5, 'op_types': ['Conv2D']}], ValueError,
     r"config_list\[0\]\['sparsity'\] must be a number in \[0, 1\); got 1.5."),
    ([{'sparsity': 0.5, 'op_names': ['conv9']}], ValueError,
     r"config_list\[0\]\['op_names'\] names 'conv9', which matches no module; did you mean 'conv2' or 'conv1'\?"),
    ([{'sparsity': 0.5, 'op_types': ['Conv2d']}], ValueError,
     r"config_list\[0\]\['op_types'\] names 'Conv2d', which L1FilterPruner cannot prune"),
])
def test_config_errors_are_the_core_messages(config, error, message):
    model = build('seq_conv')
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(error, match=message):
        L1FilterPruner(model, config)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_data_driven_pruner_asks_for_data():
    model = build('seq_conv')
    pruner = available_pruners('tf')['apoz'](model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    with pytest.raises(ValueError, match='pass data='):
        pruner.compress()


def test_nested_layers_have_qualified_names():
    model = build('nested')
    masks = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['inner/c']}]).compress() and None
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    assert masks is None and set(pruner.get_masks()) == {'stem', 'inner/c'}
