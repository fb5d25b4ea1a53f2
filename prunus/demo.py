"""The demo: prune a CNN trained on real handwritten digits with every one-shot pruner.

scikit-learn's ``load_digits`` (1,797 real 8x8 digits, shipped inside the package) trains
a small CNN; each registered one-shot pruner then prunes a copy of it, which is
fine-tuned briefly. The table shows what each pruner costs in accuracy and saves in
parameters and FLOPs.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from prunus.compression import get_pruner
from prunus.compression.torch import get_masks
from prunus.compression.torch.flops import module_flops
from prunus.speedup import speedup

ONE_SHOT = ('level', 'l1', 'l2', 'fpgm', 'slim', 'apoz', 'mean_activation', 'taylorfo')


class DigitsCNN(nn.Module):
    """Three conv blocks and a linear classifier for 1x8x8 digits."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, width), *block(width, width), nn.MaxPool2d(2),
                                      *block(width, 2 * width), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def load_digits_data(seed: int = 0, test_fraction: float = 0.25):
    """(x_train, y_train, x_test, y_test) as tensors; x is (N, 1, 8, 8) scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(len(x) * (1 - test_fraction))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


def batches(x: torch.Tensor, y: torch.Tensor, size: int, seed: int | None = None) -> list:
    order = torch.arange(len(x)) if seed is None else torch.randperm(
        len(x), generator=torch.Generator().manual_seed(seed))
    return [(x[order[i:i + size]], y[order[i:i + size]]) for i in range(0, len(x), size)]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> None:
    model.train()
    for xb, yb in batches(x, y, 64, seed=seed):
        optimizer.zero_grad()
        loss_fn(model(xb), yb).backward()
        optimizer.step()


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float = 0.05,
          seed: int = 0) -> nn.Module:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    for epoch in range(epochs):
        train_epoch(model, optimizer, nn.CrossEntropyLoss(), x, y, seed=seed + epoch)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(dim=1) == y).float().mean())


def effective_flops(model: nn.Module, masks: dict, example: torch.Tensor) -> int:
    """Model FLOPs with each masked layer's count scaled by its weight density."""
    flops = module_flops(model, example)
    total = flops.get('', 0)
    for name, per_param in masks.items():
        density = float((per_param['weight'] != 0).float().mean())
        total -= round(flops.get(name, 0) * (1 - density))
    return total


def nonzero_params(model: nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


@dataclass
class DemoRow:
    pruner: str
    sparsity: float
    accuracy_pruned: float
    accuracy_finetuned: float
    params: int
    flops: int
    seconds: float
    params_small: int = 0
    flops_small: int = 0
    latency_ratio: float = 1.0


@torch.inference_mode()
def latency_ms(model: nn.Module, example: torch.Tensor, repeats: int = 300) -> float:
    """Median CPU latency of one forward pass, in milliseconds."""
    model.eval()
    for _ in range(20):
        model(example)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example)
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def shrink(model: nn.Module, example: torch.Tensor, dense_ms: float) -> tuple[int, int, float]:
    """Physically removes the pruned channels; returns params, FLOPs, latency ratio."""
    small, summary = speedup(model, example, get_masks(model), return_summary=True)
    return summary.params_after, summary.flops_after, latency_ms(small, example) / dense_ms


def _pruner_kwargs(name: str, calib: list, model: nn.Module, train_data: tuple) -> dict:
    if name == 'slim':
        # Slimming needs sparsity training first: an L1 penalty pulls useless gammas to 0.
        def trainer(model, optimizer, criterion, epoch):
            train_epoch(model, optimizer, criterion, *train_data, seed=epoch)
        # A short schedule needs a strong penalty (the paper: 1e-4 over 160 epochs).
        return {'optimizer': torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
                'trainer': trainer, 'criterion': nn.CrossEntropyLoss(),
                'sparsifying_training_epochs': 3, 'scale': 0.1}
    if name in ('apoz', 'mean_activation'):
        return {'data': calib}
    if name == 'taylorfo':
        return {'data': calib, 'criterion': nn.CrossEntropyLoss()}
    return {}


