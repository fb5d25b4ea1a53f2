"""Non-zero constants into convolutions and Dense layers: the rebuilt layer adds them
through a constant path, exactly, that learns as the masked model's weights on the
removed inputs do; no channel is kept for them."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression.tf import L1FilterPruner  # noqa: E402
from prunus.layers.tf.constants import OFFSET, PATH, SCALE  # noqa: E402
from prunus.speedup.tf import speedup  # noqa: E402

from .zoo import dead_filters, perturb_batchnorm, rel_error, sample  # noqa: E402

L = keras.layers


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
    'conv2d_grouped': ((9, 9, 3), lambda: L.Conv2D(8, 3, name='c1'),
                       lambda: L.Conv2D(4, 3, padding='same', groups=2, name='c2')),
    'conv1d_causal': ((20, 3), lambda: L.Conv1D(8, 3, name='c1'),
                      lambda: L.Conv1D(6, 5, padding='causal', dilation_rate=2, name='c2')),
    'conv3d_same': ((4, 5, 5, 3), lambda: L.Conv3D(8, 1, name='c1'),
                    lambda: L.Conv3D(4, 3, padding='same', name='c2')),
    'conv2d_transpose': ((7, 7, 3), lambda: L.Conv2D(8, 3, name='c1'),
                         lambda: L.Conv2DTranspose(6, 3, strides=2, padding='same', name='c2')),
    'conv1d_transpose': ((9, 3), lambda: L.Conv1D(8, 3, name='c1'),
                         lambda: L.Conv1DTranspose(6, 4, strides=3, padding='valid', name='c2')),
    'separable2d_same': ((9, 9, 3), lambda: L.Conv2D(8, 3, name='c1'),
                         lambda: L.SeparableConv2D(6, 3, depth_multiplier=2, padding='same',
                                                   activation='relu', name='c2')),
}


def _largest(model: keras.Model, name: str) -> float:
    return max(float(np.abs(v.numpy()).max()) for v in model.get_layer(name).trainable_weights
               if v.name != PATH)


def _removed_largest(layer, drop: list[int]) -> float:
    """Largest |W_j| of ``layer`` on the removed inputs ``drop`` (the masked model's)."""
    kernel = layer.get_weights()[0]
    axis = -1 if 'Transpose' in type(layer).__name__ else -2  # (*k, out, in) / (*k, in, out)
    rows = sorted({j % kernel.shape[axis] for j in drop})  # a grouped conv's rows are per group
    return float(np.abs(np.take(kernel, rows, axis=axis)).max())


def _variable(layer, name: str):
    return next(v for v in layer.weights if v.name == name)


@pytest.mark.parametrize('case', sorted(CASES))
def test_constant_path_keeps_the_result_exact_and_learns(case, tmp_path):
    shape, producer, consumer = CASES[case]
    model = block(shape, producer(), consumer())
    drop = [0, 2, 3, 5, 6] if 'grouped' not in case else [0, 1, 4, 5]
    masks = dead_filters(model, 'c1', drop)
    small, summary = speedup(model, masks, return_summary=True)
    assert rel_error(model, small, sample(model)) < 1e-4
    kept = 3 if 'grouped' not in case else 4
    assert small.get_layer('c1').filters == kept and summary['pruned_but_kept'] == {}
    c2 = small.get_layer('c2')
    assert type(c2).__name__ == type(model.get_layer('c2')).__name__ + 'WithConstants'
    path = [v for v in c2.weights if v.name == PATH]
    assert len(path) == 1 and np.abs(path[0].numpy()).max() > 0
    names = {v.name for v in c2.trainable_weights}
    assert PATH in names and not names & {SCALE, OFFSET}
    assert _largest(small, 'c2') <= _largest(model, 'c2')  # the kept slices are unchanged
    if 'separable' not in case:  # there K is bilinear in two kernels: no such bound
        assert np.abs(path[0].numpy()).max() <= _removed_largest(model.get_layer('c2'), drop) + 1e-6
    small.save(tmp_path / 'small.keras')
    loaded = keras.models.load_model(tmp_path / 'small.keras')
    x = sample(model)
    for training in (False, True):
        np.testing.assert_allclose(loaded(x, training=training), small(x, training=training),
                                   atol=1e-6)
    assert {v.name for v in loaded.get_layer('c2').trainable_weights} == names


def _any_size(model: keras.Model) -> keras.Model:
    """The same layers and weights on an input of any spatial size."""
    free = keras.models.clone_model(model, input_tensors=keras.Input((None, None, 3)))
    free.set_weights(model.get_weights())
    return free


def test_constant_path_is_exact_for_every_input_size(tmp_path):
    model = block((9, 9, 3), L.Conv2D(8, 3, name='c1'),
                  L.Conv2D(6, 3, strides=2, padding='same', name='c2'))
    drop = [1, 2, 6]
    small = speedup(model, dead_filters(model, 'c1', drop))
    kernel, bias = model.get_layer('c1').get_weights()
    kernel[..., drop], bias[drop] = 0.0, 0.0
    model.get_layer('c1').set_weights([kernel, bias])  # the masked model
    path = tmp_path / 'small.keras'
    _any_size(small).save(path)
    loaded = keras.models.load_model(path)
    for name in (PATH, SCALE, OFFSET):  # restored, the path still the one that learns
        before, after = _variable(small.get_layer('c2'), name), _variable(loaded.get_layer('c2'), name)
        np.testing.assert_array_equal(after.numpy(), before.numpy())
        assert after.trainable == (name == PATH)
    candidates = [_any_size(small), loaded]
    masked = _any_size(model)
    rng = np.random.default_rng(0)
    for size in [(5, 5), (8, 11), (16, 7)]:
        x = rng.normal(size=(2,) + size + (3,)).astype(np.float32)
        ref = np.asarray(masked(x))
        for candidate in candidates:
            out = np.asarray(candidate(x))
            assert np.abs(out - ref).max() < 1e-4 * (np.abs(ref).max() + 1e-6)


def test_l1_masks_through_relu_keep_no_channel():
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
    assert small.get_layer('c1').filters == 8 - len(gone)
    assert summary['pruned_but_kept'] == {}


def test_two_padded_consumers_each_get_their_own_path():
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
    assert small.get_layer('c1').filters == 3 and summary['pruned_but_kept'] == {}
    shapes = [[tuple(v.shape) for v in small.get_layer(n).weights if v.name == PATH]
              for n in 'ab']
    assert shapes == [[(3, 3, 1, 4)], [(5, 5, 1, 4)]]


def test_a_sped_up_model_prunes_and_speeds_up_again(tmp_path):
    model = block((9, 9, 3), L.Conv2D(8, 3, name='c1'),
                  L.Conv2D(6, 3, padding='same', name='c2'))
    small = speedup(model, dead_filters(model, 'c1', [0, 3]))
    c2 = small.get_layer('c2')
    frozen = [v for v in c2.weights if v.name in (PATH, OFFSET)]
    assert len(frozen) == 2
    out = keras.Model(small.inputs[0], L.Dense(2, name='head')(L.Flatten()(small.outputs[0])))
    mask = np.ones_like(c2.get_weights()[0])
    mask[..., [1, 4]] = 0.0
    masks = {'c2': {'weight': mask, 'bias': np.array([1, 0, 1, 1, 0, 1], np.float32)}}
    # a masked filter whose constant path adds something still has an output: it stays
    assert speedup(out, masks).get_layer('c2').filters == 6
    before = [v.numpy().copy() for v in frozen]
    for variable, value in zip(frozen, before):
        value[..., [1, 4]] = 0.0
        variable.assign(value)  # now filters 1 and 4 output zero; their rows go with them
    again = speedup(out, masks)
    kept = [v.numpy() for v in again.get_layer('c2').weights if v.name in (PATH, OFFSET)]
    for value, old in zip(kept, before):
        np.testing.assert_allclose(value, old[..., [0, 2, 3, 5]])
    # and c1 loses more channels into the existing path
    third = speedup(again, dead_filters(again, 'c1', [0]))
    assert third.get_layer('c1').filters == 5
    x = sample(model)
    assert np.isfinite(np.asarray(third(x))).all()


def test_constant_channel_kept_for_another_reason_stays_a_channel():
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
    assert small.get_layer('c1').filters == 5  # 0, 1, 2 went into c2's constant path
    assert not any("'c2'" in reason for reason in summary['pruned_but_kept'])


def test_dense_keeps_an_eval_offset_that_fades_in_training(tmp_path):
    """Train mode: a pruned filter's BatchNorm gives its shift; eval mode: the stale
    statistics' value. The Dense's path takes the first, an eval-only offset the rest."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    y = L.Activation('sigmoid')(L.BatchNormalization(momentum=0.9, name='bn')(
        L.Conv2D(8, 3, name='c1')(x)))
    model = keras.Model(x, L.Dense(4, name='fc')(L.GlobalAveragePooling2D()(y)))
    perturb_batchnorm(model, 4)
    drop = [0, 3, 4]
    small = speedup(model, dead_filters(model, 'c1', drop))
    fc = small.get_layer('fc')
    assert type(fc).__name__ == 'DenseWithConstants' and fc.offset_decay == pytest.approx(0.1)
    offset = next(v for v in fc.weights if v.name == OFFSET)
    assert np.abs(offset.numpy()).max() > 0
    assert {v.name for v in fc.trainable_weights} == {'kernel', 'bias', PATH}
    assert np.abs(_variable(fc, PATH).numpy()).max() > 0
    kernel, bias = model.get_layer('c1').get_weights()
    kernel[..., drop], bias[drop] = 0.0, 0.0
    model.get_layer('c1').set_weights([kernel, bias])  # the masked model
    batch = sample(model, 8)
    path = tmp_path / 'small.keras'
    small.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(batch), model(batch), atol=1e-5)
    start = offset.numpy().copy()
    train_out = np.asarray(small(batch, training=True))  # one train-mode call: the offset fades
    np.testing.assert_allclose(train_out, model(batch, training=True), atol=1e-5)
    np.testing.assert_allclose(offset.numpy(), 0.9 * start, rtol=1e-6)


STEP_CASES = {  # consumer of c1's constants: padded, bias-like, grouped, transposed, Dense
    'conv2d_same': lambda: L.Conv2D(6, 3, padding='same', name='c2'),
    'conv2d_valid': lambda: L.Conv2D(6, 3, name='c2'),
    'conv2d_grouped_strided': lambda: L.Conv2D(4, 3, strides=2, padding='same', groups=2, name='c2'),
    'conv2d_transpose': lambda: L.Conv2DTranspose(4, 3, strides=2, padding='same', name='c2'),
    'dense': lambda: keras.Sequential([L.Flatten(), L.Dense(5, name='c2')], name='head'),
}


def _learnable_only_where_both_learn(model: keras.Model) -> None:
    """Freezes the producer and its BatchNorm: in the masked model a pruned channel's
    BatchNorm shift (and, without mask constraints, the zeroed filter) would learn too,
    which the sped-up model has no weight for. What is compared is the consumer."""
    for name in ('c1', 'bn'):
        for v in model.get_layer(name).weights:
            v.trainable = False


def _fit(model: keras.Model, optimizer, x, y) -> keras.Model:
    _learnable_only_where_both_learn(model)
    model.compile(optimizer, 'mse')
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)  # 3 steps
    return model


def _consumer(model: keras.Model):
    return model.get_layer('head').get_layer('c2') if 'head' in [l.name for l in model.layers] \
        else model.get_layer('c2')


@pytest.mark.parametrize('optimizer', ['adam', 'adamw', 'sgd'])
@pytest.mark.parametrize('case', sorted(STEP_CASES))
def test_optimizer_steps_move_the_path_as_they_move_the_masked_weights(case, optimizer):
    """K = sum_j c_j W_j in the masked model; K = s * path in the sped-up one: after the
    same Adam(W) or SGD steps both models compute the same in train mode."""
    # Adam's epsilon is the one difference: the masked model adds it to each |c_j g|, the
    # path to s |g|; a tiny one (these gradients are small) makes the claim exact
    make = {'adam': lambda: keras.optimizers.Adam(0.05, epsilon=1e-12),
            'adamw': lambda: keras.optimizers.AdamW(0.05, weight_decay=0.1, epsilon=1e-12),
            # plain SGD steps by the gradient itself: the path's is scaled to match
            'sgd': lambda: keras.optimizers.SGD(0.05, momentum=0.9)}[optimizer]
    model = block((8, 8, 3), L.Conv2D(8, 3, padding='same', name='c1'), STEP_CASES[case](),
                  activation='tanh')  # shifts of both signs: constants of both signs
    drop = [0, 2, 3, 5] if 'grouped' in case else [0, 2, 3, 5, 6]
    dead_filters(model, 'c1', drop)
    small = speedup(model, dead_filters(model, 'c1', drop))
    path = _variable(_consumer(small), PATH)
    assert path.trainable and np.abs(path.numpy()).max() > 0
    assert np.abs(path.numpy()).max() <= _removed_largest(_consumer(model), drop) + 1e-6
    rng = np.random.default_rng(1)
    x = rng.normal(size=(12, 8, 8, 3)).astype(np.float32)
    y = rng.normal(size=(12,) + tuple(model.output.shape[1:])).astype(np.float32)
    before = np.asarray(small(x, training=True))
    _fit(model, make(), x, y)
    _fit(small, make(), x, y)
    masked_out, small_out = np.asarray(model(x, training=True)), np.asarray(small(x, training=True))
    assert np.abs(small_out - before).max() > 1e-2  # the steps did move it
    np.testing.assert_allclose(small_out, masked_out, atol=2e-5 * np.abs(masked_out).max())
    # still a signed average of the masked weights it stands for
    assert np.abs(path.numpy()).max() <= _removed_largest(_consumer(model), drop) + 1e-5
