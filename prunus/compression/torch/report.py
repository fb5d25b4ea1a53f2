"""The sparsity report: what the masks removed, layer by layer."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prunus.layers.torch import specs
from .flops import module_flops


@dataclass(frozen=True)
class LayerReport:
    """One pruned layer. FLOPs are None when no input was given to count them."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    sparsity: float
    params: int
    params_kept: int
    channels: int | None
    channels_kept: int | None
    flops: int | None
    flops_kept: int | None


class SparsityReport:
    """Rows of :class:`LayerReport`; ``str()`` renders a table, ``to_dict()`` plain data.

    Example::

        report = pruner.sparsity_report(torch.randn(1, 3, 224, 224))
        print(report)                     # a table, one row per pruned layer
        report['layer1.0.conv1'].sparsity
    """

    def __init__(self, rows: list[LayerReport]):
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerReport:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(name)

    @property
    def total_params(self) -> int:
        """Weights of all reported layers."""
        return sum(r.params for r in self.rows)

    @property
    def total_params_kept(self) -> int:
        """Non-masked weights of all reported layers."""
        return sum(r.params_kept for r in self.rows)

    @property
    def sparsity(self) -> float:
        """The fraction of all reported weights that is masked."""
        return 1.0 - self.total_params_kept / max(self.total_params, 1)

    def to_dict(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (for JSON or pandas)."""
        return [asdict(row) for row in self.rows]

    def __str__(self) -> str:
        header = ('layer', 'type', 'shape', 'sparsity', 'params kept', 'channels kept', 'FLOPs kept')
        lines = [header]
        for r in self.rows:
            channels = '-' if r.channels is None else f'{r.channels_kept}/{r.channels}'
            flops = '-' if r.flops is None else f'{r.flops_kept:,}/{r.flops:,}'
            lines.append((r.name or '(root)', r.type_name, 'x'.join(map(str, r.shape)),
                          f'{r.sparsity:.2%}', f'{r.params_kept:,}/{r.params:,}', channels, flops))
        lines.append(('total', '', '', f'{self.sparsity:.2%}',
                      f'{self.total_params_kept:,}/{self.total_params:,}', '', ''))
        widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
        return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                         for row in lines)

    __repr__ = __str__


def _channels(module: nn.Module, mask: torch.Tensor) -> tuple[int | None, int | None]:
    if isinstance(module, specs.FILTERED):
        rows = specs.filter_matrix(module, mask)
        return rows.shape[0], int((rows != 0).any(dim=1).sum())
    if isinstance(module, specs.BATCH_NORM):
        return mask.numel(), int((mask != 0).sum())
    return None, None


def sparsity_report(model: nn.Module, masks: dict, dummy_input: Any = None) -> SparsityReport:
    """Builds the report for ``masks`` on ``model``; FLOPs need ``dummy_input``.

    FLOPs kept is the layer's dense FLOP count scaled by its weight density, which is
    what the masked layer still computes usefully.
    """
    modules = dict(model.named_modules())
    flops = module_flops(model, dummy_input) if dummy_input is not None else {}
    rows = []
    for name, per_param in masks.items():
        module, mask = modules[name], per_param['weight']
        kept = int((mask != 0).sum())
        density = kept / max(mask.numel(), 1)
        channels, channels_kept = _channels(module, mask)
        dense = flops.get(name) if dummy_input is not None else None
        rows.append(LayerReport(
            name=name, type_name=type(module).__name__, shape=tuple(mask.shape),
            sparsity=1.0 - density, params=mask.numel(), params_kept=kept,
            channels=channels, channels_kept=channels_kept,
            flops=dense, flops_kept=None if dense is None else int(round(dense * density))))
    return SparsityReport(rows)
