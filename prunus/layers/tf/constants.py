"""What removed constant channels leave behind in a Keras model: small constant paths.

A removed input channel that reaches a layer as a constant ``c_j`` (a BatchNorm shift
after a pruned filter) adds ``W_j * c_j`` to its output. With zero padding the constant
meets the padding at the borders, so the rebuilt conv becomes e.g.
:class:`Conv2DWithConstants`, a registered subclass with a kernel ``K = sum_j c_j W_j``
(one input channel) applied to a tensor of ones with the layer's own strides, padding
and dilation, before the bias and activation: exact for any input size. A Dense, or a
conv no zero padding reaches ('valid', 1x1), sees the constant everywhere, so its ``K``
is one value per output (summed over the taps), added like a bias. No channel is kept
for it and no weight of the kept channels changes.

How it trains. In the masked model the weights ``W_j`` on removed inputs stay trainable:
each gets the gradient ``c_j * dL/dK``, so under Adam each moves one step of
``sign(c_j)`` times the same normalized direction and ``K`` moves ``sum_j |c_j|`` such
steps, while under SGD ``K`` moves ``sum_j c_j^2`` times the gradient. So the path is a
trainable weight ``carried_constants`` = ``K / s`` (at most the largest ``|W_j|``) times a
fixed, non-trainable ``carried_scale`` ``s = sum_j |c_j|`` per output (over the inputs
that feed it; times the number of taps for the bias-like form), and its gradient is
``q / s`` times ``dL/dK`` with the non-trainable ``carried_squares`` ``q = sum_j c_j^2``
(likewise): Adam, AdamW and other scale-free optimizers move ``K`` by ``s`` steps and SGD
by ``q`` times the gradient, both the masked model's trajectory. Kernel regularizers and
constraints do not apply to it. Its input is fixed ones, so it only ever learns a
(border-dependent) bias.

Which constant? A pruned filter's BatchNorm gives ``beta`` in train mode (its batch of
zeros has mean 0), but ``beta - gamma * mean / sqrt(var + eps)`` in eval mode, with the
stale statistics of the channel before it was pruned, which the masked model forgets as
its moving statistics decay during fine-tuning. So ``K`` takes the train-mode constants,
and the difference to the eval-mode ones is a frozen kernel in the path's layout,
``eval_offset``, added in eval mode only and shrunk by ``offset_decay`` (one minus the
BatchNorm momentum) at every train-mode call: right after the speedup the model equals
the masked one in eval mode, and under training it computes what the masked model does.
The handlers (:mod:`.handlers`) compute the kernels; this module holds the layers.
Importing it registers them, so ``keras.models.load_model`` reads a saved sped-up model
once ``prunus.speedup.tf`` (or this module) is imported.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

PATH = 'carried_constants'
SCALE = 'carried_scale'
SQUARES = 'carried_squares'
OFFSET = 'eval_offset'
DECAY = 0.01  # 1 - BatchNormalization's default momentum: how fast stale statistics fade
PATHS = (PATH, SCALE, SQUARES, OFFSET)  # their variables, laid out by output channel like the kernel
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)


def bias_like(layer) -> bool:
    """Whether a constant input reaches every output position of ``layer`` alike (a Dense,
    or a conv no zero padding reaches): its path is then one value per output."""
    if isinstance(layer, _TRANSPOSED):  # overlapping, strided windows make it vary
        return False
    if not hasattr(layer, 'kernel_size'):
        return True
    return layer.padding == 'valid' or all(k == 1 for k in layer.kernel_size)


def add_path(weights: dict, kernel: np.ndarray, scale: np.ndarray, squares: np.ndarray,
             dtype) -> None:
    """Adds ``kernel`` (``K``, float64) with its per-output ``scale`` (``s = sum |c_j|``)
    and ``squares`` (``q = sum c_j^2``), both broadcasting against it, to the learnable path
    in a handler's ``weights``, stored as ``K / s``."""
    if PATH in weights:
        old = weights[SCALE].astype(np.float64)
        kernel, scale = kernel + weights[PATH] * old, scale + old
        squares = squares + weights[SQUARES]
    weights[PATH] = (kernel / np.where(scale > 0, scale, 1.0)).astype(dtype)
    weights[SCALE] = scale.astype(dtype)
    weights[SQUARES] = np.broadcast_to(squares, scale.shape).astype(dtype)


def path_or_bias(layer, weights: dict, kernel: np.ndarray, scale: np.ndarray,
                 squares: np.ndarray, dtype) -> np.ndarray | None:
    """``kernel`` (``K``) with its scale into the layer's constant path (returns None); a
    user's subclass of a Keras layer has no class with a path, so its handler folds only
    where :func:`bias_like`, and ``K`` is returned as a bias change."""
    if with_constants(type(layer)) is None:
        return kernel
    add_path(weights, kernel, scale, squares, dtype)
    return None


