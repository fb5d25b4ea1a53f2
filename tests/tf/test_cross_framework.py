"""The same weights give the same masks in PyTorch and Keras, for every shared pruner."""
import pytest

torch = pytest.importorskip('torch')  # tests/tf/__init__.py loads it before TensorFlow
pytest.importorskip('tensorflow')

import keras  # noqa: E402
import numpy as np  # noqa: E402

from prunus.compression import available_pruners  # noqa: E402

NAMES = ['level', 'l1', 'l2', 'fpgm', 'slim', 'apoz', 'mean_activation', 'taylorfo']


def _models(seed=0):
    """A conv-bn-relu-conv-gap-linear net in both frameworks with identical weights."""
    rng = np.random.default_rng(seed)
    keras.utils.set_random_seed(seed)
    km = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(8, 3, name='conv1'),
                           keras.layers.BatchNormalization(epsilon=1e-5, name='bn1'), keras.layers.ReLU(),
                           keras.layers.Conv2D(6, 3, name='conv2'), keras.layers.ReLU(),
                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4, name='fc')])
    tm = torch.nn.Sequential()
    tm.add_module('conv1', torch.nn.Conv2d(3, 8, 3))
    tm.add_module('bn1', torch.nn.BatchNorm2d(8))
    tm.add_module('relu1', torch.nn.ReLU())
    tm.add_module('conv2', torch.nn.Conv2d(8, 6, 3))
    tm.add_module('relu2', torch.nn.ReLU())
    tm.add_module('pool', torch.nn.AdaptiveAvgPool2d(1))
    tm.add_module('flat', torch.nn.Flatten())
    tm.add_module('fc', torch.nn.Linear(6, 4))
    with torch.no_grad():
        for name in ('conv1', 'conv2'):
            w = rng.normal(size=tuple(getattr(tm, name).weight.shape)).astype(np.float32)
            b = rng.normal(size=w.shape[0]).astype(np.float32)
            getattr(tm, name).weight.copy_(torch.from_numpy(w))
            getattr(tm, name).bias.copy_(torch.from_numpy(b))
            km.get_layer(name).set_weights([w.transpose(2, 3, 1, 0), b])
        gamma = rng.uniform(0.1, 2.0, 8).astype(np.float32)
        beta, mean = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
        var = rng.uniform(0.5, 2.0, 8).astype(np.float32)
        tm.bn1.weight.copy_(torch.from_numpy(gamma))
        tm.bn1.bias.copy_(torch.from_numpy(beta))
        tm.bn1.running_mean.copy_(torch.from_numpy(mean))
        tm.bn1.running_var.copy_(torch.from_numpy(var))
        km.get_layer('bn1').set_weights([gamma, beta, mean, var])
        w = rng.normal(size=(4, 6)).astype(np.float32)
        b = rng.normal(size=4).astype(np.float32)
        tm.fc.weight.copy_(torch.from_numpy(w))
        tm.fc.bias.copy_(torch.from_numpy(b))
        km.get_layer('fc').set_weights([w.T, b])
    tm.eval()
    x = rng.normal(size=(8, 3, 6, 6)).astype(np.float32)
    y = np.arange(8) % 4
    return tm, km, x, y


def _pair(name, tm, km, x, y):
    tcls, kcls = available_pruners('torch')[name], available_pruners('tf')[name]
    t_types, k_types = (['Conv2d'], ['Conv2D']) if name != 'level' else (['Conv2d', 'Linear'], ['Conv2D', 'Dense'])
    if name == 'slim':
        t_types, k_types = ['BatchNorm2d'], ['BatchNormalization']
    tx, kx = torch.from_numpy(x), x.transpose(0, 2, 3, 1)
    t_kwargs, k_kwargs = {}, {}
    if name in ('apoz', 'mean_activation', 'taylorfo'):
        t_kwargs = {'data': [(tx, torch.from_numpy(y))], 'statistics_batch_num': 1}
        k_kwargs = {'data': [(kx, y)], 'statistics_batch_num': 1}
    if name == 'taylorfo':
        t_kwargs['criterion'] = torch.nn.CrossEntropyLoss()
        k_kwargs['criterion'] = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    tp = tcls(tm, [{'sparsity': 0.5, 'op_types': t_types}], **t_kwargs)
    kp = kcls(km, [{'sparsity': 0.5, 'op_types': k_types}], **k_kwargs)
    tp.compress()
    kp.compress()
    return tp.get_masks(), kp.get_masks()


@pytest.mark.parametrize('name', NAMES)
def test_same_weights_same_masks(name):
    tm, km, x, y = _models()
    t_masks, k_masks = _pair(name, tm, km, x, y)
    assert set(t_masks) == set(k_masks)
    for layer, entry in k_masks.items():
        t_weight = t_masks[layer]['weight'].detach().cpu().numpy()
        k_weight = entry['weight']
        if k_weight.ndim == 4:
            k_weight = k_weight.transpose(3, 2, 0, 1)
        elif k_weight.ndim == 2:
            k_weight = k_weight.T
        np.testing.assert_array_equal(k_weight, t_weight, err_msg=f'{name}: {layer}')
        if 'bias' in entry:
            np.testing.assert_array_equal(entry['bias'], t_masks[layer]['bias'].detach().cpu().numpy())
