"""Tiny Keras models named by topology, with non-trivial BatchNorm statistics."""
from __future__ import annotations

import keras
import numpy as np

L = keras.layers


def _seq_conv():
    return keras.Sequential([keras.Input((12, 12, 3)), L.Conv2D(8, 3, name='conv1'),
                             L.BatchNormalization(), L.ReLU(), L.Conv2D(6, 3, padding='same', name='conv2'),
                             L.GlobalAveragePooling2D(), L.Dense(4, name='fc')], name='seq_conv')


def _residual_add():
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(8, 3, padding='same', name='stem')(x)
    y = L.BatchNormalization()(y)
    a = L.Activation('relu')(L.Conv2D(8, 1, name='branch')(y))
    y = L.Add()([y, a])
    y = L.MaxPooling2D(2)(y)
    y = L.Flatten()(L.Conv2D(5, 1, name='head')(y))
    return keras.Model(x, L.Dense(3, name='fc')(y), name='residual_add')


def _concat():
    x = keras.Input((10, 10, 3))
    a = L.Conv2D(6, 3, padding='same', name='a')(x)
    b = L.Conv2D(4, 1, name='b')(x)
    y = L.Concatenate()([a, b])
    y = L.ReLU()(L.BatchNormalization()(y))
    y = L.Conv2D(6, 1, name='mix')(y)
    y = L.AveragePooling2D(2, padding='same')(y)
    return keras.Model(x, L.Dense(3)(L.GlobalMaxPooling2D()(y)), name='concat')


def _depthwise_se():
    x = keras.Input((12, 12, 3))
    y = L.Conv2D(8, 1, name='expand')(x)
    y = L.BatchNormalization()(y)
    y = L.Activation('swish')(y)
    y = L.ZeroPadding2D(1)(y)
    y = L.DepthwiseConv2D(3, name='dw')(y)
    s = L.GlobalAveragePooling2D(keepdims=True)(y)
    s = L.Conv2D(4, 1, activation='relu', name='se_reduce')(s)
    s = L.Conv2D(8, 1, activation='sigmoid', name='se_expand')(s)
    y = L.Multiply()([y, s])
    y = L.SeparableConv2D(6, 3, name='sep')(y)
    y = L.UpSampling2D()(y)
    y = L.Conv2DTranspose(4, 3, strides=2, name='deconv')(y)
    y = L.LayerNormalization(axis=[1, 2])(y)
    # max, not mean: the mean over the axes just normalized is the shift alone (zero), and
    # the output would be rounding noise
    return keras.Model(x, L.Dense(3)(L.GlobalMaxPooling2D()(y)), name='depthwise_se')


def _nested():
    inner = keras.Sequential([keras.Input((8, 8, 6)), L.Conv2D(6, 3, padding='same', name='c'),
                              L.BatchNormalization(), L.ReLU()], name='inner')
    x = keras.Input((8, 8, 3))
    y = L.Rescaling(0.5)(x)
    y = L.Conv2D(6, 3, padding='same', name='stem')(y)
    y = inner(y)
    y = L.Dropout(0.3)(L.Reshape((8 * 8 * 6,))(y))
    return keras.Model(x, L.Dense(3, name='fc')(y), name='nested')


def _conv1d_3d():
    x = keras.Input((16, 4))
    y = L.Conv1D(8, 3, activation='relu', name='c1')(x)
    y = L.LayerNormalization()(L.Conv1D(6, 1, name='c2')(y))
    y = L.Reshape((14, 6, 1))(y)
    y = L.Conv2D(4, 1, name='c3')(y)
    y = L.Reshape((14, 6, 1, 4))(y)
    y = L.Conv3D(5, 1, name='c4')(y)
    return keras.Model(x, L.Dense(2)(L.Flatten()(y)), name='conv1d_3d')


def _grouped_conv():
    x = keras.Input((10, 10, 4))
    y = L.Conv2D(8, 1, name='a')(x)
    y = L.ReLU()(L.BatchNormalization()(y))
    y = L.Conv2D(8, 3, groups=4, name='g')(y)
    y = L.BatchNormalization()(y)
    y = L.Conv2D(6, 1, groups=2, name='g2')(y)
    return keras.Model(x, L.Dense(3)(L.GlobalAveragePooling2D()(y)), name='grouped_conv')


def _ops_permute():
    x = keras.Input((8, 6, 3))
    y = L.Conv2D(8, 3, padding='same', name='a')(x)
    y = L.Permute((2, 1, 3))(y)  # swaps the spatial axes: channels stay last
    y = keras.ops.relu(y) * 0.5 + keras.ops.sigmoid(L.Conv2D(8, 1, name='b')(y))
    s = keras.ops.expand_dims(keras.ops.mean(y, axis=(1, 2)), 1)
    y = L.Conv2D(4, 1, name='c')(keras.ops.transpose(y, (0, 2, 1, 3)) * keras.ops.expand_dims(s, 1))
    return keras.Model(x, L.Dense(3)(L.Flatten()(y)), name='ops_permute')


ZOO = {f.__name__[1:]: f for f in (_seq_conv, _residual_add, _concat, _depthwise_se, _nested,
                                   _conv1d_3d, _grouped_conv, _ops_permute)}


def perturb_batchnorm(model: keras.Model, seed: int = 0) -> None:
    """Gives every BatchNormalization random scale, shift and moving statistics."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, L.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.5, c), rng.uniform(0.5, 2.0, c)])


def build(name: str, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = ZOO[name]()
    perturb_batchnorm(model, seed)
    return model


def sample(model: keras.Model, n: int = 4, seed: int = 0) -> np.ndarray:
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


def rel_error(model: keras.Model, small: keras.Model, x: np.ndarray) -> float:
    """Largest inference-mode output difference, relative to the largest reference output."""
    ref = np.asarray(model(x, training=False))
    out = np.asarray(small(x, training=False))
    assert out.shape == ref.shape
    return float(np.abs(out - ref).max() / (np.abs(ref).max() + 1e-12))


def dead_filters(model: keras.Model, name: str, drop: list[int]) -> dict:
    """Zeroes filters ``drop`` of conv ``name`` (kernel and bias) in place, as a pruner's
    masks would; returns those masks."""
    layer = model.get_layer(name)
    kernel, bias = layer.get_weights()
    mask, bias_mask = np.ones_like(kernel), np.ones_like(bias)
    mask[..., drop] = 0.0
    bias_mask[drop] = 0.0
    layer.set_weights([kernel * mask, bias * bias_mask])
    return {name: {'weight': mask, 'bias': bias_mask}}
