"""Head importance: weight norms, and activation/Taylor statistics of the output
projection's input, gathered with hooks while the user's forward_runner runs."""
from __future__ import annotations

from typing import Any

from dataclasses import replace

import torch
from torch import nn

from prunus.layers.torch.heads import Slice, head_index
from prunus.layers.torch.modules import PrunedMultiheadAttention, to_head_pruned
from .head_groups import HeadGroup



def _head_blocks(weight: torch.Tensor, axis: int, s: Slice, heads: int, dim: int) -> torch.Tensor:
    """(heads, -1): the rows (or columns) of each head (or head dimension) of slice ``s``."""
    index = head_index(replace(s, stride=0) if dim == 1 else s, torch.arange(heads), dim)
    part = weight.detach().movedim(axis, 0).index_select(0, index.to(weight.device))
    return part.reshape(heads, -1).double()


def weight_scores(model: nn.Module, group: HeadGroup, p: int, per_dim: bool = False) -> torch.Tensor:
    """Per head (or, ``per_dim``, per head dimension: shape (heads, dim)): the mean over
    Q, K and V of the Lp norm of its weights."""
    lay = group.layout
    units = lay.inner if per_dim else lay.num_heads
    total = torch.zeros(units, dtype=torch.float64)
    for s in (lay.q, lay.k, lay.v):
        weight = getattr(model.get_submodule(s.module), s.weight)
        share = 1 if s is lay.q else lay.num_heads // lay.kv_heads  # GQA: K/V heads shared
        blocks = _head_blocks(weight, s.axis, s, units // share, lay.inner // units)
        total += torch.linalg.vector_norm(blocks, p, dim=1).cpu().repeat_interleave(share)
    total /= 3
    return total.view(lay.num_heads, lay.head_dim) if per_dim else total


def _reduce(x: torch.Tensor, heads: int, criterion: str, per_dim: bool = False) -> torch.Tensor:
    """Per head (``per_dim``: per head dimension) statistic of an output-projection input
    ``x`` (..., heads * dim)."""
    per_head = x.detach().double().reshape(-1, heads, x.shape[-1] // heads)
    if per_dim:
        if criterion == 'l2_activation':
            return torch.linalg.vector_norm(per_head, 2, dim=0).cpu()
        return per_head.abs().sum(0).cpu()
    if criterion == 'l2_activation':
        return torch.linalg.vector_norm(per_head, 2, dim=2).sum(0).cpu()
    return per_head.abs().sum((0, 2)).cpu()


class HeadStatistics:
    """Hooks on each group's output projection that sum a per-head statistic of its input
    (``l1_activation``, ``l2_activation``, or ``taylorfo``: |x * dL/dx|)."""

    def __init__(self, model: nn.Module, groups: list[HeadGroup], criterion: str,
                 per_dim: bool = False):
        self.model, self.groups, self.criterion, self.per_dim = model, groups, criterion, per_dim
        self.totals = [torch.zeros((g.num_heads, g.layout.head_dim) if per_dim else g.num_heads,
                                   dtype=torch.float64) for g in groups]
        self.batches = 0
        self._handles: list[Any] = []

    def start(self) -> 'HeadStatistics':
        self._swaps = _stand_ins(self.model, self.groups)
        for i, group in enumerate(self.groups):
            out = group.layout.out
            module = self.model.get_submodule(out.module)
            self._handles.append(module.register_forward_pre_hook(self._hook(i, group)))
        return self

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for restore in reversed(getattr(self, '_swaps', [])):
            restore()
        self._swaps = []

    def _hook(self, index: int, group: HeadGroup):
        heads, inner = group.num_heads, group.layout.inner

        def record(module, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor) or x.shape[-1] != inner:
                return
            if index == 0:
                self.batches += 1
            if self.criterion != 'taylorfo':
                self.totals[index] += _reduce(x, heads, self.criterion, self.per_dim)
            elif x.requires_grad:
                saved = x.detach()

                def on_grad(grad):
                    self.totals[index] += _reduce(saved * grad, heads, 'taylorfo', self.per_dim)
                x.register_hook(on_grad)
        return record

    def scores(self, index: int) -> torch.Tensor:
        if self.criterion == 'taylorfo' and not bool(self.totals[index].any()):
            name = self.groups[index].name
            raise ValueError(f"TransformerHeadPruner: no gradient reached the output projection of "
                             f"'{name}'; with ranking_criterion='taylorfo' the forward_runner (or "
                             'trainer) must call loss.backward().')
        return self.totals[index]


def _stand_ins(model: nn.Module, groups: list[HeadGroup]) -> list:
    """While statistics are gathered, attention modules that use their output projection's
    weight directly (nn.MultiheadAttention, torchvision Swin) are run by equivalents that
    call it as a module, so its hooks see the heads' outputs. Returns the undo steps."""
    undo = []
    names = {g.name for g in groups}
    for name, module in list(model.named_modules()):
        if name not in names:
            continue
        if isinstance(module, nn.MultiheadAttention):
            parent_name, _, attr = name.rpartition('.')
            parent = model.get_submodule(parent_name) if parent_name else model
            stand_in = PrunedMultiheadAttention.from_mha(module, share=True)
            stand_in.train(module.training)
            setattr(parent, attr, stand_in)
            undo.append(lambda p=parent, a=attr, m=module: setattr(p, a, m))
        else:
            cls = type(module)
            to_head_pruned(module, getattr(module, 'head_dim', 0) or _head_dim(groups, name))
            if type(module) is not cls:
                undo.append(lambda m=module, c=cls: setattr(m, '__class__', c))
    return undo


def _head_dim(groups: list[HeadGroup], name: str) -> int:
    return next(g.layout.head_dim for g in groups if g.name == name)


class HeadTaylorGroup:
    """Group Taylor scores of heads (``taylorfo_group``): per batch (one model call) the
    signed sum of ``w * dL/dw`` over each head's V rows and biases and its output columns,
    the first-order loss change of removing the head; squared, summed over batches (see
    :mod:`prunus.compression.torch.taylor_group`). Q and K rows are left out: zeroing them
    does not remove the head (its attention becomes uniform), so their gradient estimates
    another change. Same interface as :class:`HeadStatistics`."""

    def __init__(self, model: nn.Module, groups: list[HeadGroup], per_dim: bool = False):
        self.model, self.groups, self.per_dim = model, groups, per_dim
        self.signed: list[dict[int, torch.Tensor]] = [{} for _ in groups]
        self.batches = 0
        self._handles: list[Any] = []

    def _units(self, group: HeadGroup) -> int:
        return group.layout.inner if self.per_dim else group.num_heads

    def start(self) -> 'HeadTaylorGroup':
        self._handles.append(self.model.register_forward_pre_hook(self._count))
        uses: dict[int, tuple[torch.Tensor, list]] = {}
        for i, group in enumerate(self.groups):
            lay = group.layout
            # under grouped-query attention a V head serves several query heads and goes
            # with none of them alone: only the output columns are a query head's own
            owned = (lay.out,) if lay.kv_heads != lay.num_heads else (lay.v, lay.out)
            for s in owned:
                module = self.model.get_submodule(s.module)
                for pname, axis in ((s.weight, s.axis), (s.bias, 0)):
                    if pname is None or (s is lay.out and pname == s.bias):
                        continue  # the output bias is no head's
                    param = getattr(module, pname)
                    uses.setdefault(id(param), (param, []))[1].append((i, axis, s))
        for param, slices in uses.values():
            if param.requires_grad:
                self._handles.append(param.register_hook(self._hook(param, slices)))
        return self

    def _count(self, module, args) -> None:
        self.batches += 1

    def _hook(self, param: torch.Tensor, slices: list):
        def record(grad):
            wg = param.detach() * grad.detach()
            for i, axis, piece in slices:
                units = self._units(self.groups[i])
                part = _head_blocks(wg, axis, piece, units, self.groups[i].layout.inner // units)
                value = part.sum(1).cpu()
                store = self.signed[i]
                store[self.batches] = store[self.batches] + value if self.batches in store else value
        return record

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def scores(self, index: int) -> torch.Tensor:
        store = self.signed[index]
        if not store:
            name = self.groups[index].name
            raise ValueError(f"TransformerHeadPruner: no gradient reached the projections of '{name}'; "
                             "with ranking_criterion='taylorfo_group' the forward_runner (or trainer) "
                             'must call loss.backward().')
        total = sum(v.pow(2) for v in store.values())
        lay = self.groups[index].layout
        return total.view(lay.num_heads, lay.head_dim) if self.per_dim else total
