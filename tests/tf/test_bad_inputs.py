"""The Keras side of the bad-input matrix, and Keras speedups that must never come back
wrong: masks refused by the shared rules with the model unchanged, corrupt mask files
named, the result checked like PyTorch's, layers whose variables share names rebuilt
in their own order, and structured ``total_sparsity`` never emptying a layer."""
import pytest

pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression.tf import FPGMPruner, L1FilterPruner, load_masks  # noqa: E402
from prunus.speedup.tf import SpeedupError, speedup  # noqa: E402
from prunus.layers.tf import handlers as tf_handlers  # noqa: E402

L = keras.layers


def _net(seed=0):
    keras.utils.set_random_seed(seed)
    x = keras.Input((8, 8, 3))
    y = L.Conv2D(8, 3, padding='same', name='conv1')(x)
    y = L.Conv2D(8, 3, padding='same', name='conv2')(L.ReLU()(y))
    return keras.Model(x, L.Dense(4, name='fc')(L.GlobalAveragePooling2D()(y)))


def _weights(model):
    return [w.tobytes() for w in model.get_weights()]


def _one_line(exc):
    assert '\n' not in str(exc) and len(str(exc)) < 400, str(exc)
    return str(exc)


K = (3, 3, 3, 8)


def _bad_masks():
    ones = np.ones(K, np.float32)
    nan, half = ones.copy(), ones.copy()
    nan[0, 0, 0, 0] = np.nan
    half[..., 1] = 0.5
    return [
        ('not-a-dict', [ones], TypeError, 'must be a dict'),
        ('entry-not-a-dict', {'conv1': ones}, TypeError, "['conv1']"),
        ('unknown-layer', {'conv_1': {'weight': ones}}, ValueError, "did you mean 'conv1'"),
        ('unknown-param', {'conv1': {'kernel': ones}}, ValueError, "no parameter 'kernel'"),
        ('wrong-shape', {'conv1': {'weight': np.ones((8, 3, 3, 3))}}, ValueError, 'shape (8, 3, 3, 3)'),
        ('strings', {'conv1': {'weight': np.full(K, 'a')}}, TypeError, 'dtype'),
        ('nan', {'conv1': {'weight': nan}}, ValueError, 'NaN'),
        ('half', {'conv1': {'weight': half}}, ValueError, 'other than 0 and 1'),
        ('bias-shape', {'conv1': {'weight': ones, 'bias': np.ones(3)}}, ValueError, "['bias']"),
    ]


@pytest.mark.parametrize('case', _bad_masks(), ids=lambda c: c[0])
@pytest.mark.parametrize('entry', ['pruner.load_masks', 'speedup'])
def test_bad_keras_masks_are_refused_and_change_nothing(entry, case):
    _, masks, error, words = case
    model = _net()
    before = _weights(model)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    with pytest.raises(error) as info:
        pruner.load_masks(masks) if entry == 'pruner.load_masks' else speedup(model, masks)
    assert words in _one_line(info.value)
    assert _weights(model) == before


def test_corrupt_npz_names_the_file_and_format(tmp_path):
    model = _net()
    before = _weights(model)
    corrupt = tmp_path / 'masks.npz'
    corrupt.write_bytes(b'garbage, not a zip')
    single = tmp_path / 'one.npy'
    np.save(single, np.ones(3))
    unnamed = tmp_path / 'unnamed.npz'
    np.savez(unnamed, np.ones(3))
    for path, words in ((corrupt, 'not an npz archive'), (single, 'one array'), (unnamed, "'<layer name>::weight'")):
        for run in (lambda p: load_masks(str(p)), lambda p: speedup(model, str(p))):
            with pytest.raises(ValueError) as info:
                run(path)
            text = _one_line(info.value)
            assert str(path) in text and words in text and 'allow_pickle' not in text
    assert _weights(model) == before


