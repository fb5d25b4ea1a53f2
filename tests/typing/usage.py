"""User code that mypy checks against prunus's public API (tests/test_typing.py)."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

import prunus
from prunus.compression import available_pruners, get_pruner
from prunus.compression.torch import (AGPPruner, L1FilterPruner, Pruning, SparsityReport,
                                      WeightPruningConfig, apply_compression_results, strip)
from prunus.comparison import Comparison, compare
from prunus.integrations.driver import PruningDriver
from prunus.speedup import ModelSpeedup, SpeedupSummary, load, save, speedup


def prune_and_ship(model: nn.Module, x: torch.Tensor) -> nn.Module:
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    model = pruner.compress()
    report: SparsityReport = pruner.sparsity_report(x)
    print(report.sparsity)
    small, summary = speedup(model, x, pruner, return_summary=True)
    assert isinstance(summary, SpeedupSummary)
    save(small, 'small.pt')
    again: nn.Module = load('small.pt', torchvision.models.resnet18())
    ModelSpeedup(model, x, 'mask.pth').speedup_model()
    apply_compression_results(strip(model), 'mask.pth')
    return again


def compare_some(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    table: Comparison = compare(model, ['l1', 'fpgm'], data=batches, budgets=[0.3, 0.5])
    other = prunus.compare(model, {'mine': get_pruner('level')}, data=batches)
    print(sorted(available_pruners('torch')), other)
    return float(table['flops_small'].min())


def train_with_hooks(model: nn.Module) -> None:
    pruning = Pruning(WeightPruningConfig(target_sparsity=0.5), model)
    driver = PruningDriver(AGPPruner(model, [{'final_sparsity': 0.5, 'op_types': ['Linear']}]))
    driver.train_begin(model)
    pruning.on_train_begin()
    pruning.on_step_end()
