"""Per-layer-type knowledge of how to remove channels: one small class per layer type.

A handler answers four symmetric questions about a module (count/prune its input
channels, count/prune its output channels) plus two that keep the result exact: which
output channels are already dead (all-zero weights, the pruner's mask) and how to fold a
removed input channel's constant value into a constant path of the consumer, a bias-like
one or, for a zero-padded convolution, a small kernel applied to ones
(:mod:`prunus.layers.torch.constants`). Layers whose output channel ``i``
*is* input channel ``i`` (BatchNorm, depthwise conv, PReLU) say ``tied`` once; pruning
either side then prunes both.

Supported layers (``SUPPORTED_LAYERS``; the docs list from it):

=============================================  ==============================================
layer types                                    handler
=============================================  ==============================================
Conv1d, Conv2d, Conv3d                          :class:`ConvHandler` (groups, depthwise)
ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  :class:`ConvTransposeHandler`
Linear                                          :class:`LinearHandler`
Embedding                                       :class:`EmbeddingHandler`
BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm1d/2d/3d  :class:`NormHandler` (tied)
GroupNorm                                       :class:`GroupNormHandler` (whole groups)
PReLU (num_parameters > 1)                      :class:`PReLUHandler` (tied)
MultiheadAttention                              :mod:`prunus.layers.torch.mha` (heads, input features;
                                                replaced by an equivalent PrunedMultiheadAttention)
LSTM, GRU, RNN                                  :mod:`prunus.layers.torch.rnn` (input features, hidden units)
KeptChannelLayerNorm                            :class:`KeptChannelNormHandler` (tied; hidden width)
attention modules, by structure (DETECTORS)     :mod:`prunus.layers.torch.attention` (heads, head
                                                dims: HF BERT/RoBERTa/ViT/DeiT/DistilBERT/GPT-2/
                                                BART/CLIP-style, timm and torchvision Swin)
=============================================  ==============================================

Layers without a handler (activations, pooling, LayerNorm, Dropout, user blocks) are traced
through at the operator level (see :mod:`prunus.speedup.ops`). To support a new layer, write
a subclass of :class:`Handler` and pass ``custom_handlers={MyLayer: MyHandler()}``.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from prunus.layers.torch import constant_folding, constants, specs
from prunus.layers.torch.modules import KeptChannelLayerNorm


def _set(module: nn.Module, name: str, value: torch.Tensor | None) -> None:
    """Replace parameter or buffer ``name`` by ``value``, keeping its kind."""
    old = getattr(module, name)
    if old is None or value is None:
        return
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.contiguous(), old.requires_grad))
    else:
        setattr(module, name, value.contiguous())


class Handler:
    """How one layer type loses channels. Subclass and override what differs.

    Prune by assigning new tensors (``module.weight = nn.Parameter(...)``), never by
    writing into the old ones: the built-in layers are pruned on a copy that shares its
    tensors with the user's model (a custom handler's layers get their own copies first).

    Attributes:
        in_dim: channel dim of the layer's input tensor (None: no prunable input).
        out_dim: channel dim of the layer's output tensor.

    Example::

        class ScaleHandler(Handler):          # a layer with one weight per channel
            def tied(self, module):
                return True

            def count_in(self, module):
                return module.weight.numel()

            def prune_in(self, module, keep):
                module.weight = nn.Parameter(module.weight.data[keep])

        small = speedup(model, x, masks, custom_handlers={Scale: ScaleHandler()})
    """

    in_dim: int | None = 1
    out_dim: int = 1

    def handles(self, module: nn.Module) -> bool:
        """Whether this module instance is handled (else it is traced through)."""
        return True

    def tied(self, module: nn.Module) -> bool:
        """True when output channel i is input channel i (BatchNorm-like)."""
        return False

    def count_in(self, module: nn.Module) -> int:
        """The layer's number of input channels."""
        raise NotImplementedError

    def count_out(self, module: nn.Module) -> int:
        """The layer's number of output channels (by default its input channels)."""
        return self.count_in(module)

    def prune_in(self, module: nn.Module, keep: torch.Tensor) -> None:
        """Keep only input channels ``keep`` (a LongTensor of indices)."""
        raise NotImplementedError

    def prune_out(self, module: nn.Module, keep: torch.Tensor) -> None:
        """Keep only output channels ``keep`` (by default as :meth:`prune_in`)."""
        self.prune_in(module, keep)

    def dead_out(self, module: nn.Module) -> torch.Tensor:
        """Bool per output channel: its weights are all zero (the mask removed it)."""
        return torch.zeros(self.count_out(module), dtype=torch.bool)

    def killed(self, module: nn.Module) -> torch.Tensor | None:
        """Tied layers only: bool per channel (on the CPU) whose output ignores the input
        (a zero normalization scale), or None. The layer itself then produces a constant there,
        so the channels feeding it are unused unless something else reads them."""
        return None

    def groups(self, module: nn.Module) -> tuple[int, int, bool]:
        """(input groups, output groups, whole groups only): removal must be uniform."""
        return 1, 1, False

    def can_fold(self, module: nn.Module, values: torch.Tensor) -> bool:
        """Whether removed inputs with these constant values can be folded exactly."""
        return bool((values == 0).all())

    def fold_in(self, module: nn.Module, removed: torch.Tensor, values: torch.Tensor) -> None:
        """Add the contribution of constant input channels ``removed`` to the bias."""
        if bool((values != 0).any()):
            raise NotImplementedError(f'{type(self).__name__} cannot fold non-zero inputs')


