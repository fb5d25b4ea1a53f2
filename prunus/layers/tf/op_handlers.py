"""Handlers for ``keras.ops`` calls inside a Functional model (``x + y``, ``ops.relu(x)``).

An op node is stateless and the rebuilt model reuses it as it is, so only ops whose
behaviour does not depend on the channel count are listed: element-wise ops, merges,
concatenation on the channel axis, reductions, transposes and ``expand_dims`` that leave
the channel axis last. Any other op (``ops.reshape``, ``ops.split``, ``ops.softmax``, ...) keeps every
channel it touches. The names are the op classes, which differ from the layers' table
(the ``Reshape`` op is not the ``Reshape`` layer).
"""
from __future__ import annotations

from .handlers import LayerHandler, MergeHandler, channel_axes


class ElementwiseOpHandler(LayerHandler):
    """Unary element-wise ops: output channel i depends on input channel i only."""


class ConcatOpHandler(LayerHandler):
    role = 'concat'

    def supports(self, op):
        axes, rank = channel_axes(op)
        return None if axes == [rank - 1] else f'concatenates on axis {op.axis}'


class ReduceOpHandler(LayerHandler):
    """``ops.mean``/``max``/``min``/``sum``/``squeeze`` over non-channel axes."""

    def supports(self, op):
        if op.axis is None:
            return 'reduces over every axis'
        axes, rank = channel_axes(op)
        return f'reduces the channel axis (axis={op.axis})' if rank - 1 in axes else None


class TransposeOpHandler(LayerHandler):
    def supports(self, op):
        rank = len(op.input.shape)
        axes = op.axes
        if axes is None or axes[-1] % rank != rank - 1:
            return f'moves the channel axis (axes={axes})'
        return None


class ExpandDimsOpHandler(LayerHandler):
    def supports(self, op):
        rank = len(op.input.shape) + 1
        axes = op.axis if isinstance(op.axis, (list, tuple)) else [op.axis]
        return 'moves the channel axis' if any(a % rank == rank - 1 for a in axes) else None


def _named(handler: LayerHandler, *names: str) -> dict[str, LayerHandler]:
    return {name: handler for name in names}


#: Supported ``keras.ops`` classes (op class name -> handler).
OP_HANDLERS: dict[str, LayerHandler] = {
    **_named(ElementwiseOpHandler(), 'Relu', 'Relu6', 'Sigmoid', 'Silu', 'Gelu', 'Tanh',
             'Absolute', 'Negative', 'Exp', 'Log', 'Square', 'Sqrt', 'Softplus', 'Softsign',
             'HardSigmoid', 'HardSilu', 'LeakyRelu', 'Elu', 'Selu', 'Celu', 'Clip',
             'Sin', 'Cos', 'Cast'),
    **_named(MergeHandler(), 'Add', 'Subtract', 'Multiply', 'Divide', 'TrueDivide', 'Maximum',
             'Minimum', 'Power'),
    'Concatenate': ConcatOpHandler(),
    **_named(ReduceOpHandler(), 'Mean', 'Max', 'Min', 'Sum', 'Squeeze'),
    'Transpose': TransposeOpHandler(),
    'ExpandDims': ExpandDimsOpHandler(),
}
