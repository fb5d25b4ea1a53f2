"""How prunus sees a Keras model: qualified layer names and weights in torch layout.

Nested models are walked recursively; a layer inside a nested model is named
``'<outer layer name>/<inner layer name>'`` (for example ``'backbone/conv1'``), the name used
in ``op_names``, in mask dicts and in mask files.

Criteria rank weights in the *PyTorch* element order so the same weights give the same
masks in both frameworks: a Keras ``Conv2D`` kernel ``(kh, kw, in, out)`` is ranked as the
torch weight ``(out, in, kh, kw)``, a ``Dense`` kernel ``(in, out)`` as ``(out, in)``, a
``DepthwiseConv2D`` kernel ``(kh, kw, in, mult)`` as ``(in * mult, 1, kh, kw)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import keras
import numpy as np

from prunus.compression.selection import LayerRef


@dataclass(frozen=True)
class WeightSpec:
    """Where a prunable layer keeps its weight and bias, and how they map to torch.

    Attributes:
        weight: name of the variable masks call ``'weight'``.
        bias: name of the variable masks call ``'bias'`` (None when the type has none).
        perm: axes permutation taking the Keras kernel to the torch layout.
        out_axis: output-channel axis in the torch layout (1 for transposed convs).
        depthwise: the kernel is ``(..., in, mult)`` and flattens to ``in * mult`` outputs.
    """

    weight: str
    bias: str | None
    perm: tuple[int, ...]
    out_axis: int = 0
    depthwise: bool = False


_CONV = {1: (2, 1, 0), 2: (3, 2, 0, 1), 3: (4, 3, 0, 1, 2)}
_DEPTHWISE = {1: (1, 2, 0), 2: (2, 3, 0, 1)}

#: Prunable Keras layer types by class name.
WEIGHT_SPECS: dict[str, WeightSpec] = {
    'Dense': WeightSpec('kernel', 'bias', (1, 0)),
    'Embedding': WeightSpec('embeddings', None, (0, 1)),
    'BatchNormalization': WeightSpec('gamma', 'beta', (0,)),
    **{f'Conv{d}D': WeightSpec('kernel', 'bias', _CONV[d]) for d in (1, 2, 3)},
    **{f'Conv{d}DTranspose': WeightSpec('kernel', 'bias', _CONV[d], out_axis=1) for d in (1, 2, 3)},
    **{f'DepthwiseConv{d}D': WeightSpec('kernel', 'bias', _DEPTHWISE[d], depthwise=True)
       for d in (1, 2)},
    **{f'SeparableConv{d}D': WeightSpec('pointwise_kernel', 'bias', _CONV[d]) for d in (1, 2)},
}

#: Layers with output channels (filters) a structured pruner may remove, and the ones
#: ``'default'`` in ``op_types`` means for them.
CONV_TYPES = ('Conv1D', 'Conv2D', 'Conv3D', 'Conv1DTranspose', 'Conv2DTranspose',
              'Conv3DTranspose')
FILTER_TYPES = CONV_TYPES + ('DepthwiseConv1D', 'DepthwiseConv2D', 'SeparableConv1D',
                             'SeparableConv2D', 'Dense')


def is_container(layer: keras.layers.Layer) -> bool:
    """Whether prunus walks into ``layer`` (a nested Sequential, Functional or subclassed model)."""
    return isinstance(layer, keras.Model)


def iter_layers(model: keras.Model, prefix: str = '') -> Iterator[tuple[str, keras.layers.Layer]]:
    """Every non-container layer of ``model`` with its qualified name, in model order."""
    seen: set[int] = set()
    for layer in model.layers:
        if id(layer) in seen or isinstance(layer, keras.layers.InputLayer):
            continue
        seen.add(id(layer))
        name = prefix + layer.name
        if is_container(layer):
            yield from iter_layers(layer, name + '/')
        else:
            yield name, layer


def layer_refs(model: keras.Model) -> list[LayerRef]:
    """The model's layers as the framework-agnostic selection sees them."""
    return [LayerRef(name, type(layer).__name__, _kinds(layer)) for name, layer in iter_layers(model)]


def _kinds(layer: keras.layers.Layer) -> tuple[str, ...]:
    """Prunable Keras classes a subclass derives from (a ``MyConv(Conv2D)`` is a Conv2D)."""
    return tuple(c.__name__ for c in type(layer).__mro__[1:] if c.__name__ in WEIGHT_SPECS)


def spec_of(layer: keras.layers.Layer) -> WeightSpec:
    """The :class:`WeightSpec` of ``layer``; TypeError names unsupported layer types."""
    # the nearest prunable class in the layer's ancestry: a subclass is pruned as its base
    spec = next((WEIGHT_SPECS[c.__name__] for c in type(layer).__mro__ if c.__name__ in WEIGHT_SPECS),
                None)
    if spec is None:
        raise TypeError(f"layer '{layer.name}' is a {type(layer).__name__}, which has no prunable "
                        f"weight; prunable types: {', '.join(WEIGHT_SPECS)}.")
    return spec


def variables_of(layer: keras.layers.Layer) -> dict[str, keras.Variable]:
    """The layer's own variables by short name (``'kernel'``, ``'bias'``, ``'gamma'``, ...)."""
    return {v.name: v for v in layer.weights}


def to_torch(kernel: np.ndarray, spec: WeightSpec) -> np.ndarray:
    """The Keras ``kernel`` rearranged in the torch weight layout (outputs on ``out_axis``)."""
    arr = np.transpose(kernel, spec.perm)
    if spec.depthwise:  # (in, mult, k...) -> (in * mult, 1, k...), output index in*mult + m
        arr = arr.reshape((arr.shape[0] * arr.shape[1], 1) + arr.shape[2:])
    return arr


def from_torch(arr: np.ndarray, spec: WeightSpec, keras_shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_torch` for an array of the Keras kernel's ``keras_shape``."""
    if spec.depthwise:
        arr = arr.reshape(tuple(keras_shape[-2:]) + tuple(arr.shape[2:]))
    return np.transpose(arr, np.argsort(spec.perm))


def filters_of(kernel: np.ndarray, spec: WeightSpec) -> np.ndarray:
    """The kernel as a 2-D ``(output channels, weights per filter)`` array in torch order."""
    arr = np.moveaxis(to_torch(kernel, spec), spec.out_axis, 0)
    return arr.reshape(arr.shape[0], -1)


def channel_mask(keep: np.ndarray, spec: WeightSpec, keras_shape: tuple[int, ...]) -> np.ndarray:
    """A Keras-layout weight mask that keeps the output channels where ``keep`` is True."""
    torch_shape = to_torch(np.empty(keras_shape, dtype=np.float32), spec).shape
    shape = [1] * len(torch_shape)
    shape[spec.out_axis] = -1
    full = np.broadcast_to(keep.reshape(shape), torch_shape).astype(np.float32)
    return from_torch(full, spec, keras_shape)