def prune_one(name: str, dense: nn.Module, sparsity: float, calib: list, train_data: tuple) -> nn.Module:
    model = copy.deepcopy(dense)
    op_types = ['BatchNorm2d'] if name == 'slim' else ['Conv2d']
    config = [{'sparsity': sparsity, 'op_types': op_types}]
    kwargs = _pruner_kwargs(name, calib, model, train_data)
    return get_pruner(name)(model, config, **kwargs).compress()


def run_demo(sparsity: float = 0.5, epochs: int = 15, finetune_epochs: int = 3, seed: int = 0,
             pruners: Sequence[str] = ONE_SHOT, progress: bool = True) -> tuple[float, int, int, list[DemoRow]]:
    """Trains the dense CNN, prunes it with each pruner, fine-tunes; returns the results."""
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_data(seed)
    dense = train(DigitsCNN(), x_train, y_train, epochs, seed=seed)
    example = x_test[:1]
    dense_acc = accuracy(dense, x_test, y_test)
    dense_params, dense_flops = nonzero_params(dense), effective_flops(dense, {}, example)
    calib = batches(x_train, y_train, 128)[:4]
    dense_ms = latency_ms(dense, example)
    rows = []
    for name in tqdm(list(pruners), desc='pruning', disable=not progress):
        start = time.perf_counter()
        model = prune_one(name, dense, sparsity, calib, (x_train, y_train))
        pruned_acc = accuracy(model, x_test, y_test)
        train(model, x_train, y_train, finetune_epochs, lr=0.01, seed=seed + 100)
        tuned_acc = accuracy(model, x_test, y_test)
        params, flops = nonzero_params(model), effective_flops(model, get_masks(model), example)
        seconds = time.perf_counter() - start
        rows.append(DemoRow(name, sparsity, pruned_acc, tuned_acc, params, flops, seconds,
                            *shrink(model, example, dense_ms)))
    return dense_acc, dense_params, dense_flops, rows


def format_table(dense_acc: float, dense_params: int, dense_flops: int, rows: Iterable[DemoRow]) -> str:
    """Masked columns count non-zero weights; 'after speedup' is the physically smaller model."""
    header = (f"{'pruner':<16}{'sparsity':>9}{'acc pruned':>12}{'acc tuned':>11}{'params':>10}{'FLOPs':>11}"
              f"{'time s':>8}  | after speedup:{'params':>9}{'FLOPs':>11}{'latency':>9}")
    lines = [header, '-' * len(header),
             f"{'dense':<16}{'-':>9}{dense_acc:>12.2%}{'-':>11}{dense_params:>10,}{dense_flops:>11,}{'-':>8}"
             f"  | {'':>13}{dense_params:>9,}{dense_flops:>11,}{1.0:>9.2f}"]
    for r in rows:
        lines.append(f'{r.pruner:<16}{r.sparsity:>9.0%}{r.accuracy_pruned:>12.2%}{r.accuracy_finetuned:>11.2%}'
                     f'{r.params:>10,}{r.flops:>11,}{r.seconds:>8.2f}  | {"":>13}{r.params_small:>9,}'
                     f'{r.flops_small:>11,}{r.latency_ratio:>9.2f}')
    return '\n'.join(lines) + '\n(latency: CPU batch-1 forward time relative to the dense model)'


def main(sparsity: float = 0.5, epochs: int = 15, finetune_epochs: int = 3) -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print('Training a CNN on scikit-learn digits (1,797 real 8x8 images), then pruning it '
          f'to {sparsity:.0%} with each one-shot pruner and fine-tuning {finetune_epochs} epochs.')
    result = run_demo(sparsity, epochs, finetune_epochs)
    print(format_table(*result))
