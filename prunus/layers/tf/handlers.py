"""One small handler per Keras layer type: how its channels are removed.

A handler answers four questions about its layer type: how to remove output channels
(:meth:`LayerHandler.prune_out`), how to remove input channels (:meth:`prune_in`), how
channels flow through it (:attr:`role`), and whether a constant arriving on a removed
input channel can be folded exactly (:meth:`can_fold`, :meth:`fold_in`): into a constant
path of the rebuilt layer that learns as the masked model's weights on the removed inputs
would (:mod:`.constants`; a per-output vector where the constant reaches every output
alike, a one-channel kernel where zero padding makes it vary at the borders). The method
names are those of the PyTorch handlers (:mod:`prunus.layers.torch.handlers`).
``weights`` are dicts of numpy arrays by variable name (``'kernel'``, ``'bias'``, ...);
``config`` is the layer's ``get_config()`` dict; ``keep`` is a boolean vector.

Roles:
    ``'mixing'``: outputs are new channels computed from all inputs (Conv, Dense).
    ``'tied'``: output channel i comes from input channel i only (BatchNorm, activations,
        pooling, depthwise conv); keeps the same channel ids.
    ``'merge'``: element-wise merge of several inputs whose channels are tied (Add, Multiply).
    ``'concat'``: channels of the inputs laid end to end (Concatenate on the last axis).
    ``'reshape'``: Flatten/Reshape, mapping channels to feature positions.
"""
from __future__ import annotations

import numpy as np

from .constants import PATHS, bias_like, conv_path, live_outputs, path_or_bias, with_constants


def weight_key(layer, variable) -> str:
    """A variable's name within its layer: ``kernel``, or ``query/kernel`` for a layer
    with sublayers (whose variables share the short names)."""
    path, marker = getattr(variable, 'path', variable.name), f'{layer.name}/'
    return path.split(marker, 1)[1] if marker in path else variable.name


def layer_weights(layer) -> dict[str, np.ndarray]:
    """The layer's weights as numpy arrays by :func:`weight_key`."""
    return {weight_key(layer, v): v.numpy() for v in getattr(layer, 'weights', ())}


class LayerHandler:
    """Removal knowledge of one layer type; subclasses override what applies.

    Example::

        small = speedup(model, masks, custom_handlers={'MyLayer': MyLayerHandler()})
    """

    role = 'tied'

    def prune_out(self, layer, config: dict, weights: dict, keep: np.ndarray) -> None:
        """Removes the output channels where ``keep`` is False."""

    def prune_in(self, layer, config: dict, weights: dict, keep: np.ndarray) -> None:
        """Removes the input channels where ``keep`` is False."""

    def supports(self, layer) -> str | None:
        """None when this layer instance can be handled, else the reason it cannot."""
        return None

    def can_fold(self, layer) -> bool:
        """Whether a spatially uniform constant input folds exactly (into a constant path,
        or the bias)."""
        return False

    def groups(self, layer) -> int:
        """Number of channel groups (grouped convolution): input block ``b`` feeds only
        output block ``b``, and every kept block must keep as many channels as the others."""
        return 1

    def fold_in(self, layer, weights: dict, const: np.ndarray) -> np.ndarray | None:
        """Folds the constant input ``const`` (over the original inputs, zero where nothing
        is removed): returns None after adding it to the constant path in ``weights``
        (``carried_constants`` and ``carried_scale``, :func:`.constants.add_path`; the
        rebuilt layer then becomes the type's subclass with constants), or the bias change
        over the original outputs where the type has no such subclass."""
        raise NotImplementedError

    def dead_out(self, layer, weights: dict) -> np.ndarray | None:
        """Output channels whose value does not depend on the input (all-zero filters,
        a zero BatchNorm scale); None when the type has none."""
        return None


class DenseHandler(LayerHandler):
    role = 'mixing'

    def prune_out(self, layer, config, weights, keep):
        config['units'] = int(keep.sum())
        weights['kernel'] = weights['kernel'][..., keep]
        for name in ('bias',) + PATHS:
            if name in weights:
                weights[name] = weights[name][keep]

    def prune_in(self, layer, config, weights, keep):
        weights['kernel'] = weights['kernel'][keep, :]

    def can_fold(self, layer):
        return True

    def fold_in(self, layer, weights, const):
        kernel = weights['kernel']
        folded = const @ kernel.astype(np.float64)
        return path_or_bias(layer, weights, folded, np.full(folded.shape, np.abs(const).sum()),
                            np.full(folded.shape, np.square(const).sum()), kernel.dtype)

    def dead_out(self, layer, weights):
        kernel = weights['kernel']
        return ~kernel.any(axis=0) & ~live_outputs(weights, -1, kernel.shape[-1])


