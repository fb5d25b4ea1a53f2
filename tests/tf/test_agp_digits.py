"""AGP on scikit-learn's digits: 80% sparsity with fine-tuning ends within 1 point of dense."""
import pytest

pytest.importorskip('tensorflow')
pytest.importorskip('sklearn')

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from prunus.compression.schedules import agp_sparsity  # noqa: E402
from prunus.compression.tf import AGPPruner  # noqa: E402


def _data():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    return train_test_split(x, digits.target, test_size=0.3, random_state=0, stratify=digits.target)


def _cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, padding='same', activation='relu', name='conv1'),
        keras.layers.Conv2D(32, 3, padding='same', activation='relu', name='conv2'),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(64, activation='relu', name='fc1'), keras.layers.Dense(10, name='fc2')])
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'])
    return model


def test_agp_schedule_is_cubic_and_held_between_updates():
    assert agp_sparsity(0, 0, 4, 0.0, 0.8) == 0.0
    assert agp_sparsity(2, 0, 4, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert agp_sparsity(4, 0, 4, 0.0, 0.8) == pytest.approx(0.8)
    model = _cnn()
    pruner = AGPPruner(model, [{'initial_sparsity': 0.0, 'final_sparsity': 0.8, 'start_epoch': 0,
                                'end_epoch': 4, 'frequency': 2, 'op_types': ['Conv2D']}])
    entry = pruner.entries[0]
    # NNI 1.x span ((4 - 0 - 1) // 2) * 2 = 2: the update at epoch 2 already reaches 0.8.
    assert pruner.target_sparsity(entry, 1) == pruner.target_sparsity(entry, 0) == 0.0
    assert pruner.target_sparsity(entry, 3) == pruner.target_sparsity(entry, 2) == 0.8
    pruner = AGPPruner(model, [{'initial_sparsity': 0.0, 'final_sparsity': 0.8, 'start_epoch': 0,
                                'end_epoch': 10, 'frequency': 1, 'op_types': ['Conv2D']}])
    assert pruner.target_sparsity(pruner.entries[0], 9) == 0.8
    assert pruner.target_sparsity(pruner.entries[0], 3) == pytest.approx(agp_sparsity(3, 0, 9, 0.0, 0.8))


def test_agp_digits_80_percent_within_one_point_of_dense():
    x_train, x_test, y_train, y_test = _data()
    dense = _cnn()
    dense.fit(x_train, y_train, epochs=12, batch_size=32, verbose=0)
    dense_acc = dense.evaluate(x_test, y_test, verbose=0)[1]

    model = _cnn()
    model.fit(x_train, y_train, epochs=4, batch_size=32, verbose=0)
    pruner = AGPPruner(model, [{'initial_sparsity': 0.0, 'final_sparsity': 0.8, 'start_epoch': 0,
                                'end_epoch': 5, 'frequency': 1, 'op_types': ['default']}],
                       pruning_algorithm='level')
    pruner.compress()
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0, callbacks=pruner.callbacks())
    pruned_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    weights = [model.get_layer(n).kernel.numpy() for n in ('conv1', 'conv2', 'fc1', 'fc2')]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == sum(round(0.8 * w.size) for w in weights)
    assert pruned_acc >= dense_acc - 0.01, (pruned_acc, dense_acc)
