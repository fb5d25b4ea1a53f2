"""Zero-scale BatchNorm channels (Network Slimming): the BatchNorm outputs its shift there
whatever the input, so the speedup removes the channel on both sides of it, exactly."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression.tf import SlimPruner  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402

from .zoo import perturb_batchnorm, rel_error, sample  # noqa: E402

L = keras.layers


def cnn() -> keras.Model:
    """Two padded conv -> BN -> ReLU blocks, then pooling and a Dense head."""
    keras.utils.set_random_seed(0)
    x = keras.Input((10, 10, 3))
    y = L.ReLU()(L.BatchNormalization(name='bn1')(L.Conv2D(8, 3, padding='same', name='c1')(x)))
    y = L.ReLU()(L.BatchNormalization(name='bn2')(L.Conv2D(8, 3, padding='same', name='c2')(y)))
    model = keras.Model(x, L.Dense(3, name='fc')(L.GlobalAveragePooling2D()(y)))
    perturb_batchnorm(model, 2)
    return model


def zero_scale(model: keras.Model, name: str, drop: list[int], shift: float | None = 0.0) -> dict:
    """Zeroes the scale of BatchNorm ``name`` at ``drop`` in place and sets the shift there
    (``None`` leaves it); returns masks on the scale (and the shift when it is zeroed)."""
    bn = model.get_layer(name)
    gamma, beta, mean, var = bn.get_weights()
    mask = np.ones_like(gamma)
    mask[drop] = 0.0
    if shift is not None:
        beta[drop] = shift
    bn.set_weights([gamma * mask, beta, mean, var])
    return {name: {'weight': mask, 'bias': mask if shift == 0.0 else np.ones_like(mask)}}


def test_slim_pruner_shrinks_the_producing_convs():
    model = cnn()
    pruner = SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNormalization']}])
    pruner.compress()
    masks = pruner.get_masks()
    small, summary = speedup(model, pruner, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    for conv, bn in (('c1', 'bn1'), ('c2', 'bn2')):
        kept = int(masks[bn]['weight'].sum())
        assert kept < 8 and small.get_layer(conv).filters == kept
        assert small.get_layer(bn).get_weights()[0].shape == (kept,)
    assert summary['pruned_but_kept'] == {}
    assert small.count_params() < model.count_params()


def test_scale_only_constants_take_a_frozen_path_or_fold():
    model = cnn()
    # bn1's shifts pass the ReLU into the padded c2, which adds them through a frozen
    # constant path; bn2's reach the pooling and the Dense, which folds them into its bias
    masks = {**zero_scale(model, 'bn1', [1, 2, 5], shift=0.7),
             **zero_scale(model, 'bn2', [0, 3], shift=0.4)}
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 5 and small.get_layer('c2').filters == 6
    assert type(small.get_layer('c2')).__name__ == 'Conv2DWithConstants'
    assert summary['pruned_but_kept'] == {}


def residual() -> keras.Model:
    """stem -> [a1 -> bn_a1 -> ReLU -> a2 -> bn_a2] + stem -> c."""
    keras.utils.set_random_seed(0)
    x = keras.Input((10, 10, 3))
    stem = L.Conv2D(8, 3, padding='same', name='stem')(x)
    stem = L.ReLU()(L.BatchNormalization(name='bn_s')(stem))
    y = L.Conv2D(8, 3, padding='same', name='a1')(stem)
    y = L.ReLU()(L.BatchNormalization(name='bn_a1')(y))
    y = L.BatchNormalization(name='bn_a2')(L.Conv2D(8, 3, padding='same', name='a2')(y))
    y = L.Conv2D(4, 1, name='c')(L.ReLU()(L.Add()([stem, y])))
    model = keras.Model(x, L.GlobalAveragePooling2D()(y))
    perturb_batchnorm(model, 4)
    return model


def test_channel_read_elsewhere_is_kept():
    model = residual()
    # bn_a2 zeroes channels the stem still feeds into the addition: nothing can go
    small, summary = speedup(model, zero_scale(model, 'bn_a2', [0, 1, 2]), return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('a2').filters == 8 and small.get_layer('stem').filters == 8
    assert sum(summary['pruned_but_kept'].values()) == 3
    # inside the branch only bn_a1 reads a1's channels: they go on both sides of it
    model = residual()
    small = speedup(model, zero_scale(model, 'bn_a1', [0, 1, 2]))
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('a1').filters == 5 and small.get_layer('a2').kernel.shape[-2] == 5
    assert small.get_layer('stem').filters == 8


def test_conv_output_also_read_before_the_norm_is_kept():
    keras.utils.set_random_seed(0)
    x = keras.Input((10, 10, 3))
    y = L.Conv2D(8, 3, padding='same', name='c1')(x)
    z = L.ReLU()(L.BatchNormalization(name='bn')(y))
    z = L.Conv2D(8, 3, padding='same', name='c2')(z)
    model = keras.Model(x, L.GlobalAveragePooling2D()(L.Add()([y, z])))
    perturb_batchnorm(model, 5)
    small, summary = speedup(model, zero_scale(model, 'bn', [0, 4]), return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 8
    assert sum(summary['pruned_but_kept'].values()) == 2