def conv_path(per_tap: np.ndarray, scale: np.ndarray, squares: np.ndarray, layer
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A conv's ``(*k, out)`` kernel and per-output scale and squares in its path's layout:
    a one-channel kernel ``(*k, 1, out)``, or, where :func:`bias_like`, the sum over the
    taps with scale and squares times their number (in the masked model each tap moves on
    its own)."""
    out = per_tap.shape[-1]
    if bias_like(layer):
        taps = np.prod(layer.kernel_size)
        return per_tap.reshape(-1, out).sum(axis=0), scale * taps, squares * taps
    return per_tap[..., None, :], scale, squares


def live_outputs(weights: dict, axis: int, n_out: int) -> np.ndarray:
    """Output channels (along ``axis`` of the path kernels) to which a constant path adds
    something: not dead, even with all-zero filters."""
    live = np.zeros(n_out, bool)
    for name in (PATH, OFFSET):
        if name in weights:
            live |= np.moveaxis(weights[name], axis, -1).reshape(-1, n_out).any(axis=0)
    return live


def _ones(layer, inputs):
    """Batch 1, one channel, the input's spatial size: what a constant channel looks like."""
    if layer.data_format != 'channels_last':
        raise ValueError(f"'{layer.name}': constant paths need channels_last")
    return ops.ones_like(inputs[:1, ..., :1])


def _finish(layer, outputs):
    """Bias and activation, as the base layers apply them."""
    if layer.use_bias:
        outputs = ops.add(outputs, ops.reshape(layer.bias, (1,) * (layer.rank + 1) + (layer.filters,)))
    return layer.activation(outputs) if layer.activation is not None else outputs


class _Paths:
    """The variables of the constant paths and how they add up."""

    def __init__(self, *args, offset_decay: float = DECAY, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset_decay = float(offset_decay)

    def get_config(self):
        return {**super().get_config(), 'offset_decay': self.offset_decay}

    def build(self, input_shape):
        super().build(input_shape)
        # zeros until the speedup sets them; only the path itself learns
        shapes = {PATH: self.path_shape(), SCALE: self.scale_shape(),
                  SQUARES: self.scale_shape(), OFFSET: self.path_shape()}
        for name in PATHS:
            setattr(self, name, self.add_weight(name=name, shape=shapes[name], initializer='zeros',
                                                trainable=name == PATH, dtype=self.dtype))

    def path_shape(self) -> tuple:
        """Shape of ``carried_constants`` and ``eval_offset``."""
        raise NotImplementedError

    def scale_shape(self) -> tuple:
        """Shape of ``carried_scale``: one per output, broadcasting against the path."""
        return (self.path_shape()[-1],)

    def path_kernel(self, training):
        """``K`` in train mode; plus the eval offset in eval mode. A train-mode call shrinks
        the offset, as the masked model's stale statistics shrink."""
        # K = s * path, its gradient q / s times dL/dK: scale-free optimizers (Adam) then
        # step K as the masked model's weights on removed inputs do, and so does SGD
        scale = self.carried_scale
        rate = ops.divide(self.carried_squares, ops.where(scale > 0, scale, ops.ones_like(scale)))
        path = self.carried_constants
        kernel = ops.add(ops.multiply(ops.subtract(scale, rate), ops.stop_gradient(path)),
                         ops.multiply(rate, path))
        if training:
            self.eval_offset.assign(self.eval_offset * (1.0 - self.offset_decay))
            return kernel
        return ops.add(kernel, self.eval_offset)


class _Stored:
    """Saving for the layers (Keras's convs and Dense) whose base saves its kernel and bias
    only, by position: the paths' variables go after them."""

    def base_variables(self) -> int:
        """How many variables the base layer saves before these."""
        return 1 + bool(self.use_bias)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            for i, name in enumerate(PATHS, self.base_variables()):
                store[str(i)] = getattr(self, name)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            for i, name in enumerate(PATHS, self.base_variables()):
                getattr(self, name).assign(store[str(i)])


class _ConvPaths(_Paths):
    def path_shape(self) -> tuple:
        if bias_like(self):
            return (self.filters,)
        return tuple(self.kernel_size) + (1, self.filters)

    def path_map(self, ones, training, conv):
        """What the paths add: ``conv(ones, K)``, or the bias-like vector itself."""
        kernel = self.path_kernel(training)
        return kernel if len(self.path_shape()) == 1 else conv(ones, kernel)


class _ConvWithConstants(_Stored, _ConvPaths):
    def call(self, inputs, training=None):
        ones, padding = _ones(self, inputs), self.padding
        if padding == 'causal':  # Conv1D pads on the left itself: the ones must see it too
            pads = self._compute_causal_padding()
            inputs, ones, padding = ops.pad(inputs, pads), ops.pad(ones, pads), 'valid'

        def conv(x, kernel):
            return ops.conv(x, kernel, strides=list(self.strides), padding=padding,
                            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(conv(inputs, self.kernel),
                                     self.path_map(ones, training, conv)))


class _TransposeWithConstants(_Paths):
    def path_shape(self) -> tuple:
        return tuple(self.kernel_size) + (self.filters, 1)  # transpose kernels are (*k, out, in)

    def scale_shape(self) -> tuple:
        return (self.filters, 1)

    def call(self, inputs, training=None):
        def conv(x, kernel):
            return ops.conv_transpose(x, kernel, strides=list(self.strides), padding=self.padding,
                                      output_padding=self.output_padding,
                                      dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(conv(inputs, self.kernel),
                                     conv(_ones(self, inputs), self.path_kernel(training))))


class _SeparableWithConstants(_ConvPaths):
    def call(self, inputs, training=None):
        outputs = ops.separable_conv(inputs, self.depthwise_kernel, self.pointwise_kernel,
                                     strides=self.strides, padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)

        def conv(x, kernel):  # depthwise then 1x1 pointwise: one conv of the product kernel
            return ops.conv(x, kernel, strides=list(self.strides), padding=self.padding,
                            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(outputs, self.path_map(_ones(self, inputs), training, conv)))


def _register(cls):
    return keras.saving.register_keras_serializable(package='prunus', name=cls.__name__)(cls)


@_register
class DenseWithConstants(_Stored, _Paths, keras.layers.Dense):
    """keras.layers.Dense with a constant path (see the module docstring): one value per
    unit, added like a bias (``carried_constants`` times ``carried_scale``), plus the
    eval-mode ``eval_offset``."""

    def path_shape(self) -> tuple:
        return (self.units,)

    def base_variables(self) -> int:
        return 1 + (self.bias is not None)

    def save_own_variables(self, store):
        if self.quantization_mode is not None:
            raise ValueError(f"'{self.name}': a quantized Dense cannot keep a constant path")
        super().save_own_variables(store)

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        x = ops.add(x, self.path_kernel(training))
        return self.activation(x) if self.activation is not None else x


@_register
class Conv1DWithConstants(_ConvWithConstants, keras.layers.Conv1D):
    """keras.layers.Conv1D with a constant path (see the module docstring)."""


@_register
class Conv2DWithConstants(_ConvWithConstants, keras.layers.Conv2D):
    """keras.layers.Conv2D with a constant path (see the module docstring)."""


@_register
class Conv3DWithConstants(_ConvWithConstants, keras.layers.Conv3D):
    """keras.layers.Conv3D with a constant path (see the module docstring)."""


@_register
class Conv1DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv1DTranspose):
    """keras.layers.Conv1DTranspose with a constant path (see the module docstring)."""


@_register
class Conv2DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose with a constant path (see the module docstring)."""


@_register
class Conv3DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv3DTranspose):
    """keras.layers.Conv3DTranspose with a constant path (see the module docstring)."""


@_register
class SeparableConv1DWithConstants(_SeparableWithConstants, keras.layers.SeparableConv1D):
    """keras.layers.SeparableConv1D with a constant path (see the module docstring)."""


@_register
class SeparableConv2DWithConstants(_SeparableWithConstants, keras.layers.SeparableConv2D):
    """keras.layers.SeparableConv2D with a constant path (see the module docstring)."""


#: Keras class name -> its subclass with a constant path.
WITH_CONSTANTS = {cls.__name__.replace('WithConstants', ''): cls for cls in (
    DenseWithConstants, Conv1DWithConstants, Conv2DWithConstants, Conv3DWithConstants, Conv1DTransposeWithConstants,
    Conv2DTransposeWithConstants, Conv3DTransposeWithConstants, SeparableConv1DWithConstants,
    SeparableConv2DWithConstants)}


def with_constants(layer_type: type) -> type | None:
    """The class a layer of ``layer_type`` becomes when it gets a constant path (itself if
    it has one already); None for a type without one (a user's subclass)."""
    if issubclass(layer_type, _Paths):
        return layer_type
    return WITH_CONSTANTS.get(layer_type.__name__) if layer_type.__module__.startswith('keras') else None
