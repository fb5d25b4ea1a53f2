"""What removed constant channels leave behind in a Keras model: frozen constant paths.

A removed input channel that reaches a conv as a constant ``c_j`` (a BatchNorm shift after
a pruned filter) adds ``W_j * c_j`` to the conv's output. Without zero padding that is a
bias change; with it the constant meets the padding at the borders, so the rebuilt conv
becomes e.g. :class:`Conv2DWithConstants`, a registered subclass holding a non-trainable
weight ``carried_constants`` = ``sum_j c_j W_j`` (one input channel) and adding
``conv(ones, carried_constants)`` with its own strides, padding and dilation before the
bias and activation. Exact for any input size; no channel is kept for it, no weight of
the kept channels changes, and a non-trainable weight gets no gradient, weight decay or
optimizer state.

Which constant? A pruned filter's BatchNorm gives ``beta`` in train mode (its batch of
zeros has mean 0), but ``beta - gamma * mean / sqrt(var + eps)`` in eval mode, with the
stale statistics of the channel before it was pruned, which the masked model forgets as
its moving statistics decay during fine-tuning. So the bias and ``carried_constants``
take the train-mode constants, and the difference to the eval-mode ones is a second
non-trainable kernel, ``eval_offset``, added in eval mode only and shrunk by
``offset_decay`` (one minus the BatchNorm momentum) at every train-mode call: right after
the speedup the model equals the masked one in eval mode, and under training it computes
what the masked model computes (a Dense only gets the offset, :class:`DenseWithConstants`).
The handlers (:mod:`.handlers`) compute the kernels; this module holds the layers.
Importing it registers them, so ``keras.models.load_model`` reads a saved sped-up model
once ``prunus.speedup.tf`` (or this module) is imported.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

BUFFER = 'carried_constants'
OFFSET = 'eval_offset'
DECAY = 0.01  # 1 - BatchNormalization's default momentum: how fast stale statistics fade
FROZEN = (BUFFER, OFFSET)  # the frozen kernels, laid out by output channel like the kernel


def add_frozen(weights: dict, kernel: np.ndarray, dtype) -> None:
    """Adds ``kernel`` (float64) to the frozen constant path in a handler's ``weights``."""
    if BUFFER in weights:
        kernel = kernel + weights[BUFFER]
    weights[BUFFER] = kernel.astype(dtype)


def live_outputs(weights: dict, axis: int, n_out: int) -> np.ndarray:
    """Output channels (along ``axis`` of the frozen kernels) to which a frozen constant
    path adds something: not dead, even with all-zero filters."""
    live = np.zeros(n_out, bool)
    for name in FROZEN:
        if name in weights:
            live |= np.moveaxis(weights[name], axis, -1).reshape(-1, n_out).any(axis=0)
    return live


def _ones(layer, inputs):
    """Batch 1, one channel, the input's spatial size: what a constant channel looks like."""
    if layer.data_format != 'channels_last':
        raise ValueError(f"'{layer.name}': frozen constant paths need channels_last")
    return ops.ones_like(inputs[:1, ..., :1])


def _finish(layer, outputs):
    """Bias and activation, as the base layers apply them."""
    if layer.use_bias:
        outputs = ops.add(outputs, ops.reshape(layer.bias, (1,) * (layer.rank + 1) + (layer.filters,)))
    return layer.activation(outputs) if layer.activation is not None else outputs


class _DecayingOffset:
    """The ``offset_decay`` setting shared by every layer with an eval offset."""

    def __init__(self, *args, offset_decay: float = DECAY, **kwargs):
        super().__init__(*args, **kwargs)
        self.offset_decay = float(offset_decay)

    def get_config(self):
        return {**super().get_config(), 'offset_decay': self.offset_decay}


class _WithConstants(_DecayingOffset):
    """The conv plus its frozen constant paths (see the module docstring)."""

    FROZEN = (BUFFER, OFFSET)  # its non-trainable weights, in this order

    def build(self, input_shape):
        super().build(input_shape)
        # zeros until the speedup sets them; trainable=False keeps them out of fit's updates
        for name in (BUFFER, OFFSET):
            setattr(self, name, self.add_weight(name=name, shape=self.constants_shape(),
                                                initializer='zeros', trainable=False,
                                                dtype=self.dtype))

    def constants_shape(self) -> tuple:
        """Shape of the frozen kernels: the layer's kernel with one input channel."""
        return tuple(self.kernel_size) + (1, self.filters)

    def frozen_map(self, ones, training, conv):
        """What the frozen paths add: ``conv(ones, kernel)``, or, where no padding reaches
        the kernel (every output sees every tap), the kernel's sum: one add per call."""
        kernel = self.frozen_kernel(training)
        if self.padding == 'valid' or all(k == 1 for k in self.kernel_size):
            return ops.sum(ops.reshape(kernel, (-1, self.filters)), axis=0)
        return conv(ones, kernel)

    def frozen_kernel(self, training):
        """The constants in train mode; plus the eval offset in eval mode. A train-mode
        call shrinks the offset, as the masked model's stale statistics shrink."""
        if training:
            self.eval_offset.assign(self.eval_offset * (1.0 - self.offset_decay))
            return self.carried_constants
        return ops.add(self.carried_constants, self.eval_offset)


