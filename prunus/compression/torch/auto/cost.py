"""What an allocation of per-layer channel sparsities costs: parameters and FLOPs.

Which layers can lose channels on their own comes from the speedup's dependency
analysis (:func:`prunus.speedup.dependency_groups`): a conv or linear layer alone in its
channel group (no residual tie) and not feeding the output. Removing output channels of
such a layer also removes input channels downstream (through BatchNorm, activations,
depthwise convs, pooling, flatten, concatenation). :class:`CostModel` *measures* how
much once per layer: it zeroes half the layer's output channels (exactly what a channel
mask does) and sees which channels of which layers become constant over a random batch
-- a constant channel is dead and the speedup removes it. Costs of any allocation are
then a closed form, fast enough for a search to call thousands of times::

    cost = CostModel(model, torch.randn(1, 3, 32, 32), ['conv1', 'conv2'])
    cost.flops({'conv1': 0.5, 'conv2': 0.25})    # FLOPs left after a speedup
    cost.useful                                  # search variables: lone layers, tied units

Layers tied through residual adds cannot shrink alone; each such group that the
speedup can shrink as a whole is a :class:`~.units.SearchUnit` (``cost.tied``), keyed
by its first member: an allocation's value for the key removes the same channels from
every member, and the probe zeroes them in every member together.

:func:`pruned_flops` measures the real thing on the sped-up model.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from prunus.speedup.core import speedup
from prunus.speedup.dependency import dependency_groups

from ...allocation import prune_count
from prunus.layers.torch import specs
from ..flops import call_model, module_flops
from ..head_groups import HeadGroup
from .units import tied_units

_REL_TOL = 1e-9


def _weighted_leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules()
            if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))}


def _channel_dim(module: nn.Module, tensor: torch.Tensor) -> int:
    return tensor.dim() - 1 if tensor.dim() < 2 else specs.activation_channel_dim(module) % tensor.dim()


def _dead_channels(module: nn.Module, tensor: Any) -> torch.Tensor | None:
    """Which channels of ``tensor`` are identical across the batch (a bool vector)."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2 or not tensor.is_floating_point():
        return None
    dim = _channel_dim(module, tensor)
    moved = tensor.detach().double().movedim(dim, 1).reshape(tensor.shape[0], tensor.shape[dim], -1)
    spread = (moved - moved[:1]).abs().amax(dim=(0, 2))
    scale = float(moved.abs().max()) or 1.0
    return spread <= _REL_TOL * scale


def _zero_channels(index: torch.Tensor):
    def hook(module, args, output):
        output = output.clone()
        output.index_fill_(_channel_dim(module, output), index.to(output.device), 0.0)
        return output
    return hook


