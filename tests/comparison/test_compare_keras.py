"""prunus.compare on Keras 3: the same table from the Keras pruners and speedup."""
import numpy as np
import pytest

keras = pytest.importorskip('keras')

import prunus  # noqa: E402
from prunus.comparison.keras_backend import layer_flops  # noqa: E402


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images[..., None] / 16.0).astype(np.float32)
    return x[:1200], d.target[:1200], x[1200:], d.target[1200:]


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    y = keras.layers.Conv2D(8, 3, padding='same', name='c1')(inputs)
    y = keras.layers.BatchNormalization(name='bn1')(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2D(16, 3, padding='same', name='c2')(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    outputs = keras.layers.Dense(10, name='fc')(y)
    return keras.Model(inputs, outputs)


def test_keras_comparison_rows():
    xtr, ytr, xte, yte = _digits()
    model = _model()
    model.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(xtr, ytr, epochs=1, batch_size=64, verbose=0)
    before = [w.copy() for w in model.get_weights()]

    def evaluator(m):
        return float(np.mean(np.argmax(m.predict(xte, verbose=0), 1) == yte))

    def finetune(m, pruner):
        m.compile('adam', keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(xtr, ytr, epochs=1, batch_size=64, verbose=0, callbacks=pruner.callbacks())

    data = [(xtr[i:i + 64], ytr[i:i + 64]) for i in range(0, 192, 64)]
    table = prunus.compare(model, ['l1', 'level', 'apoz'], data=data, evaluator=evaluator,
                           finetune=finetune, budgets=[0.5], latency_seconds=0.05, progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert list(table.pruner) == ['dense', 'l1', 'level', 'apoz']
    dense, l1 = table.iloc[0], table.iloc[1]
    assert dense.flops == 2 * 64 * (3 * 3 * 1 * 8 + 3 * 3 * 8 * 16) + 2 * 16 * 10
    assert set(l1.layer_sparsity) == {'c1', 'c2'}
    assert l1.flops_small < dense.flops and l1.params_small < dense.params_small
    assert table.iloc[2].params_small == dense.params_small
    assert table.accuracy_finetuned.between(0, 1).all()
    assert (table.latency_ms > 0).all()


def test_layer_flops_counts_conv_dense_and_depthwise():
    inputs = keras.Input((6, 6, 4))
    y = keras.layers.DepthwiseConv2D(3, name='dw')(inputs)
    y = keras.layers.Conv2D(5, 1, name='pw')(y)
    outputs = keras.layers.Dense(3, name='d')(keras.layers.Flatten()(y))
    flops = layer_flops(keras.Model(inputs, outputs))
    assert flops == {'dw': 2 * 16 * 36, 'pw': 2 * 16 * 20, 'd': 2 * 80 * 3}