class _ConvWithConstants(_WithConstants):
    # Keras's base conv saves and loads its kernel and bias only (by position): the frozen
    # kernels go after them
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built:
            first = 1 + bool(self.use_bias)
            store[str(first)], store[str(first + 1)] = self.carried_constants, self.eval_offset

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            first = 1 + bool(self.use_bias)
            self.carried_constants.assign(store[str(first)])
            self.eval_offset.assign(store[str(first + 1)])

    def call(self, inputs, training=None):
        ones, padding = _ones(self, inputs), self.padding
        if padding == 'causal':  # Conv1D pads on the left itself: the ones must see it too
            pads = self._compute_causal_padding()
            inputs, ones, padding = ops.pad(inputs, pads), ops.pad(ones, pads), 'valid'

        def conv(x, kernel):
            return ops.conv(x, kernel, strides=list(self.strides), padding=padding,
                            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(conv(inputs, self.kernel),
                                     self.frozen_map(ones, training, conv)))


class _TransposeWithConstants(_WithConstants):
    def constants_shape(self) -> tuple:
        return tuple(self.kernel_size) + (self.filters, 1)  # transpose kernels are (*k, out, in)

    def call(self, inputs, training=None):
        def conv(x, kernel):
            return ops.conv_transpose(x, kernel, strides=list(self.strides), padding=self.padding,
                                      output_padding=self.output_padding,
                                      dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(conv(inputs, self.kernel),
                                     conv(_ones(self, inputs), self.frozen_kernel(training))))


class _SeparableWithConstants(_WithConstants):
    def call(self, inputs, training=None):
        outputs = ops.separable_conv(inputs, self.depthwise_kernel, self.pointwise_kernel,
                                     strides=self.strides, padding=self.padding,
                                     dilation_rate=self.dilation_rate, data_format=self.data_format)
        def conv(x, kernel):  # depthwise then 1x1 pointwise: one conv of the product kernel
            return ops.conv(x, kernel, strides=list(self.strides), padding=self.padding,
                            dilation_rate=self.dilation_rate, data_format=self.data_format)
        return _finish(self, ops.add(outputs, self.frozen_map(_ones(self, inputs), training, conv)))


def _register(cls):
    return keras.saving.register_keras_serializable(package='prunus', name=cls.__name__)(cls)


@_register
class DenseWithConstants(_DecayingOffset, keras.layers.Dense):
    """keras.layers.Dense with a frozen eval-mode offset (see the module docstring): its
    train-mode constants are in the bias, so only ``eval_offset`` (one per unit) is kept."""

    FROZEN = (OFFSET,)

    def build(self, input_shape):
        super().build(input_shape)
        self.eval_offset = self.add_weight(name=OFFSET, shape=(self.units,), initializer='zeros',
                                           trainable=False, dtype=self.dtype)

    def save_own_variables(self, store):
        if self.quantization_mode is not None:
            raise ValueError(f"'{self.name}': a quantized Dense cannot keep an eval offset")
        super().save_own_variables(store)
        if self.built:
            store[str(1 + (self.bias is not None))] = self.eval_offset

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built:
            self.eval_offset.assign(store[str(1 + (self.bias is not None))])

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if training:
            self.eval_offset.assign(self.eval_offset * (1.0 - self.offset_decay))
        else:
            x = ops.add(x, self.eval_offset)
        return self.activation(x) if self.activation is not None else x


@_register
class Conv1DWithConstants(_ConvWithConstants, keras.layers.Conv1D):
    """keras.layers.Conv1D with a frozen constant path (see the module docstring)."""


@_register
class Conv2DWithConstants(_ConvWithConstants, keras.layers.Conv2D):
    """keras.layers.Conv2D with a frozen constant path (see the module docstring)."""


@_register
class Conv3DWithConstants(_ConvWithConstants, keras.layers.Conv3D):
    """keras.layers.Conv3D with a frozen constant path (see the module docstring)."""


@_register
class Conv1DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv1DTranspose):
    """keras.layers.Conv1DTranspose with a frozen constant path (see the module docstring)."""


@_register
class Conv2DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv2DTranspose):
    """keras.layers.Conv2DTranspose with a frozen constant path (see the module docstring)."""


@_register
class Conv3DTransposeWithConstants(_TransposeWithConstants, keras.layers.Conv3DTranspose):
    """keras.layers.Conv3DTranspose with a frozen constant path (see the module docstring)."""


@_register
class SeparableConv1DWithConstants(_SeparableWithConstants, keras.layers.SeparableConv1D):
    """keras.layers.SeparableConv1D with a frozen constant path (see the module docstring)."""


@_register
class SeparableConv2DWithConstants(_SeparableWithConstants, keras.layers.SeparableConv2D):
    """keras.layers.SeparableConv2D with a frozen constant path (see the module docstring)."""


#: Keras class name -> its subclass with a frozen constant path.
WITH_CONSTANTS = {cls.__name__.replace('WithConstants', ''): cls for cls in (
    DenseWithConstants, Conv1DWithConstants, Conv2DWithConstants, Conv3DWithConstants, Conv1DTransposeWithConstants,
    Conv2DTransposeWithConstants, Conv3DTransposeWithConstants, SeparableConv1DWithConstants,
    SeparableConv2DWithConstants)}


def with_constants(layer_type: type) -> type | None:
    """The class a layer of ``layer_type`` becomes when it gets a frozen constant path
    (itself if it has one already); None for a type without one (a user's subclass)."""
    if issubclass(layer_type, (_WithConstants, DenseWithConstants)):
        return layer_type
    return WITH_CONSTANTS.get(layer_type.__name__) if layer_type.__module__.startswith('keras') else None