class LinearHandler(Handler):
    """nn.Linear: weight (out, in); features on the last dim."""

    in_dim = -1
    out_dim = -1

    def count_in(self, module):
        return module.in_features

    def count_out(self, module):
        return module.out_features

    def prune_in(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 1, keep))
        module.in_features = len(keep)

    def prune_out(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 0, keep))
        _set(module, 'bias', None if module.bias is None else _take(module.bias.data, 0, keep))
        constants.prune_rows(module, keep)
        module.out_features = len(keep)

    def dead_out(self, module):
        return _all_zero_rows(module.weight.data) & ~constants.live_rows(
            module, module.out_features)

    def can_fold(self, module, values):
        return True

    def fold_in(self, module, removed, values):
        constant_folding.add_constants(module, removed, values)


def _take(t: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    """``t``'s entries at ``keep`` along ``dim`` (the indices may live on the CPU)."""
    return t.index_select(dim, keep.to(t.device))


def _all_zero_rows(weight: torch.Tensor) -> torch.Tensor:
    """Bool per row (dim 0) of ``weight``: every entry is zero (a NaN is not)."""
    rows = weight.flatten(1)
    return (rows.amax(1) == 0) & (rows.amin(1) == 0)  # no |w| temporary


def _add_bias(module: nn.Module, extra: torch.Tensor) -> None:
    if not bool((extra != 0).any()):
        return
    if module.bias is None:
        module.bias = nn.Parameter(extra.clone(), module.weight.requires_grad)
    else:
        _set(module, 'bias', module.bias.data + extra)


class ConvHandler(Handler):
    """nn.Conv{1,2,3}d: weight (out, in/groups, *k); depthwise (groups == in == out) is tied."""

    def tied(self, module):
        return specs.is_depthwise(module)

    def count_in(self, module):
        return module.in_channels

    def count_out(self, module):
        return module.out_channels

    def groups(self, module):
        return (1, 1, False) if self.tied(module) else (module.groups, module.groups, False)

    def prune_in(self, module, keep):
        if self.tied(module):
            self.prune_out(module, keep)
            return
        g, per = module.groups, module.in_channels // module.groups
        weight = module.weight.data
        if g == 1:
            weight = _take(weight, 1, keep)
        else:
            local = keep.view(g, -1) - torch.arange(g).unsqueeze(1) * per
            out_per = weight.shape[0] // g
            idx = local.repeat_interleave(out_per, 0).to(weight.device)
            shape = idx.shape + (1,) * (weight.dim() - 2)
            weight = weight.gather(1, idx.view(shape).expand(-1, -1, *weight.shape[2:]))
        _set(module, 'weight', weight)
        module.in_channels = len(keep)

    def prune_out(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 0, keep))
        _set(module, 'bias', None if module.bias is None else _take(module.bias.data, 0, keep))
        constants.prune_rows(module, keep)
        if self.tied(module):
            module.in_channels = module.groups = len(keep)
        module.out_channels = len(keep)

    def dead_out(self, module):
        return _all_zero_rows(module.weight.data) & ~constants.live_rows(
            module, module.out_channels)

    def can_fold(self, module, values):
        return not self.tied(module)

    def fold_in(self, module, removed, values):
        # a path that learns as the masked model's weights on the removed inputs would
        constant_folding.add_constants(module, removed, values)


