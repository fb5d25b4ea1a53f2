"""Group Taylor importance: the first-order loss change of removing a whole unit.

A unit (a channel of a tied group, an FFN neuron, an attention head) owns several
parameter slices: the producing rows and biases, the norm scale and shift of its channel,
and every consumer's input slice (for a head, its V rows and biases and its columns of the
output projection; not its Q and K rows, whose zeroing leaves the head in place with
uniform attention). Setting all of them to zero changes the loss, to first order, by
``-sum_s w_s * dL/dw_s`` over those slices. Following Molchanov et al. (2019, eq. 8) the
unit's importance is the square of that sum per batch (one backward pass), summed over
batches::

    score(u) = sum_b ( sum_{s in u} w_s * g_s(b) )^2

Unlike the per-filter criterion ``sum (w * g)^2`` it scores the unit by what removing it
does, including through the layer that reads it.

Label-free objective. Where no labels exist, the natural objective (distillation: keep
the pruned model's output close to the dense one's) has a zero gradient at the dense
model, so every Taylor score computed there is rounding noise. :class:`RandomProjectionLoss`
is the usable alternative: the loss ``sum(r * output)`` with a fresh Gaussian ``r`` per
batch. Its squared first-order change per batch has expectation ``||J_u w_u||^2``: the
squared change of the output that removing ``u`` causes (to first order), which is the
second-order term of the distillation loss. Several passes average over ``r``. The square
is taken per backward pass, so a batch of several examples adds their cross terms (zero
on average, but noise); one example per pass, each seen several times, gives the
lowest-variance scores for the same data.

Example::

    loss = RandomProjectionLoss(select=lambda out: out.last_hidden_state)
    passes = [example for _ in range(8) for example in calibration_examples]
    TaylorFOWeightFilterPruner(model, ffn_config, data=passes, criterion=loss, importance='group',
                               dependency_aware=True, dummy_input=x).compress()
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from prunus.layers.torch import specs
from .collect import Collector
from .group_importance import input_rows


class RandomProjectionLoss:
    """A label-free loss for Taylor criteria: ``sum(r * select(output))`` with ``r``
    drawn from N(0, 1) afresh at each call (see the module doc for why).

    Args:
        select: maps the model output to the tensor to project (default: the output
            itself, or its ``last_hidden_state`` / ``logits`` / first element).
        seed: seed of the private generator of ``r`` (the global RNG is untouched).

    Example::

        loss = RandomProjectionLoss(select=lambda out: out.last_hidden_state.mean(1))
        pruner = TaylorFOWeightFilterPruner(model, config_list, data=[batch] * 8,
                                            criterion=loss, importance='group',
                                            dependency_aware=True, dummy_input=batch)
    """

    def __init__(self, select: Callable[[Any], torch.Tensor] | None = None, seed: int = 0):
        if select is not None and not callable(select):
            raise TypeError(f'RandomProjectionLoss: select must be callable; got {type(select).__name__}.')
        self.select, self.seed = select, seed
        self._generator: torch.Generator | None = None

    def __call__(self, output: Any, target: Any = None) -> torch.Tensor:
        x = self.select(output) if self.select is not None else _main_tensor(output)
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError('RandomProjectionLoss: the selected output must be a floating-point '
                            f'tensor; got {type(x).__name__}. Pass select=.')
        if self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        r = torch.randn(x.shape, generator=self._generator, dtype=torch.float32)
        return (x * r.to(device=x.device, dtype=x.dtype)).sum()


def _main_tensor(output: Any) -> Any:
    if isinstance(output, torch.Tensor):
        return output
    for key in ('last_hidden_state', 'logits'):
        value = output.get(key) if isinstance(output, dict) else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return output


class GroupTaylorCollector(Collector):
    """Per module and batch: the signed sums of ``w * dL/dw`` per output channel (weight
    rows plus bias) and, for consumers, per input channel; :meth:`group_scores` squares
    their sums over each group channel."""

    def __init__(self, modules: dict[str, nn.Module], groups: list, root: nn.Module,
                 limit: int | None = None):
        watched: dict[str, nn.Module] = {}
        for group in groups:
            for name in list(group.names) + list(group.consumers):
                module = root.get_submodule(name)
                if isinstance(getattr(module, 'weight', None), torch.Tensor):
                    watched[name] = module
        super().__init__(watched or modules, limit, root)
        self.targets, self.groups = modules, groups
        self.rows: dict[str, dict[int, torch.Tensor]] = {}
        self.cols: dict[str, dict[int, torch.Tensor]] = {}
        self._consumers = {n for g in groups for n in g.consumers}

    def start(self) -> 'GroupTaylorCollector':
        super().start()
        for name, module in self.modules.items():
            for pname in ('weight', 'bias'):
                param = getattr(module, pname, None)
                if isinstance(param, torch.Tensor) and param.requires_grad:
                    self._handles.append(param.register_hook(self._hook(name, module, pname)))
        return self

    def _hook(self, name: str, module: nn.Module, pname: str):
        def record(grad):
            if not self.accepts(name):
                return
            param = getattr(module, pname)
            wg = (param.detach() * grad.detach()).double()
            if pname == 'bias' or wg.dim() == 1:
                _add(self.rows, name, self.batches, wg.reshape(-1))
            else:
                _add(self.rows, name, self.batches, specs.filter_matrix(module, wg).sum(1))
                if name in self._consumers:
                    _add(self.cols, name, self.batches, input_rows(module, wg).sum(1))
        return record

    def missing(self) -> list[str]:
        """Target layers that got no gradient (a frozen consumer may get none)."""
        return [n for n in self.targets if n not in self.rows]

    def group_scores(self, group: Any) -> torch.Tensor:
        """Per channel of ``group``: sum over batches of the squared signed sum of
        ``w * g`` over every parameter slice of that channel (float64)."""
        batches = sorted({b for n in group.names if n in self.rows for b in self.rows[n]})
        total = torch.zeros(group.size, dtype=torch.float64)
        for b in batches:
            s = torch.zeros(group.size, dtype=torch.float64)
            for name in group.names:
                if b in self.rows.get(name, {}):
                    s.index_add_(0, group.channels[name], self.rows[name][b].cpu())
            for name, (idx, pos) in group.consumers.items():
                if b in self.cols.get(name, {}):
                    s.index_add_(0, pos, self.cols[name][b].cpu()[idx])
            total += s.pow(2)
        return total


def _add(store: dict[str, dict[int, torch.Tensor]], name: str, batch: int, value: torch.Tensor) -> None:
    per_batch = store.setdefault(name, {})
    per_batch[batch] = per_batch[batch] + value if batch in per_batch else value
