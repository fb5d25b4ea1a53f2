"""The AGP and lottery-ticket recipes of the accuracy tests, shared with the benchmark.

The unit tests run one seed; ``benchmarks/training_digits.py`` runs the same functions
over several seeds (each seed draws its own train/test split and initial weights) and
both small CNNs, so the test and the sweep measure the same thing.

* AGP: the dense CNN is trained ``PRETRAIN`` epochs; two copies are then fine-tuned
  ``AGP_FINETUNE`` epochs with the same SGD + cosine schedule, one dense (the reference)
  and one pruned by AGP to 90% of all conv/linear weights (``op_types: ['default']``),
  ranked globally through ``total_sparsity`` over the first ``AGP_SPAN`` epochs.
* Lottery ticket (Frankle & Carbin, 2019): 5 rounds to 80%, every round trained to
  convergence for ``LOTTERY_EPOCHS`` epochs with a cosine schedule restarted each round,
  survivors reset to their initial weights; the reference is round 0, the dense model
  trained with the same per-round budget.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from prunus import demo
from prunus.compression.torch import AGPPruner, LotteryTicketPruner

from .digits import DigitsCNN as PlainCNN

PRETRAIN, AGP_FINETUNE, AGP_SPAN = 15, 30, 10
LOTTERY_EPOCHS = 10
#: Small CNNs the recipes are checked on: the demo's (conv-BN-ReLU, 28.6k weights) and a
#: plain conv-conv-linear-linear one without BatchNorm (151k weights, mostly in fc1).
ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {'demo': demo.DigitsCNN, 'plain': PlainCNN}


@dataclass
class AGPOutcome:
    dense: float
    pruned: float
    sparsity: float
    layer_sparsity: dict[str, float]
    applied: list[float]


@dataclass
class LotteryOutcome:
    rounds: list[float]
    layer_sparsity: dict[str, float]

    @property
    def dense(self) -> float:
        return self.rounds[0]


def weighted_modules(model: nn.Module) -> list[nn.Conv2d | nn.Linear]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def zero_fraction(model: nn.Module) -> float:
    weights: list[torch.Tensor] = [m.weight for m in weighted_modules(model)]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _sgd(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)


def _layer_sparsity(pruner) -> dict[str, float]:
    return {n: round(1.0 - float(m['weight'].mean()), 4) for n, m in pruner.get_masks().items()}


def agp_run(seed: int, arch: str = 'demo', sparsity: float = 0.9, check: Callable | None = None) -> AGPOutcome:
    """Dense and AGP-pruned fine-tuning from one pretrained model; accuracies in %.

    ``check(pruner, epoch)`` (optional) runs right after each ``update_epoch``.
    """
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = demo.load_digits_data(seed)
    base = demo.train(ARCHITECTURES[arch](), x_train, y_train, PRETRAIN, seed=seed)
    results, pruner, applied = {}, None, []
    for mode in ('dense', 'agp'):
        model = base if mode == 'agp' else copy.deepcopy(base)
        optimizer = _sgd(model, 0.02)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, AGP_FINETUNE)
        if mode == 'agp':
            config = [{'total_sparsity': sparsity, 'start_epoch': 0, 'end_epoch': AGP_SPAN,
                       'frequency': 1, 'op_types': ['default']}]
            pruner = AGPPruner(model, config, optimizer, pruning_algorithm='level')
            pruner.compress()
        for epoch in range(AGP_FINETUNE):
            if pruner is not None:
                pruner.update_epoch(epoch)
                applied.append(pruner.applied[0])
                if check is not None:
                    check(pruner, epoch)
            demo.train_epoch(model, optimizer, nn.CrossEntropyLoss(), x_train, y_train, seed=seed + 1000 + epoch)
            scheduler.step()
        results[mode] = 100.0 * demo.accuracy(model, x_test, y_test)
    return AGPOutcome(results['dense'], results['agp'], zero_fraction(base), _layer_sparsity(pruner), applied)


def lottery_run(seed: int, arch: str = 'demo', sparsity: float = 0.8, rounds: int = 5,
                check: Callable | None = None) -> LotteryOutcome:
    """Accuracy (%) after each round; round 0 is the dense model.

    ``check(pruner, round_index, optimizer, scheduler)`` (optional) runs right after each
    ``prune_iteration_start``.
    """
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = demo.load_digits_data(seed)
    model = ARCHITECTURES[arch]()
    optimizer = _sgd(model, 0.05)
    steps = LOTTERY_EPOCHS * len(demo.batches(x_train, y_train, 64))
    # Stepped every batch, so each round anneals to zero: the round trains to convergence.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    config = [{'prune_iterations': rounds, 'sparsity': sparsity, 'op_types': ['default']}]
    pruner = LotteryTicketPruner(model, config, optimizer, scheduler)
    pruner.compress()
    loss_fn, accuracies = nn.CrossEntropyLoss(), []
    for round_index in pruner.get_prune_iterations():
        pruner.prune_iteration_start()
        if check is not None:
            check(pruner, round_index, optimizer, scheduler)
        model.train()
        for epoch in range(LOTTERY_EPOCHS):
            for x, y in demo.batches(x_train, y_train, 64, seed=100 * seed + epoch):
                optimizer.zero_grad()
                loss_fn(model(x), y).backward()
                optimizer.step()
                scheduler.step()
        accuracies.append(100.0 * demo.accuracy(model, x_test, y_test))
    return LotteryOutcome(accuracies, _layer_sparsity(pruner))
