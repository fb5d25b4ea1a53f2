"""keras.layers.MultiHeadAttention through the speedup, with head pruning."""
import os

import numpy as np
import pytest

os.environ.setdefault('KERAS_BACKEND', 'tensorflow')
keras = pytest.importorskip('keras')

from prunus.compression.tf.heads import head_scores, prune_heads  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402


def _model(cross=False):
    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 16))
    x = keras.layers.Dense(16)(inp)
    other = keras.layers.Dense(16)(inp) if cross else x
    a = keras.layers.MultiHeadAttention(num_heads=4, key_dim=8, name='mha')(x, other)
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.Add()([a, x])))


def test_an_unpruned_attention_survives_the_speedup():
    model = _model()
    x = np.random.randn(2, 6, 16).astype('float32')
    small = speedup(model, {})
    assert small.count_params() == model.count_params()
    np.testing.assert_allclose(small(x), model(x), atol=1e-6)


@pytest.mark.parametrize('cross', [False, True])
def test_pruned_heads_are_removed_exactly(cross):
    model = _model(cross)
    layer = model.get_layer('mha')
    scores = head_scores(layer)
    prune_heads(layer, np.argsort(scores)[:2])
    x = np.random.randn(2, 6, 16).astype('float32')
    small, summary = speedup(model, {}, return_summary=True)
    assert small.get_layer('mha').get_config()['num_heads'] == 2
    assert summary['heads'] == {'mha': (4, 2)}
    assert model.count_params() - small.count_params() == 2 * (3 * (16 * 8 + 8) + 8 * 16)
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_prune_heads_refuses_to_empty_a_layer():
    layer = _model().get_layer('mha')
    with pytest.raises(ValueError, match='one head must stay'):
        prune_heads(layer, [0, 1, 2, 3])
