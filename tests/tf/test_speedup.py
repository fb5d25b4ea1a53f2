"""Speedup: exact outputs, fewer parameters, .keras round trip, clear failures."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression.tf import L1FilterPruner, SlimPruner  # noqa: E402
from prunus.speedup.tf import SpeedupError, speedup  # noqa: E402

from .zoo import ZOO, build, dead_filters, perturb_batchnorm, sample  # noqa: E402

PRUNABLE = ['Conv1D', 'Conv2D', 'Conv3D', 'Conv2DTranspose', 'SeparableConv2D', 'DepthwiseConv2D']


def _exact(model, small, x):
    ref = np.asarray(model(x, training=False))
    out = np.asarray(small(x, training=False))
    assert out.shape == ref.shape
    return np.abs(out - ref).max() / (np.abs(ref).max() + 1e-12)


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_speedup_is_exact_and_smaller(name, tmp_path):
    model = build(name)
    types = sorted({type(l).__name__ for l in model._flatten_layers()} & set(PRUNABLE))
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': types}])
    pruner.compress()
    x = sample(model)
    before = [w.copy() for w in model.get_weights()]
    small = speedup(model, pruner.get_masks())
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert _exact(model, small, x) < 1e-4
    assert small.count_params() < model.count_params()
    path = str(tmp_path / 'small.keras')
    small.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x, training=False), small(x, training=False), atol=1e-6)


def test_constant_of_pruned_channel_is_folded_into_next_layers_path():
    keras.utils.set_random_seed(1)
    x = keras.Input((6,))
    y = keras.layers.Dense(8, name='d1')(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU()(y)
    model = keras.Model(x, keras.layers.Dense(3, use_bias=False, name='d2')(y))
    perturb_batchnorm(model, 1)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Dense'], 'op_names': ['d1']}])
    pruner.compress()
    small = speedup(model, pruner.get_masks())
    assert small.get_layer('d1').units == 4
    d2 = small.get_layer('d2')  # a per-unit path that learns, not a bias: it had none
    assert type(d2).__name__ == 'DenseWithConstants' and not d2.use_bias
    assert np.abs(d2.carried_constants.numpy()).max() > 0 and d2.carried_constants.trainable
    assert _exact(model, small, sample(model)) < 1e-5


def test_shared_conv_keeps_constants_that_differ_between_calls():
    keras.utils.set_random_seed(0)
    x = keras.Input((9, 9, 3))
    y = keras.layers.Conv2D(8, 3, name='c1')(x)
    shared = keras.layers.Conv2D(5, 3, name='shared')  # valid padding: one call alone would fold
    a = shared(keras.layers.Activation('sigmoid')(keras.layers.BatchNormalization()(y)))
    b = shared(y)  # here c1's pruned channels are zero, in the first call they are not
    model = keras.Model(x, keras.layers.Add()([a, b]))
    perturb_batchnorm(model, 1)
    masks = dead_filters(model, 'c1', [0, 1, 2, 3])
    small = speedup(model, masks)
    assert _exact(model, small, sample(model)) < 1e-4
    assert small.get_layer('c1').filters == 8


def test_conflicting_masks_on_tied_channels_keep_used_channels():
    model = build('residual_add')
    masks = {'stem': {'weight': np.ones((3, 3, 3, 8), np.float32), 'bias': np.ones(8, np.float32)},
             'branch': {'weight': np.zeros((1, 1, 8, 8), np.float32), 'bias': np.zeros(8, np.float32)}}
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['stem', 'branch']}]).load_masks(masks)
    small, summary = speedup(model, masks, return_summary=True)
    assert small.get_layer('branch').filters == 8  # stem still uses every channel of the Add
    assert sum(summary['pruned_but_kept'].values()) == 8
    assert _exact(model, small, sample(model)) < 1e-5


def test_slim_masks_remove_conv_channels():
    model = build('seq_conv')
    pruner = SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNormalization']}])
    pruner.compress()
    small = speedup(model, pruner)
    assert small.get_layer('conv1').filters == 4
    assert _exact(model, small, sample(model)) < 1e-4


class _Custom(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(4, 3, name='conv')

    def call(self, x):
        return self.conv(x)


def test_subclassed_model_is_pruned_but_speedup_says_why_it_cannot():
    model = _Custom()
    model(np.zeros((1, 8, 8, 3), np.float32))
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    assert (model.conv.kernel.numpy().reshape(-1, 4) == 0).all(axis=0).sum() == 2
    with pytest.raises(SpeedupError, match='subclassed model'):
        speedup(model, pruner.get_masks())


def test_failure_names_the_layer_and_leaves_model_unchanged():
    model = build('seq_conv')
    bad = {'conv1': {'weight': np.ones((2, 2), np.float32)}}
    with pytest.raises(ValueError, match=r"masks\['conv1'\]\['weight'\] has shape"):
        speedup(model, bad)

    class Broken(keras.layers.Layer):
        def call(self, x):
            return x

        def get_config(self):
            raise RuntimeError('no config')

    x = keras.Input((4,))
    m = keras.Model(x, keras.layers.Dense(2)(Broken(name='broken')(keras.layers.Dense(4, name='d')(x))))
    with pytest.raises(Exception, match='broken|config'):
        speedup(m, {'d': {'weight': np.zeros((4, 4), np.float32)}})


APPS = {'MobileNetV2': 64, 'ResNet50': 64, 'EfficientNetB0': 64, 'DenseNet121': 64}


@pytest.mark.slow
@pytest.mark.parametrize('app', sorted(APPS))
def test_keras_applications_l1_half(app, tmp_path):
    keras.utils.set_random_seed(0)
    size = APPS[app]
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), classes=10)
    perturb_batchnorm(model)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    small = speedup(model, pruner.get_masks())
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    assert _exact(model, small, x) < 1e-4
    assert small.count_params() < model.count_params()
    path = str(tmp_path / 'small.keras')
    small.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x, training=False), small(x, training=False), atol=1e-5)


class _MyConv(keras.layers.Conv2D):
    """A user's Conv2D subclass: selected and pruned as a Conv2D."""


def test_subclassed_conv_is_pruned_as_its_base_and_sped_up():
    inp = keras.Input((8, 8, 3))
    x = _MyConv(8, 3, padding='same', activation='relu', name='mine')(inp)
    x = keras.layers.Conv2D(6, 3, padding='same')(x)
    out = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    for op_types in (['Conv2D'], ['default'], ['_MyConv']):
        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': op_types}])
        assert 'mine' in {s.layer.name for s in pruner.selections}
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    small = speedup(model, pruner.get_masks())
    _exact(model, small, np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32))
    assert small.count_params() < model.count_params()


class _Scale(keras.layers.Layer):
    """Like ConvNeXt's LayerScale: an unnamed weight, so every instance names it anew."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer='ones')

    def call(self, x):
        return x * self.gamma


def test_custom_layer_with_unnamed_weights_is_rebuilt_with_its_values():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding='same', activation='relu')(inp)
    x = _Scale()(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, keras.layers.Dense(3)(x))
    scale = model.layers[3]
    scale.set_weights([np.linspace(0.5, 2.0, 8).astype(np.float32)])
    small = speedup(model, {})
    _exact(model, small, np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32))