def test_export_into_a_missing_directory_writes_nothing(tmp_path):
    model = _net()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    with pytest.raises(FileNotFoundError, match='does not exist'):
        pruner.export_model(str(tmp_path / 'm.keras'), str(tmp_path / 'missing' / 'masks.npz'))
    assert list(tmp_path.iterdir()) == []
    pruner.export_model(str(tmp_path / 'm.keras'), str(tmp_path / 'masks.npz'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.keras', 'masks.npz']


@keras.saving.register_keras_serializable('prunus_tests')
class TwoDense(L.Layer):
    """A custom layer holding two Dense: its variables are 'kernel', 'bias' twice."""

    def __init__(self, units=4, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.a, self.b = L.Dense(units), L.Dense(units)

    def build(self, shape):
        self.a.build(shape)
        self.b.build(shape)

    def call(self, x):
        return self.a(x) * 2.0 + self.b(x)

    def get_config(self):
        return {**super().get_config(), 'units': self.units}


def _sequence(layer):
    keras.utils.set_random_seed(0)
    x = keras.Input((5, 6))
    y = L.Dense(6, name='proj')(x)
    return keras.Model(x, L.Dense(3, name='head')(layer(y) if not isinstance(layer, L.MultiHeadAttention)
                                                 else layer(y, y)))


@pytest.mark.parametrize('make', [
    lambda: L.Bidirectional(L.LSTM(4)), lambda: L.Bidirectional(L.GRU(4, return_sequences=True)),
    lambda: TwoDense(4), lambda: L.MultiHeadAttention(2, 3), lambda: L.Lambda(lambda t: t * 2.0 + 1.0),
], ids=['bilstm', 'bigru', 'two_dense', 'mha', 'lambda'])
def test_layers_with_repeated_variable_names_come_back_exact(make):
    model = _sequence(make())
    before = _weights(model)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['proj']}])
    pruner.compress()
    for masks in ({}, pruner.get_masks()):
        small = speedup(model, masks)
        x = np.random.default_rng(1).standard_normal((3, 5, 6)).astype('float32')
        ref, out = np.asarray(model(x, training=False)), np.asarray(small(x, training=False))
        assert np.abs(ref - out).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    assert len(_weights(model)) == len(before)


def test_a_wrong_rebuild_is_caught_by_the_check(monkeypatch):
    model = _net()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
    pruner.compress()
    before = _weights(model)
    handler = tf_handlers.HANDLERS['Conv2D']
    original = type(handler).prune_out

    def corrupt(self, layer, config, weights, keep):
        original(self, layer, config, weights, keep)
        weights['kernel'] = weights['kernel'] * 1.5  # a handler bug: wrong weights

    monkeypatch.setattr(type(handler), 'prune_out', corrupt)
    with pytest.raises(SpeedupError, match='differs from the masked model'):
        speedup(model, pruner.get_masks())
    speedup(model, pruner.get_masks(), check=False)  # unchecked: returns, as asked
    assert _weights(model) == before


def test_bad_example_inputs_and_handlers_are_named():
    model = _net()
    for inputs, words in ((np.ones((2, 8, 8, 4), np.float32), 'shape (2, 8, 8, 4)'),
                          (np.full((2, 8, 8, 3), np.nan, np.float32), 'NaN'),
                          ([np.ones((2, 8, 8, 3))] * 2, '2 arrays')):
        with pytest.raises(SpeedupError) as info:
            speedup(model, {}, example_inputs=inputs)
        assert words in _one_line(info.value)
    with pytest.raises(TypeError, match='LayerHandler instance'):
        speedup(model, {}, custom_handlers={'Conv2D': 'x'})


def test_total_sparsity_never_masks_every_filter_of_a_layer():
    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 3))
    tiny = L.Conv2D(4, 3, padding='same', name='tiny')(x)
    big = L.Conv2D(64, 3, padding='same', name='big')(tiny)
    model = keras.Model(x, L.GlobalAveragePooling2D()(big))
    kernel, bias = model.get_layer('tiny').get_weights()
    model.get_layer('tiny').set_weights([kernel * 1e-6, bias])  # every tiny filter ranks lowest
    masks = L1FilterPruner(model, [{'total_sparsity': 0.5, 'op_types': ['Conv2D']}]).calc_masks()
    kept = masks['tiny']['bias'].sum()
    assert kept >= 1
    assert masks['tiny']['bias'].size + masks['big']['bias'].size - kept - masks['big']['bias'].sum() == 34
    speedup(model, masks)  # no layer with filters=0