class ConvTransposeHandler(Handler):
    """nn.ConvTranspose{1,2,3}d: weight (in, out/groups, *k); constants take a constant path."""

    def count_in(self, module):
        return module.in_channels

    def count_out(self, module):
        return module.out_channels

    def groups(self, module):
        return module.groups, module.groups, False

    def prune_in(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 0, keep))
        module.in_channels = len(keep)

    def can_fold(self, module, values):
        return True

    def fold_in(self, module, removed, values):
        # overlapping, strided windows make a constant's effect vary: never the bias
        if bool(values.any()):
            constant_folding.add_constants(module, removed, values)

    def prune_out(self, module, keep):
        g = module.groups
        per = module.out_channels // g
        local = keep.view(g, -1) - torch.arange(g).unsqueeze(1) * per
        weight = module.weight.data
        in_per = weight.shape[0] // g
        chunks = [_take(weight[j * in_per:(j + 1) * in_per], 1, local[j]) for j in range(g)]
        _set(module, 'weight', torch.cat(chunks, 0))
        _set(module, 'bias', None if module.bias is None else _take(module.bias.data, 0, keep))
        constants.prune_transpose_rows(module, keep)
        module.out_channels = len(keep)

    def dead_out(self, module):
        g = module.groups
        w = module.weight.data
        w = w.view(g, w.shape[0] // g, w.shape[1], -1)
        dead = (w.abs().amax((1, 3)) == 0).reshape(-1)
        return dead & ~constants.live_rows(module, module.out_channels)


class EmbeddingHandler(Handler):
    """nn.Embedding: weight (num_embeddings, embedding_dim); no input channels."""

    in_dim = None
    out_dim = -1

    def count_in(self, module):
        return 0

    def count_out(self, module):
        return module.embedding_dim

    def prune_in(self, module, keep):
        raise NotImplementedError('nn.Embedding has no input channels')

    def prune_out(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 1, keep))
        module.embedding_dim = len(keep)

    def dead_out(self, module):
        return _all_zero_rows(module.weight.data.t())


class NormHandler(Handler):
    """BatchNorm/InstanceNorm: per-channel affine and running statistics, tied."""

    def tied(self, module):
        return True

    def count_in(self, module):
        return module.num_features

    def killed(self, module):
        # scale 0 leaves only the shift: (x - mean) / std * 0 + beta (Network Slimming)
        weight = getattr(module, 'weight', None)
        if weight is None or weight.is_meta:
            return None
        zero = (weight.detach() == 0).cpu()  # labels live on the CPU whatever the device
        return zero if bool(zero.any()) else None

    def prune_in(self, module, keep):
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            value = getattr(module, name, None)
            _set(module, name, None if value is None else _take(value.data, 0, keep))
        module.num_features = len(keep)


class GroupNormHandler(Handler):
    """nn.GroupNorm: tied; statistics are per group, so only whole groups may go."""

    def tied(self, module):
        return True

    def count_in(self, module):
        return module.num_channels

    def groups(self, module):
        return module.num_groups, module.num_groups, True

    def prune_in(self, module, keep):
        per = module.num_channels // module.num_groups
        for name in ('weight', 'bias'):
            value = getattr(module, name)
            _set(module, name, None if value is None else _take(value.data, 0, keep))
        module.num_channels = len(keep)
        module.num_groups = len(keep) // per


class PReLUHandler(Handler):
    """nn.PReLU with one slope per channel (dim 1), tied."""

    def handles(self, module):
        return module.num_parameters > 1

    def tied(self, module):
        return True

    def count_in(self, module):
        return module.num_parameters

    def prune_in(self, module, keep):
        _set(module, 'weight', _take(module.weight.data, 0, keep))
        module.num_parameters = len(keep)


class KeepChannelsHandler(Handler):
    """A layer whose channels are never removed (e.g. nn.MultiheadAttention, whose
    embed_dim ties the input, every head and the output): its inputs and outputs are kept
    and the summary says so."""

    in_dim = -1
    out_dim = -1
    keeps_all = True

    def count_in(self, module):
        return getattr(module, 'embed_dim', 0)

    def prune_in(self, module, keep):
        raise NotImplementedError(f'{type(module).__name__} keeps its channels')


