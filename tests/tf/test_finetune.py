"""A sped-up Keras model fine-tunes as well as the masked model it equals: the constants
that removed channels leave behind take a small constant path that learns as the masked
model's weights on the removed inputs would, never a channel with inflated weights
(issue 11, "Exact and trainable")."""
import pytest

pytest.importorskip('tensorflow')
pytest.importorskip('sklearn')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.layers.tf.constants import OFFSET, PATH, SCALE  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402
# the measurement script's models and loop: what it reports is what is tested here
from tests.tf.finetune_digits import (accuracy, copy_of, masked_copy, residual,  # noqa: E402
                                      train)
from tests.tf.finetune_digits import digits as digit_splits  # noqa: E402

FINE_TUNE_SEEDS = (1, 2, 3)
SPARSITY = 0.5


@pytest.fixture(scope='module')
def digits():
    return digit_splits()


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