def test_fpgm_scores_agree_with_torch_on_near_ties():
    torch = pytest.importorskip('torch')
    from prunus.compression.torch import FPGMPruner as TorchFPGM
    model = _net(3)
    kernel, bias = model.get_layer('conv1').get_weights()
    kernel[..., 4] = kernel[..., 2] + 1e-7  # two filters a rounding error apart
    model.get_layer('conv1').set_weights([kernel, bias])
    keras_masks = FPGMPruner(model, [{'sparsity': 0.5, 'op_names': ['conv1']}]).calc_masks()
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(np.transpose(kernel, (3, 2, 0, 1)).copy()))
    net = torch.nn.Sequential(conv)
    torch_masks = TorchFPGM(net, [{'sparsity': 0.5, 'op_types': ['Conv2d']}]).calc_masks()
    np.testing.assert_array_equal(keras_masks['conv1']['bias'], torch_masks['0']['bias'].numpy())


def test_any_keras_mask_dict_is_attached_exactly_or_refused_cleanly():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    model = _net()
    shapes = {'conv1': {'weight': K, 'bias': (8,)}, 'fc': {'weight': (8, 4), 'bias': (4,)}}
    fills = st.sampled_from([0.0, 1.0, 0.5, np.nan, -np.inf, 2.0])

    @st.composite
    def arrays(draw, shape):
        dims = draw(st.sampled_from([shape, shape[::-1], (3,)]))
        arr = np.random.default_rng(draw(st.integers(0, 9))).integers(0, 2, dims).astype(
            draw(st.sampled_from(['float32', 'float64', 'bool', 'int32'])))
        if draw(st.booleans()) and arr.dtype.kind == 'f':
            arr.reshape(-1)[0] = draw(fills)
        return arr

    @st.composite
    def mask_dicts(draw):
        names = draw(st.lists(st.sampled_from(['conv1', 'fc', 'conv9', 're_lu']), max_size=2, unique=True))
        out = {}
        for name in names:
            spec = shapes.get(name, {'weight': (2,)})
            keys = draw(st.lists(st.sampled_from(sorted(spec) + ['kernel']), min_size=1, max_size=2, unique=True))
            out[name] = {k: draw(arrays(spec.get(k, (2,)))) for k in keys}
        return out

    def valid(masks):
        return all(n in shapes and k in shapes[n] and m.shape == shapes[n][k] and np.isin(m.astype(float), (0, 1)).all()
                   for n, e in masks.items() for k, m in e.items())

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(masks=mask_dicts())
    def check(masks):
        work = keras.models.clone_model(model)
        work.set_weights(model.get_weights())
        before = _weights(work)
        pruner = L1FilterPruner(work, [{'sparsity': 0.5, 'op_types': ['Conv2D']}])
        try:
            pruner.load_masks(masks)
        except (ValueError, TypeError) as exc:
            assert '\n' not in str(exc) and not valid(masks)
            assert _weights(work) == before
        else:
            assert valid(masks)

    check()


def test_keras_data_driven_pruner_names_the_bad_batch():
    from prunus.compression.tf import ActivationAPoZRankFilterPruner
    model = _net()
    before = _weights(model)
    data = [np.ones((2, 8, 8, 3), np.float32), np.ones((2, 8, 8, 5), np.float32)]
    with pytest.raises(ValueError) as info:
        ActivationAPoZRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}], data=data).compress()
    text = _one_line(info.value)
    assert 'ActivationAPoZRankFilterPruner' in text and 'batch 1' in text and '(2, 8, 8, 5)' in text
    assert _weights(model) == before


def test_keras_op_types_in_torch_spelling_get_a_did_you_mean():
    with pytest.raises(ValueError, match="did you mean 'Conv2D'"):
        L1FilterPruner(_net(), [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
