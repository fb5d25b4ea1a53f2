"""Non-zero constants into zero-padded convolutions: one kept constant input channel
carries the others (their kernel slices scaled by the ratio of the constants), exactly."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression.tf import L1FilterPruner  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402

from .zoo import dead_filters, perturb_batchnorm, rel_error, sample  # noqa: E402

L = keras.layers
CARRIED = {"carries the constant inputs of 'c2' (zero padding)": 1}


def block(shape: tuple, producer, consumer, activation: str = 'sigmoid') -> keras.Model:
    """producer 'c1' -> BatchNorm 'bn' -> activation -> consumer 'c2', random statistics.
    The sigmoid is never zero: every pruned filter of c1 becomes a non-zero constant."""
    keras.utils.set_random_seed(0)
    x = keras.Input(shape)
    y = L.Activation(activation)(L.BatchNormalization(name='bn')(producer(x)))
    model = keras.Model(x, consumer(y))
    perturb_batchnorm(model, 1)
    return model


CASES = {
    'conv2d_same': ((9, 9, 3), lambda: L.Conv2D(8, 3, name='c1'),
                    lambda: L.Conv2D(6, 3, padding='same', name='c2')),
    'conv2d_strided': ((9, 9, 3), lambda: L.Conv2D(8, 3, name='c1'),
                       lambda: L.Conv2D(6, 3, strides=2, padding='same', name='c2')),
    'conv2d_dilated': ((11, 11, 3), lambda: L.Conv2D(8, 1, name='c1'),
                       lambda: L.Conv2D(6, 3, dilation_rate=2, padding='same', name='c2')),
    'conv1d_causal': ((20, 3), lambda: L.Conv1D(8, 3, name='c1'),
                      lambda: L.Conv1D(6, 5, padding='causal', name='c2')),
    'conv3d_same': ((4, 5, 5, 3), lambda: L.Conv3D(8, 1, name='c1'),
                    lambda: L.Conv3D(4, 3, padding='same', name='c2')),
    'conv2d_transpose': ((7, 7, 3), lambda: L.Conv2D(8, 3, name='c1'),
                         lambda: L.Conv2DTranspose(6, 3, strides=2, padding='same', name='c2')),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_one_carrier_keeps_the_result_exact(case):
    shape, producer, consumer = CASES[case]
    model = block(shape, producer(), consumer())
    masks = dead_filters(model, 'c1', [0, 2, 3, 5, 6])
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 4  # 3 kept by the masks + the carrier
    assert summary['pruned_but_kept'] == CARRIED


def test_l1_masks_through_relu_keep_one_carrier():
    model = block((10, 10, 3), L.Conv2D(8, 3, name='c1'),
                  L.Conv2D(6, 3, padding='same', name='c2'), activation='relu')
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['c1']}])
    pruner.compress()
    gone = np.flatnonzero(~model.get_layer('c1').get_weights()[0].reshape(-1, 8).any(axis=0))
    gamma, beta, mean, var = model.get_layer('bn').get_weights()
    shift = np.maximum(beta - gamma * mean / np.sqrt(var + 1e-3), 0.0)[gone]
    assert (shift != 0).sum() >= 2  # the statistics let several constants through the ReLU
    small, summary = speedup(model, pruner, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 8 - len(gone) + 1
    assert summary['pruned_but_kept'] == CARRIED


def test_grouped_consumer_keeps_its_constant_inputs():
    model = block((9, 9, 3), L.Conv2D(8, 3, name='c1'),
                  L.Conv2D(4, 3, padding='same', groups=2, name='c2'))
    masks = dead_filters(model, 'c1', [0, 1, 4, 5])
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 8
    assert summary['pruned_but_kept'] == {"'c2' cannot fold a constant input exactly": 4}


def test_one_carrier_serves_two_padded_consumers():
    keras.utils.set_random_seed(0)
    x = keras.Input((10, 10, 3))
    y = L.Activation('sigmoid')(L.BatchNormalization()(L.Conv2D(8, 3, name='c1')(x)))
    a = L.Conv2D(4, 3, padding='same', name='a')(y)
    b = L.Conv2D(4, 5, padding='same', name='b')(y)
    model = keras.Model(x, L.Add()([a, b]))
    perturb_batchnorm(model, 2)
    masks = dead_filters(model, 'c1', [1, 2, 3, 4, 7])
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 4
    assert sum(summary['pruned_but_kept'].values()) == 1


def test_constant_channel_kept_for_another_reason_is_the_carrier():
    keras.utils.set_random_seed(0)
    x = keras.Input((10, 10, 3))
    y = L.Conv2D(8, 3, name='c1')(x)
    z = L.Activation('sigmoid')(L.BatchNormalization(name='bn')(y))
    head = L.GlobalAveragePooling2D()(L.Conv2D(6, 3, padding='same', name='c2')(z))
    side = L.GlobalAveragePooling2D()(y)  # reads every channel c1's masks keep
    model = keras.Model(x, L.Dense(3)(L.Concatenate()([head, side])))
    perturb_batchnorm(model, 3)
    masks = dead_filters(model, 'c1', [0, 1, 2])
    bn = model.get_layer('bn')
    gamma, beta, mean, var = bn.get_weights()
    gamma[5] = 0.0  # a constant at c2's input, kept: the side branch reads c1's channel 5
    bn.set_weights([gamma, beta, mean, var])
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 5  # channel 5 carries 0, 1, 2: nothing extra kept
    assert not any(reason.startswith('carries') for reason in summary['pruned_but_kept'])