@torch.no_grad()
def dead_fractions(model: nn.Module, inputs: Any, leaves: Mapping[str, nn.Module],
                   zeroed: Mapping[str, torch.Tensor] | None = None) -> dict[str, tuple[Any, Any]]:
    """Per leaf layer, its dead input and output channels (bool vectors, None when not a
    channelled tensor) on ``inputs``, with the output channels in ``zeroed`` (name ->
    channel indices) forced to zero."""
    seen: dict[str, tuple[Any, Any]] = {}
    handles = []
    for name, index in (zeroed or {}).items():
        handles.append(leaves[name].register_forward_hook(_zero_channels(index)))
    for name, module in leaves.items():
        def record(mod, args, output, name=name):
            seen[name] = (_dead_channels(mod, args[0] if args else None), _dead_channels(mod, output))
        handles.append(module.register_forward_hook(record))
    try:
        call_model(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def probe_copy(model: nn.Module) -> nn.Module:
    """A copy to probe: eval mode except BatchNorm, which normalizes with batch statistics
    so that an untrained model's activations neither saturate nor vanish (a constant
    channel stays constant either way)."""
    probe = copy.deepcopy(model).eval()
    for module in probe.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.train()
    return probe


def _newly_dead(dead: torch.Tensor | None, before: torch.Tensor | None) -> tuple[int, int] | None:
    """(channels dead now but not before, channel count), or None when none died."""
    if dead is None:
        return None
    fresh = int((dead & ~before).sum()) if before is not None and before.shape == dead.shape else int(dead.sum())
    return (fresh, dead.numel()) if fresh else None


def probe_input(dummy_input: Any, batch: int = 8, seed: int = 0) -> Any:
    """A random batch shaped like ``dummy_input`` (a tensor, or a tuple/dict of tensors);
    integer tensors such as token ids get random values in the example's range."""
    generator = torch.Generator().manual_seed(seed)

    def one(t: Any) -> Any:
        if not isinstance(t, torch.Tensor) or t.dim() == 0:
            return t
        shape = (batch, *t.shape[1:])
        if t.is_floating_point():
            return torch.randn(shape, generator=generator, dtype=t.dtype).to(t.device)
        # token ids and the like: random values from the range the example uses
        high = max(int(t.max()) + 1, 2)
        return torch.randint(int(t.min()), high, shape, generator=generator, dtype=t.dtype).to(t.device)
    if isinstance(dummy_input, dict):
        return {k: one(v) for k, v in dummy_input.items()}
    if isinstance(dummy_input, (tuple, list)):
        return type(dummy_input)(one(t) for t in dummy_input)
    if not isinstance(dummy_input, torch.Tensor) or dummy_input.dim() == 0:
        raise TypeError('counting FLOPs after pruning needs dummy_input as a batched tensor, or a tuple or '
                        f'dict holding batched tensors; got {type(dummy_input).__name__}.')
    return one(dummy_input)


def _channelwise(module: nn.Module) -> bool:
    """A layer whose output channel i depends on input channel i alone."""
    if isinstance(module, specs.CONV + specs.CONV_TRANSPOSE):
        return specs.is_depthwise(module)
    return not isinstance(module, (nn.Linear, nn.Bilinear) + specs.EMBEDDING)


@torch.no_grad()
def called_more_than_once(model: nn.Module, dummy_input: Any, names: list[str]) -> set[str]:
    """Layers the forward pass calls several times (a shared module feeding itself
    cannot lose output channels without losing input channels too)."""
    calls: dict[str, int] = {}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_pre_hook(lambda m, a, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
               for n in names]
    was_training = model.training
    try:
        call_model(model.eval(), dummy_input)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {n for n, count in calls.items() if count > 1}


def _layer_groups(model: nn.Module, dummy_input: Any, names: list[str]) -> tuple[list[Any], set[str]]:
    """The speedup's channel groups of ``model`` and which of ``names`` run more than once."""
    return dependency_groups(model, dummy_input), called_more_than_once(model, dummy_input, names)


def _alone(groups: list[Any], modules: Mapping[str, nn.Module], names: list[str],
           shared: set[str]) -> dict[str, dict[str, torch.Tensor]]:
    alone: dict[str, dict[str, torch.Tensor]] = {}
    for group in groups:
        mixing = [n for n in group.names if specs.mixes_channels(modules[n])]
        blocked = group.blocked is not None and bool(group.blocked.any())
        if len(mixing) != 1 or blocked or group.groups != 1 or mixing[0] not in names or mixing[0] in shared:
            continue
        own = group.channels[mixing[0]]
        to_layer = torch.full((group.size,), -1, dtype=torch.long)
        to_layer[own] = torch.arange(len(own))
        alone[mixing[0]] = {n: to_layer[group.channels[n]] for n in group.names if n != mixing[0]}
    return {n: alone[n] for n in names if n in alone}


def removable_alone(model: nn.Module, dummy_input: Any, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """Those of ``names`` whose output channels the speedup removes when only they lose
    them, each with its channel followers.

    A layer qualifies when it is the only conv/linear of its channel group (no residual
    tie), the group is not blocked (not the model output, no op needing every channel)
    and not split by a grouped conv. Its followers are the BatchNorm and depthwise layers
    tied to it: ``{follower: index}`` where the follower's channel ``j`` carries the
    layer's channel ``index[j]`` (-1: a channel from elsewhere, e.g. the other input of
    a concat). Masking the followers too makes a pruned channel exactly
    zero, so the speedup can drop it even after training gave its BatchNorm a bias.
    """
    groups, shared = _layer_groups(model, dummy_input, names)
    return _alone(groups, dict(model.named_modules()), names, shared)


class CostModel:
    """Parameters and FLOPs of a model after removing output channels of some layers.

    Args:
        model: the model (left unchanged).
        dummy_input: an example input; its batch size does not matter.
        prunable: names of layers (Conv/Linear/ConvTranspose) that may lose output channels.
        heads: attention groups searched by heads, by key (the attention module's name);
            an allocation's value for a key is the fraction of its heads removed.
    """

    def __init__(self, model: nn.Module, dummy_input: Any, prunable: list[str],
                 heads: Mapping[str, HeadGroup] | None = None):
        self.leaves = _weighted_leaves(model)
        modules = dict(model.named_modules())
        self.channels = {n: specs.out_channels(modules[n]) for n in prunable}
        self.inputs = probe_input(dummy_input)  # validates dummy_input before anything runs
        flops = module_flops(model, dummy_input)
        self.total_flops = int(flops.get('', 0))
        self.total_params = sum(p.numel() for p in model.parameters())
        self.base_flops = {n: int(flops.get(n, 0)) for n in self.leaves}
        self.base_params = {n: sum(p.numel() for p in m.parameters(recurse=False)) for n, m in self.leaves.items()}
        #: a Linear's or conv's bias loses only the output channels, not the input ones
        self.base_bias = {n: m.bias.numel() for n, m in self.leaves.items()
                          if isinstance(getattr(m, 'bias', None), torch.Tensor)}
        self.channelwise = {n: _channelwise(m) for n, m in self.leaves.items()}
        groups, shared = _layer_groups(model, dummy_input, prunable)
        #: prunable layers whose channels a speedup can remove on their own: the only
        #: conv/linear of their channel group (no residual tie) and not blocked (not the output)
        self.followers = _alone(groups, modules, prunable, shared)
        #: tied groups searched as one variable, keyed by their first member; an
        #: allocation's value for the key prunes the same channels in every member
        self.tied = tied_units(groups, modules, prunable, shared, specs.mixes_channels)
        for key, unit in self.tied.items():
            self.channels[key] = unit.size
        self.useful = [n for n in prunable if n in self.followers or n in self.tied]
        model = probe_copy(model)
        self.leaves = _weighted_leaves(model)
        reference = dead_fractions(model, self.inputs, self.leaves)
        self.coef_in: dict[str, dict[str, float]] = {}
        self.coef_out: dict[str, dict[str, float]] = {}
        for name in self.useful:
            self._probe(model, name, reference)
        #: attention groups searched by heads: key -> head count
        self.heads: dict[str, int] = {}
        self.head_own_flops: dict[str, int] = {}
        self.head_own_params: dict[str, int] = {}
        for key, group in (heads or {}).items():
            self._add_heads(dict(model.named_modules()), key, group, flops)

    def _add_heads(self, modules: Mapping[str, nn.Module], key: str, group: HeadGroup,
                   flops: Mapping[str, int]) -> None:
        """Head costs are known without probing: a head owns a share of the Q/K/V
        outputs and of the output projection's inputs, and the attention module's own
        work (the attention kernel; nn.MultiheadAttention's packed projections) and own
        parameters scale with the number of heads."""
        lay = group.layout
        self.heads[key] = self.channels[key] = lay.num_heads
        for s, table in ((lay.q, self.coef_out), (lay.k, self.coef_out), (lay.v, self.coef_out),
                         (lay.out, self.coef_in)):
            if s.module in self.leaves and s.module != key:
                size = getattr(modules[s.module], s.weight).shape[s.axis]
                row = table.setdefault(s.module, {})
                row[key] = row.get(key, 0.0) + (s.stop - s.start) / size
        attention = modules[key]
        if key in self.leaves:
            self.coef_out.setdefault(key, {})[key] = 1.0
            return
        children = sum(flops.get(f'{key}.{c}', 0) for c, _ in attention.named_children())
        self.head_own_flops[key] = max(0, int(flops.get(key, 0)) - children)
        self.head_own_params[key] = sum(p.numel() for p in attention.parameters(recurse=False))

    def _zeroing(self, name: str, channels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Which output channels of which layers to zero so ``name`` loses ``channels``
        (unit channels for a tied unit: every member loses them together)."""
        if name not in self.tied:
            return {name: channels}
        unit = self.tied[name]
        chosen = torch.zeros(unit.size, dtype=torch.bool)
        chosen[channels] = True
        zeroed = {}
        for member in unit.members:
            index = unit.index[member]
            zeroed[member] = torch.nonzero((index >= 0) & chosen[index.clamp(min=0)]).flatten()
        return zeroed

    def _probe(self, model: nn.Module, name: str, reference: dict[str, tuple[Any, Any]]) -> None:
        """Records which channels die when ``name`` loses ``k`` channels.

        A real dependency kills a multiple of ``k`` channels of a consumer (``k`` through
        BatchNorm or a concat, ``k * h * w`` features after a flatten), and does so for
        the first and for the last ``k`` channels alike; channels that die by chance (a
        ReLU that happens to be off for the whole batch) are rejected by that test.
        """
        count = self.channels[name]
        k = max(1, count // 2)
        probes = [dead_fractions(model, self.inputs, self.leaves, self._zeroing(name, index))
                  for index in (torch.arange(k), torch.arange(count - k, count))]
        for leaf in probes[0]:
            for side, table in ((0, self.coef_in), (1, self.coef_out)):
                before = reference.get(leaf, (None, None))[side]
                newly = [_newly_dead(p.get(leaf, (None, None))[side], before) for p in probes]
                if newly[0] and newly[0] == newly[1] and newly[0][0] % k == 0:
                    table.setdefault(leaf, {})[name] = newly[0][0] / newly[0][1] * count / k

    def _keep(self, leaf: str, fractions: Mapping[str, float]) -> float:
        dead_in = min(1.0, sum(c * fractions.get(p, 0.0) for p, c in self.coef_in.get(leaf, {}).items()))
        dead_out = min(1.0, sum(c * fractions.get(p, 0.0) for p, c in self.coef_out.get(leaf, {}).items()))
        if self.channelwise[leaf]:
            return 1.0 - max(dead_in, dead_out)
        return (1.0 - dead_in) * (1.0 - dead_out)

    def pruned(self, name: str, sparsity: float) -> int:
        """Units (channels, heads) of variable ``name`` that ``sparsity`` removes; an
        attention keeps one head."""
        count = prune_count(self.channels[name], sparsity)
        return min(count, self.channels[name] - 1) if name in self.heads else count

    def fractions(self, allocation: Mapping[str, float]) -> dict[str, float]:
        """The fraction of channels (heads) each variable really loses (whole units)."""
        return {n: self.pruned(n, s) / self.channels[n] for n, s in allocation.items() if n in self.channels}

    def flops(self, allocation: Mapping[str, float]) -> float:
        """Estimated FLOPs after pruning ``allocation`` (layer -> channel sparsity)."""
        frac = self.fractions(allocation)
        own = sum(b * frac.get(k, 0.0) for k, b in self.head_own_flops.items())
        return self.total_flops - own - sum(b * (1.0 - self._keep(n, frac)) for n, b in self.base_flops.items())

    def params(self, allocation: Mapping[str, float]) -> float:
        """Estimated parameter count after pruning ``allocation``."""
        frac = self.fractions(allocation)
        own = sum(b * frac.get(k, 0.0) for k, b in self.head_own_params.items())
        return self.total_params - own - sum(self._lost_params(n, frac) for n in self.base_params)

    def _lost_params(self, leaf: str, fractions: Mapping[str, float]) -> float:
        bias = 0 if self.channelwise[leaf] else self.base_bias.get(leaf, 0)
        weights = self.base_params[leaf] - bias
        dead_out = min(1.0, sum(c * fractions.get(p, 0.0) for p, c in self.coef_out.get(leaf, {}).items()))
        return weights * (1.0 - self._keep(leaf, fractions)) + bias * dead_out

    def unit_flops(self, name: str, members: list[str]) -> float:
        """FLOPs a variable's layers run: its ``members``' own, or for an attention searched
        by heads, the share of every layer its heads reach plus the attention's own."""
        if name not in self.heads:
            return float(sum(self.base_flops.get(n, 0) for n in members))
        reach = sum(b * max(self.coef_in.get(n, {}).get(name, 0.0), self.coef_out.get(n, {}).get(name, 0.0))
                    for n, b in self.base_flops.items())
        return float(self.head_own_flops.get(name, 0) + reach)

    def params_of(self, names: list[str], allocation: Mapping[str, float]) -> float:
        """Estimated parameters of the layers ``names`` after pruning ``allocation``
        (their inputs shrink too when a producer loses channels)."""
        frac = self.fractions(allocation)
        return sum(self.base_params.get(n, 0) * self._keep(n, frac) for n in names)

    def layer_flops(self, name: str, allocation: Mapping[str, float]) -> float:
        """Estimated FLOPs of one layer under ``allocation``."""
        return self.base_flops.get(name, 0) * self._keep(name, self.fractions(allocation))

    def flops_reduction(self, allocation: Mapping[str, float]) -> float:
        """Fraction of the model's FLOPs ``allocation`` removes."""
        return 1.0 - self.flops(allocation) / self.total_flops if self.total_flops else 0.0


def pruned_flops(model: nn.Module, dummy_input: Any, masks: Any = None) -> int:
    """FLOPs of ``model`` after the speedup removes its masked channels (``masks``, or
    the masks attached to the model); the model itself is not changed.

    Args:
        model: the model.
        dummy_input: the input to count FLOPs on.
        masks: a mask dict, file or pruner (default: the masks on the model).

    Returns:
        The FLOPs of the sped-up model.

    Example::

        pruned_flops(model, torch.randn(1, 3, 32, 32), pruner)
    """
    _, summary = speedup(model, dummy_input, masks, return_summary=True)
    return int(summary.flops_after)