class ConvHandler(LayerHandler):
    """Conv1D/2D/3D: kernel ``(*k, in / groups, out)``.

    A grouped conv keeps its group structure: every kept group keeps the same number of
    input and of output channels, and a group whose inputs and outputs are all removed is
    dropped (``groups`` shrinks). The analysis balances removals to make this hold.
    """

    role = 'mixing'

    def supports(self, layer):
        if layer.data_format != 'channels_last':
            return 'data_format channels_first'
        return None

    def groups(self, layer):
        return getattr(layer, 'groups', 1)

    def prune_out(self, layer, config, weights, keep):
        g = self.groups(layer)
        if g > 1:
            config['groups'] = int(keep.reshape(g, -1).any(axis=1).sum())
        config['filters'] = int(keep.sum())
        weights['kernel'] = weights['kernel'][..., keep]
        if 'bias' in weights:
            weights['bias'] = weights['bias'][keep]
        for name in PATHS:
            if name in weights:
                weights[name] = weights[name][..., keep]

    def prune_in(self, layer, config, weights, keep):
        g = self.groups(layer)
        if g == 1:
            weights['kernel'] = weights['kernel'][..., keep, :]
            return
        blocks = keep.reshape(g, -1)
        width = int(blocks.sum(axis=1).max())
        kernel, per_out = weights['kernel'], weights['kernel'].shape[-1] // g
        parts = []
        for b, row in enumerate(blocks):
            if row.sum() not in (0, width):
                raise ValueError(f'group {b} keeps {int(row.sum())} input channels, '
                                 f'the others {width}')
            # A dropped group keeps placeholder rows; prune_out removes its outputs.
            rows = np.flatnonzero(row) if row.any() else np.arange(width)
            parts.append(kernel[..., rows, b * per_out:(b + 1) * per_out])
        weights['kernel'] = np.concatenate(parts, axis=-1)

    def can_fold(self, layer):
        return bias_like(layer) or with_constants(type(layer)) is not None

    def fold_in(self, layer, weights, const):
        kernel = weights['kernel'].astype(np.float64)
        g = self.groups(layer)
        per_in, out = kernel.shape[-2], kernel.shape[-1]
        # each output sums the constants of its own group's inputs: (*k, in/g, g, out/g)
        grouped = kernel.reshape(kernel.shape[:-1] + (g, out // g))
        per_tap = np.einsum('...jbo,bj->...bo', grouped, const.reshape(g, per_in))
        scale = np.repeat(np.abs(const).reshape(g, per_in).sum(axis=1), out // g)
        squares = np.repeat(np.square(const).reshape(g, per_in).sum(axis=1), out // g)
        folded, scale, squares = conv_path(per_tap.reshape(kernel.shape[:-2] + (out,)), scale,
                                           squares, layer)
        return path_or_bias(layer, weights, folded, scale, squares, weights['kernel'].dtype)

    def dead_out(self, layer, weights):
        kernel = weights['kernel']
        dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        return dead & ~live_outputs(weights, -1, kernel.shape[-1])


class ConvTransposeHandler(ConvHandler):
    """Conv1D/2D/3DTranspose: kernel ``(*k, out, in)``; overlapping outputs are never
    uniform, so constants always fold into a one-channel kernel path ``(*k, out, 1)``."""

    def prune_out(self, layer, config, weights, keep):
        config['filters'] = int(keep.sum())
        weights['kernel'] = weights['kernel'][..., keep, :]
        if 'bias' in weights:
            weights['bias'] = weights['bias'][keep]
        for name in PATHS:
            if name in weights:
                weights[name] = weights[name][..., keep, :]

    def prune_in(self, layer, config, weights, keep):
        weights['kernel'] = weights['kernel'][..., keep]

    def can_fold(self, layer):
        return with_constants(type(layer)) is not None

    def fold_in(self, layer, weights, const):
        kernel = weights['kernel']
        scale = np.full((kernel.shape[-2], 1), np.abs(const).sum())
        squares = np.full((kernel.shape[-2], 1), np.square(const).sum())
        return path_or_bias(layer, weights, (kernel.astype(np.float64) @ const)[..., None],
                            scale, squares, kernel.dtype)

    def dead_out(self, layer, weights):
        kernel = np.moveaxis(weights['kernel'], -2, -1)
        dead = ~kernel.reshape(-1, kernel.shape[-1]).any(axis=0)
        return dead & ~live_outputs(weights, -2, kernel.shape[-1])


class SeparableConvHandler(ConvHandler):
    """SeparableConv1D/2D: depthwise ``(*k, in, mult)`` then pointwise ``(1.., in*mult, out)``."""

    def prune_out(self, layer, config, weights, keep):
        config['filters'] = int(keep.sum())
        weights['pointwise_kernel'] = weights['pointwise_kernel'][..., keep]
        if 'bias' in weights:
            weights['bias'] = weights['bias'][keep]
        for name in PATHS:
            if name in weights:
                weights[name] = weights[name][..., keep]

    def prune_in(self, layer, config, weights, keep):
        weights['depthwise_kernel'] = weights['depthwise_kernel'][..., keep, :]
        inner = np.repeat(keep, layer.depth_multiplier)
        weights['pointwise_kernel'] = weights['pointwise_kernel'][..., inner, :]

    def fold_in(self, layer, weights, const):
        depth, point = weights['depthwise_kernel'], weights['pointwise_kernel']
        mult, out = depth.shape[-1], point.shape[-1]
        # depthwise then pointwise, per tap: (*k, in, mult) x (in * mult, out) -> (*k, out)
        scaled = depth.astype(np.float64) * const[:, None]
        per_tap = np.einsum('...jm,jmo->...o', scaled,
                            point.reshape(-1, mult, out).astype(np.float64))
        # the masked model's K is bilinear in the two kernels here: one step per input
        # is the closest match
        folded, scale, squares = conv_path(per_tap, np.full(out, np.abs(const).sum()),
                                           np.full(out, np.square(const).sum()), layer)
        return path_or_bias(layer, weights, folded, scale, squares, point.dtype)

    def dead_out(self, layer, weights):
        point = weights['pointwise_kernel']
        dead = ~point.reshape(-1, point.shape[-1]).any(axis=0)
        return dead & ~live_outputs(weights, -1, point.shape[-1])


class DepthwiseHandler(LayerHandler):
    """DepthwiseConv1D/2D: channel-tied; each input channel owns ``depth_multiplier`` outputs."""

    def supports(self, layer):
        return None if layer.data_format == 'channels_last' else 'data_format channels_first'

    def prune_in(self, layer, config, weights, keep):
        weights['kernel'] = weights['kernel'][..., keep, :]
        if 'bias' in weights:
            mult = layer.depth_multiplier
            weights['bias'] = weights['bias'].reshape(-1, mult)[keep].reshape(-1)

    def dead_out(self, layer, weights):
        kernel = weights['kernel']
        return ~kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1]).any(axis=0)


def channel_axes(layer) -> tuple[list[int], int]:
    """The layer's ``axis`` setting as non-negative axes of its (first) input."""
    axis = getattr(layer, 'axis', -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(layer.input.shape) if not isinstance(layer.input, list) else len(layer.input[0].shape)
    return [a % rank for a in axes], rank


class ChannelVectorHandler(LayerHandler):
    """Tied layers whose every weight is a per-channel vector on the last axis
    (BatchNormalization, PReLU)."""

    def supports(self, layer):
        if hasattr(layer, 'axis'):
            axes, rank = channel_axes(layer)
            if axes != [rank - 1]:
                return f'its axis is {layer.axis}, not the channel axis'
        return None

    def prune_in(self, layer, config, weights, keep):
        for name, value in weights.items():
            if value.ndim >= 1 and value.shape[-1] == keep.shape[0]:
                weights[name] = value[..., keep]

    def dead_out(self, layer, weights):
        if 'gamma' not in weights and 'beta' not in weights:
            return None  # PReLU never ignores its input
        gamma = weights.get('gamma')
        return (gamma == 0) if gamma is not None else None


class NoWeightHandler(LayerHandler):
    """Channel-wise layers without channel-sized state (activations, pooling, dropout)."""

    def supports(self, layer):
        if getattr(layer, 'data_format', 'channels_last') != 'channels_last':
            return 'data_format channels_first'
        activation = getattr(getattr(layer, 'activation', None), '__name__', '')
        if activation in ('softmax', 'log_softmax'):
            return f'{activation} mixes channels'
        for name in ('scale', 'offset'):  # Rescaling: only scalars are channel-agnostic
            if np.ndim(getattr(layer, name, 0.0)) > 0 and np.size(getattr(layer, name)) > 1:
                return f'per-channel {name}'
        return None


class LayerNormHandler(NoWeightHandler):
    """LayerNormalization: tied when it normalizes over non-channel axes only; over the
    channel axis every channel enters the statistics, so none can be removed."""

    def supports(self, layer):
        axes, rank = channel_axes(layer)
        return 'it normalizes over the channel axis' if rank - 1 in axes else None


class PermuteHandler(NoWeightHandler):
    """Permute that leaves the channel axis last (it only swaps spatial axes)."""

    def supports(self, layer):
        dims = tuple(layer.dims)
        return None if dims[-1] == len(dims) else f'moves the channel axis (dims={dims})'


class MergeHandler(LayerHandler):
    role = 'merge'


class ConcatHandler(LayerHandler):
    role = 'concat'

    def supports(self, layer):
        rank = len(layer.output.shape)
        return None if layer.axis in (-1, rank - 1) else f'concatenates on axis {layer.axis}'


class ReshapeHandler(LayerHandler):
    role = 'reshape'

    def supports(self, layer):
        return None if getattr(layer, 'data_format', 'channels_last') == 'channels_last' \
            else 'data_format channels_first'


class MultiHeadAttentionHandler(LayerHandler):
    """keras.layers.MultiHeadAttention: its input and output channels are kept; heads
    whose value (kernel and bias) or output-projection weights are all zero add nothing
    and are removed (``num_heads`` drops; ``key_dim`` and so the softmax scale stay)."""

    role = 'inner'

    def supports(self, layer):
        return 'use_gate=True' if getattr(layer, '_use_gate', False) else None

    def dead_heads(self, weights: dict) -> np.ndarray:
        value, out = weights['value/kernel'], weights['attention_output/kernel']
        dead = (value == 0).all(axis=(0, 2))
        if 'value/bias' in weights:
            dead &= (weights['value/bias'] == 0).all(axis=1)
        return dead | (out == 0).all(axis=(1, 2))

    def shrink_inside(self, layer, config: dict, weights: dict) -> int:
        """Removes the dead heads from ``config``/``weights``; returns how many went."""
        keep = ~self.dead_heads(weights)
        if not keep.any():
            keep[0] = True  # a layer needs one head; a dead one adds nothing anyway
        if keep.all():
            return 0
        for part in ('query', 'key', 'value'):
            weights[f'{part}/kernel'] = weights[f'{part}/kernel'][:, keep]
            if f'{part}/bias' in weights:
                weights[f'{part}/bias'] = weights[f'{part}/bias'][keep]
        weights['attention_output/kernel'] = weights['attention_output/kernel'][keep]
        config['num_heads'] = int(keep.sum())
        return int((~keep).sum())


def _named(handler: LayerHandler, *names: str) -> dict[str, LayerHandler]:
    return {name: handler for name in names}


#: Supported layer types (Keras class name -> handler). The docs list from this table;
#: pass ``custom_handlers={'MyLayer': MyHandler()}`` to ``speedup`` for others.
HANDLERS: dict[str, LayerHandler] = {
    **_named(DenseHandler(), 'Dense', 'DenseWithConstants'),
    **_named(ConvHandler(), 'Conv1D', 'Conv2D', 'Conv3D', 'Conv1DWithConstants',
             'Conv2DWithConstants', 'Conv3DWithConstants'),
    **_named(ConvTransposeHandler(), 'Conv1DTranspose', 'Conv2DTranspose', 'Conv3DTranspose',
             'Conv1DTransposeWithConstants', 'Conv2DTransposeWithConstants',
             'Conv3DTransposeWithConstants'),
    **_named(SeparableConvHandler(), 'SeparableConv1D', 'SeparableConv2D',
             'SeparableConv1DWithConstants', 'SeparableConv2DWithConstants'),
    **_named(DepthwiseHandler(), 'DepthwiseConv1D', 'DepthwiseConv2D'),
    **_named(ChannelVectorHandler(), 'BatchNormalization', 'PReLU'),
    **_named(NoWeightHandler(), 'Activation', 'ReLU', 'LeakyReLU', 'ELU', 'ThresholdedReLU',
             'Dropout', 'SpatialDropout1D', 'SpatialDropout2D', 'SpatialDropout3D',
             'GaussianNoise', 'GaussianDropout', 'AlphaDropout', 'Identity', 'Rescaling',
             'MaxPooling1D', 'MaxPooling2D', 'MaxPooling3D', 'AveragePooling1D',
             'AveragePooling2D', 'AveragePooling3D', 'GlobalAveragePooling1D',
             'GlobalAveragePooling2D', 'GlobalAveragePooling3D', 'GlobalMaxPooling1D',
             'GlobalMaxPooling2D', 'GlobalMaxPooling3D', 'ZeroPadding1D', 'ZeroPadding2D',
             'ZeroPadding3D', 'Cropping1D', 'Cropping2D', 'Cropping3D', 'UpSampling1D',
             'UpSampling2D', 'UpSampling3D', 'ActivityRegularization'),
    **_named(MergeHandler(), 'Add', 'Subtract', 'Multiply', 'Average', 'Maximum', 'Minimum'),
    'Concatenate': ConcatHandler(),
    **_named(ReshapeHandler(), 'Flatten', 'Reshape'),
    'Permute': PermuteHandler(),
    'LayerNormalization': LayerNormHandler(),
    'MultiHeadAttention': MultiHeadAttentionHandler(),
}
