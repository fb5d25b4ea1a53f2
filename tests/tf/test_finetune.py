"""A sped-up Keras model fine-tunes as well as the masked model it equals: the constants
that removed channels leave behind take a small constant path that learns as the masked
model's weights on the removed inputs would, never a channel with inflated weights
(issue 11, "Exact and trainable")."""
import pytest

pytest.importorskip('tensorflow')
pytest.importorskip('sklearn')

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from prunus.compression.tf import L1FilterPruner  # noqa: E402
from prunus.layers.tf.constants import OFFSET, PATH, SCALE  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402

L = keras.layers
FINE_TUNE_SEEDS = (1, 2, 3)
SPARSITY = 0.5


def residual() -> keras.Model:
    """stem -> [conv -> BN -> ReLU -> conv -> BN] + stem -> strided conv -> head; every
    conv zero-padded, so a pruned channel's BatchNorm shift meets the padding."""
    def unit(y, filters, name, strides=1, relu=True):
        y = L.Conv2D(filters, 3, strides=strides, padding='same', name=name)(y)
        y = L.BatchNormalization(momentum=0.9, name=f'{name}_bn')(y)
        return L.ReLU()(y) if relu else y
    x = keras.Input((8, 8, 1))
    stem = unit(x, 16, 'stem')
    y = L.ReLU()(L.Add()([stem, unit(unit(stem, 16, 'a1'), 16, 'a2', relu=False)]))
    y = L.GlobalAveragePooling2D()(unit(y, 32, 'head', strides=2))
    return keras.Model(x, L.Dense(10, name='fc')(y))


@pytest.fixture(scope='module')
def digits():
    data = load_digits()
    x = (data.images[..., None] / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def train(model: keras.Model, data, epochs: int, seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.AdamW(3e-3, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*data, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    return model


def accuracy(model: keras.Model, data) -> float:
    return float((np.asarray(model.predict(data[0], verbose=0)).argmax(1) == data[1]).mean()) * 100


def copy_of(model: keras.Model) -> keras.Model:
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def masked_copy(dense: keras.Model, sparsity: float):
    """A copy of ``dense`` with dependency-aware L1 masks attached (they hold in fit)."""
    model = copy_of(dense)
    pruner = L1FilterPruner(model, [{'sparsity': sparsity, 'op_types': ['Conv2D']}],
                            dependency_aware=True)
    pruner.compress()
    return model, pruner


def largest(model: keras.Model) -> dict[str, float]:
    """Largest |kernel| per layer (a bias legitimately takes the folded constants)."""
    return {layer.name: max(float(np.abs(v.numpy()).max()) for v in kernels)
            for layer in model.layers
            if (kernels := [v for v in layer.trainable_weights if len(v.shape) > 1])}


def test_sped_up_model_fine_tunes_like_the_masked_model(digits):
    train_set, test_set = digits
    keras.utils.set_random_seed(0)
    dense = train(residual(), train_set, 5, seed=0)
    masked, pruner = masked_copy(dense, SPARSITY)
    small = speedup(masked, pruner)
    trainable = sum(int(np.prod(v.shape)) for v in small.trainable_weights)
    assert trainable < 0.4 * masked.count_params()
    np.testing.assert_allclose(small.predict(test_set[0], verbose=0),
                               masked.predict(test_set[0], verbose=0), atol=1e-4)
    before = largest(masked)
    for name, value in largest(small).items():  # no weight grows
        assert value <= before[name] + 1e-6, name
    paths = {layer.name: v.numpy().copy() for layer in small.layers
             for v in layer.weights if v.name == PATH}
    scales = {layer.name: v.numpy().copy() for layer in small.layers
              for v in layer.weights if v.name == SCALE}
    assert any(len(v.shape) > 1 for v in paths.values()), \
        'the example is meant to leave constants for padded convs'
    offsets = {layer.name: float(np.abs(v.numpy()).max()) for layer in small.layers
               for v in layer.weights if v.name == OFFSET}
    learning = [v for v in small.trainable_weights if v.name == PATH]
    assert len(learning) == len(paths) and 'fc' in paths  # the classifier's too
    assert all(v.name not in (SCALE, OFFSET) for v in small.trainable_weights)
    # in train mode too it computes what the masked model computes (batch statistics)
    batch = train_set[0][:64]
    np.testing.assert_allclose(copy_of(small)(batch, training=True),
                               copy_of(masked)(batch, training=True), atol=1e-4)
    removal = accuracy(small, test_set)

    # one fine-tune of a 75%-pruned net swings with the data order: compare the means of
    # a few fine-tunes, each from the same start
    tuned = {'masked': [], 'small': []}
    for seed in FINE_TUNE_SEEDS:
        start, _ = masked_copy(dense, SPARSITY)
        tuned['masked'].append(accuracy(train(start, train_set, 3, seed), test_set))
        model = train(copy_of(small), train_set, 3, seed)
        tuned['small'].append(accuracy(model, test_set))
        for layer in model.layers:  # the path learns; its scale stays; the offset fades
            for v in layer.weights:
                if v.name == PATH and scales[layer.name].any():  # zero train constants: none
                    assert np.abs(v.numpy() - paths[layer.name]).max() > 0, layer.name
                if v.name == SCALE:
                    np.testing.assert_array_equal(v.numpy(), scales[layer.name])
                if v.name == OFFSET:  # the stale eval statistics are forgotten
                    assert float(np.abs(v.numpy()).max()) <= 0.01 * offsets[layer.name] + 1e-9
    acc_small, acc_masked = (float(np.mean(tuned[k])) for k in ('small', 'masked'))
    assert acc_small >= acc_masked - 1.0, tuned
    assert acc_small > removal + 10.0, (removal, tuned)
