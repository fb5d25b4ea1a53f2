"""Prune a small Keras CNN on the digits data, fine-tune it masked, then shrink it.

Trains a residual CNN on scikit-learn's 8x8 digits, prunes half the filters with
dependency-aware L1 (the convs meeting at the residual Add lose the same channels),
fine-tunes with the pruner's callbacks (masked weights stay zero), removes the pruned
channels with ``speedup`` and saves the smaller model as ``.keras``. Runs in well under a
minute on a CPU.
"""
import os
import tempfile

import keras
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from prunus.compression.tf import L1FilterPruner
from prunus.speedup.tf import speedup

L = keras.layers


def _bn() -> L.Layer:
    # A short run: faster-moving statistics than the default momentum of 0.99.
    return L.BatchNormalization(momentum=0.9)


def build_model() -> keras.Model:
    x = keras.Input((8, 8, 1))
    y = L.ReLU()(_bn()(L.Conv2D(32, 3, padding='same', name='stem')(x)))
    branch = L.ReLU()(_bn()(L.Conv2D(32, 1, name='block_a')(y)))
    branch = _bn()(L.Conv2D(32, 1, name='block_b')(branch))
    y = L.ReLU()(L.Add()([y, branch]))
    y = L.MaxPooling2D(2)(y)
    y = L.ReLU()(_bn()(L.Conv2D(64, 1, name='head')(y)))
    y = L.GlobalAveragePooling2D()(y)
    return keras.Model(x, L.Dense(10, name='classifier')(y))


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25,
                                                        random_state=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    model = build_model()
    model.compile(keras.optimizers.Adam(0.01), loss, metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)
    dense_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}],
                            dependency_aware=True)
    model = pruner.compress()
    model.compile(keras.optimizers.Adam(0.005), loss, metrics=['accuracy'])
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0,
              callbacks=pruner.callbacks())
    pruned_acc = model.evaluate(x_test, y_test, verbose=0)[1]

    small, summary = speedup(model, pruner, return_summary=True)
    gap = np.abs(small.predict(x_test, verbose=0) - model.predict(x_test, verbose=0)).max()
    path = os.path.join(tempfile.mkdtemp(), 'digits_small.keras')
    small.save(path)
    reloaded = keras.models.load_model(path)
    small_acc = np.mean(np.argmax(reloaded.predict(x_test, verbose=0), axis=1) == y_test)

    print(f'dense accuracy {dense_acc:.3f}, pruned + fine-tuned {pruned_acc:.3f}, '
          f'sped up and reloaded {small_acc:.3f}')
    print(f"parameters {summary['params_before']} -> {summary['params_after']}; "
          f'largest output difference {gap:.2e}; saved to {path}')
    for row in summary['layers']:
        print(f"  {row['layer']:>10}: {row['channels_before']} -> {row['channels_after']} channels")


if __name__ == '__main__':
    main()
