"""Attention heads of keras.layers.MultiHeadAttention: scores and head masks.

A head's weights are its slices of the query/key/value kernels ``(in, heads, dim)`` and
biases ``(heads, dim)`` and of the output kernel ``(heads, dim, out)``. Zeroing a head's
value and output weights makes it add nothing, and ``prunus.speedup.tf.speedup`` then
removes it (``num_heads`` drops)::

    scores = head_scores(model.get_layer('mha'))          # L1 of Q/K/V, per head
    prune_heads(model.get_layer('mha'), lowest(scores, 2))
    small = speedup(model, {})
"""
from __future__ import annotations

from typing import Iterable

import keras
import numpy as np



def _check(layer) -> None:
    if not isinstance(layer, keras.layers.MultiHeadAttention):
        raise TypeError(f"layer '{getattr(layer, 'name', layer)}' is a {type(layer).__name__}, "
                        'not a keras.layers.MultiHeadAttention.')
    if not layer.built:
        raise ValueError(f"MultiHeadAttention '{layer.name}' is not built; call the model once first.")


def head_scores(layer, p: int = 1) -> np.ndarray:
    """Per head: the mean over Q, K and V of the Lp norm of the head's kernel slice."""
    _check(layer)
    total = 0.0
    for dense in (layer._query_dense, layer._key_dense, layer._value_dense):
        kernel = np.moveaxis(dense.kernel.numpy(), 1, 0)
        total = total + np.linalg.norm(kernel.reshape(kernel.shape[0], -1), ord=p, axis=1)
    return np.asarray(total) / 3


def prune_heads(layer, heads: Iterable[int]) -> None:
    """Zeroes the given heads' Q/K/V and output weights (every head but one at most)."""
    _check(layer)
    heads = sorted({int(h) for h in heads})
    n = layer.get_config()['num_heads']
    if any(h < 0 or h >= n for h in heads) or len(heads) >= n:
        raise ValueError(f"MultiHeadAttention '{layer.name}' has {n} heads; cannot prune {heads} "
                         '(indices in range, and one head must stay).')
    for dense in (layer._query_dense, layer._key_dense, layer._value_dense):
        kernel = dense.kernel.numpy()
        kernel[:, heads] = 0
        dense.kernel.assign(kernel)
        if dense.bias is not None:
            bias = dense.bias.numpy()
            bias[heads] = 0
            dense.bias.assign(bias)
    out = layer._output_dense.kernel.numpy()
    out[heads] = 0
    layer._output_dense.kernel.assign(out)