_CONV = ConvHandler()
_NORM = NormHandler()
HANDLERS: dict[type, Handler] = {
    nn.Conv1d: _CONV, nn.Conv2d: _CONV, nn.Conv3d: _CONV,
    nn.ConvTranspose1d: ConvTransposeHandler(), nn.ConvTranspose2d: ConvTransposeHandler(),
    nn.ConvTranspose3d: ConvTransposeHandler(),
    nn.Linear: LinearHandler(), nn.Embedding: EmbeddingHandler(),
    nn.BatchNorm1d: _NORM, nn.BatchNorm2d: _NORM, nn.BatchNorm3d: _NORM,
    nn.SyncBatchNorm: _NORM, nn.InstanceNorm1d: _NORM, nn.InstanceNorm2d: _NORM,
    nn.InstanceNorm3d: _NORM, nn.GroupNorm: GroupNormHandler(), nn.PReLU: PReLUHandler(),
    nn.MultiheadAttention: KeepChannelsHandler(),
}
SUPPORTED_LAYERS = tuple(t.__name__ for t in HANDLERS)
# the layers a speedup gave constant paths are pruned like their base layers
HANDLERS.update({swapped: HANDLERS[base] for base, swapped in constants.WITH_CONSTANTS.items()})
#: Functions ``module -> Handler | None`` tried for modules the table does not know:
#: layers recognized by their structure rather than their class (attention modules, see
#: :mod:`prunus.layers.torch.attention`).
DETECTORS: list = []


def check_custom_handlers(custom: Any) -> dict[type, Handler] | None:
    """``custom_handlers`` as given, or a TypeError naming the entry that is not
    ``{nn.Module subclass: Handler instance}``."""
    if custom is None:
        return None
    if not isinstance(custom, Mapping):
        raise TypeError('custom_handlers must be a dict {LayerType: Handler()}; '
                        f'got {type(custom).__name__}.')
    for key, handler in custom.items():
        if not (isinstance(key, type) and issubclass(key, nn.Module)):
            raise TypeError(f'custom_handlers key {key!r} must be an nn.Module subclass '
                            f'(the layer type); got {type(key).__name__}.')
        if not isinstance(handler, Handler):
            name = getattr(key, '__name__', key)
            hint = ' (pass an instance: Handler(), not the class)' if isinstance(handler, type) else ''
            raise TypeError(f'custom_handlers[{name}] must be a prunus.speedup.Handler instance; '
                            f'got {type(handler).__name__}{hint}.')
    return dict(custom)


def find_handler(module: nn.Module, custom: dict[type, Handler] | None = None) -> Handler | None:
    """The handler for ``module``: user's first, then the table; subclasses qualify only
    when they keep the base class's ``forward`` (same computation)."""
    table = {**HANDLERS, **(custom or {})}
    cls = type(module)
    handler = table.get(cls)
    if handler is None:
        for base in cls.__mro__[1:]:
            if base in table and cls.forward is base.forward:
                handler = table[base]
                break
    if handler is not None and handler.handles(module):
        return handler
    if handler is None and not (custom and cls in custom):
        for detect in DETECTORS:
            found = detect(module)
            if found is not None:
                return found
    return None


class KeptChannelNormHandler(Handler):
    """:class:`~prunus.layers.torch.modules.KeptChannelLayerNorm`: tied; its statistics
    cover only its kept channels, so removing the others changes nothing. Once every
    channel left is kept it is a plain nn.LayerNorm again."""

    in_dim = -1
    out_dim = -1

    def tied(self, module):
        return True

    def count_in(self, module):
        return module.normalized_shape[0]

    def prune_in(self, module, keep):
        for name in ('weight', 'bias'):
            value = getattr(module, name)
            _set(module, name, None if value is None else _take(value.data, 0, keep))
        module.normalized_shape = (len(keep),)
        module.keep = module.keep.index_select(0, keep.to(module.keep.device))
        if bool(module.keep.all()):
            del module._buffers['keep']
            module.__class__ = nn.LayerNorm


HANDLERS[KeptChannelLayerNorm] = KeptChannelNormHandler()
SUPPORTED_LAYERS = tuple(t.__name__ for t in HANDLERS)

# The tensor helpers, public for the handlers that live in other modules (attention, RNN).
replace_tensor, take, add_bias = _set, _take, _add_bias
