"""A Keras Dense or Conv layer's inputs as the columns its kernel multiplies, and its
kernel as one ``(out, cols)`` matrix in the same column order (numpy, channels-last)."""
from __future__ import annotations

import keras
import numpy as np

#: Layers whose output is ``x @ kernel_matrix.T + bias`` over :func:`input_columns`.
UNFOLDABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def is_unfoldable(layer: keras.layers.Layer) -> bool:
    """Dense, or a plain (groups=1, not transposed / depthwise / separable) Conv1D/2D/3D."""
    if type(layer) is keras.layers.Dense:
        return True
    conv = type(layer) in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
    return conv and getattr(layer, 'groups', 1) == 1


def _channels_last(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    if isinstance(layer, keras.layers.Dense) or layer.data_format != 'channels_first':
        return x
    return np.moveaxis(x, 1, -1)


def _padded(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    """``x`` (N, *spatial, C) padded as the layer pads (Keras' 'same' puts the odd pixel
    at the end; 'causal' pads only the start)."""
    size = layer.kernel.shape[:-2]
    pads = [(0, 0)]
    for axis, (k, s, d) in enumerate(zip(size, layer.strides, layer.dilation_rate)):
        span = (k - 1) * d + 1
        n = x.shape[axis + 1]
        if layer.padding == 'same':
            out = -(-n // s)
            total = max((out - 1) * s + span - n, 0)
            pads.append((total // 2, total - total // 2))
        elif layer.padding == 'causal':
            pads.append((span - 1, 0))
        else:
            pads.append((0, 0))
    return np.pad(x, pads + [(0, 0)])


def input_columns(layer: keras.layers.Layer, x: np.ndarray) -> np.ndarray:
    """``(samples, cols)``: a Dense layer's input rows, or a conv's unfolded patches
    ordered (kernel position..., input channel) like ``kernel.reshape(-1, out)``."""
    x = np.asarray(x, dtype=np.float64)
    if isinstance(layer, keras.layers.Dense):
        return x.reshape(-1, x.shape[-1])
    x = _padded(layer, _channels_last(layer, x))
    size = layer.kernel.shape[:-2]
    outs = [(x.shape[a + 1] - (k - 1) * d - 1) // s + 1
            for a, (k, s, d) in enumerate(zip(size, layer.strides, layer.dilation_rate))]
    pieces = []
    for offset in np.ndindex(*size):
        index = [slice(None)]
        for o, n, s, d in zip(offset, outs, layer.strides, layer.dilation_rate):
            index.append(slice(o * d, o * d + (n - 1) * s + 1, s))
        pieces.append(x[tuple(index)])
    patches = np.stack(pieces, axis=-2)  # (N, *out, positions, C)
    return patches.reshape(-1, patches.shape[-2] * patches.shape[-1])


def output_rows(layer: keras.layers.Layer, y: np.ndarray) -> np.ndarray:
    """``(samples, out_features)`` in :func:`input_columns`' row order."""
    y = _channels_last(layer, np.asarray(y, dtype=np.float64))
    return y.reshape(-1, y.shape[-1])


def kernel_matrix(kernel: np.ndarray) -> np.ndarray:
    """A Keras kernel (``(in, out)`` or ``(*size, in, out)``) as ``(out, cols)``."""
    return np.asarray(kernel).reshape(-1, kernel.shape[-1]).T


def from_kernel_matrix(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`kernel_matrix`."""
    return matrix.T.reshape(shape)
