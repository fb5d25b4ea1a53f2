"""The demo: prune a CNN trained on real handwritten digits with every one-shot pruner.

scikit-learn's ``load_digits`` (1,797 real 8x8 digits, shipped inside the package) trains
a small CNN; each registered one-shot pruner then prunes a copy of it, which is
fine-tuned briefly. The table shows what each pruner costs in accuracy and saves in
parameters and FLOPs. The dense model gets the same fine-tune too (the ``dense+ft`` row),
so a pruned row's accuracy is compared with what the extra epochs alone give.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils import benchmark
from tqdm.auto import tqdm

from prunus.compression import get_pruner
from prunus.compression.torch import get_masks, reconstruct
from prunus.compression.torch.flops import module_flops
from prunus.speedup import fix_constants, speedup

# Group importance, then the pruned model refit to the dense one (reconstruct): the flow that
# fine-tunes best in benchmarks/finetune_quality.py.
RECONSTRUCTED = 'l1+reconstruct'
ONE_SHOT = ('level', 'l1', 'l2', 'fpgm', 'slim', 'apoz', 'mean_activation', 'taylorfo', RECONSTRUCTED)


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


class DemoResult(tuple):
    """``(dense_acc, dense_params, dense_flops, rows)``, plus ``dense_tuned`` (the dense
    model after the same fine-tune, a :class:`DemoRow`) and ``latency_noise``; unpacks as
    the 4-tuple older callers expect."""

    dense_tuned: DemoRow | None
    latency_noise: float

    def __new__(cls, dense_acc, dense_params, dense_flops, rows, dense_tuned=None,
                latency_noise=0.0):
        self = super().__new__(cls, (dense_acc, dense_params, dense_flops, rows))
        self.dense_tuned, self.latency_noise = dense_tuned, latency_noise
        return self


def latencies(models: Sequence[nn.Module], example: torch.Tensor, rounds: int = 5,
              number: int = 50) -> tuple[list[float], float]:
    """Median batch-1 seconds per model with ``torch.utils.benchmark``, the models timed
    round-robin (load drifts hit all alike); and the noise: the spread (max / min - 1) of
    the first model's per-round medians."""
    per_model: list[list[float]] = [[] for _ in models]
    for model in models:
        model.eval()
    with torch.inference_mode():
        for _ in range(rounds):
            for times, model in zip(per_model, models):
                timer = benchmark.Timer('m(x)', globals={'m': model, 'x': example},
                                        num_threads=torch.get_num_threads())
                times.append(timer.timeit(number).median)
    first = per_model[0]
    return [statistics.median(t) for t in per_model], max(first) / min(first) - 1


def shrink(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int, int]:
    """Physically removes the pruned channels; returns the small model, params, FLOPs."""
    small, summary = speedup(model, example, get_masks(model), return_summary=True)
    fix_constants(small)  # fine-tuned already: deployed as is, no learnable constant paths
    return small, sum(p.numel() for p in small.parameters()), summary.flops_after


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
    if name == RECONSTRUCTED:
        images = [x for x, _ in calib]
        get_pruner('l1')(model, config, dependency_aware=True, dummy_input=images[0][:2],
                         importance='group').compress()
        reconstruct(model, dense, images)
        return model
    kwargs = _pruner_kwargs(name, calib, model, train_data)
    return get_pruner(name)(model, config, **kwargs).compress()


def run_demo(sparsity: float = 0.5, epochs: int = 15, finetune_epochs: int = 3, seed: int = 0,
             pruners: Sequence[str] = ONE_SHOT, progress: bool = True) -> DemoResult:
    """Trains the dense CNN, prunes it with each pruner, fine-tunes; returns the results."""
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = load_digits_data(seed)
    dense = train(DigitsCNN(), x_train, y_train, epochs, seed=seed)
    example = x_test[:1]
    dense_acc = accuracy(dense, x_test, y_test)
    dense_params, dense_flops = nonzero_params(dense), effective_flops(dense, {}, example)
    calib = batches(x_train, y_train, 128)[:4]
    start = time.perf_counter()
    tuned = train(copy.deepcopy(dense), x_train, y_train, finetune_epochs, lr=0.01, seed=seed + 100)
    dense_tuned = DemoRow('dense+ft', 0.0, dense_acc, accuracy(tuned, x_test, y_test),
                          dense_params, dense_flops, time.perf_counter() - start,
                          dense_params, dense_flops)
    rows, smalls = [], []
    for name in tqdm(list(pruners), desc='pruning', disable=not progress):
        start = time.perf_counter()
        model = prune_one(name, dense, sparsity, calib, (x_train, y_train))
        pruned_acc = accuracy(model, x_test, y_test)
        train(model, x_train, y_train, finetune_epochs, lr=0.01, seed=seed + 100)
        tuned_acc = accuracy(model, x_test, y_test)
        params, flops = nonzero_params(model), effective_flops(model, get_masks(model), example)
        seconds = time.perf_counter() - start
        small, params_small, flops_small = shrink(model, example)
        smalls.append(small)
        rows.append(DemoRow(name, sparsity, pruned_acc, tuned_acc, params, flops, seconds,
                            params_small, flops_small))
    times, noise = latencies([dense, *smalls], example)
    for row, t in zip(rows, times[1:]):
        row.latency_ratio = t / times[0]
    return DemoResult(dense_acc, dense_params, dense_flops, rows, dense_tuned, noise)


def _row(r: DemoRow, mark: str = '') -> str:
    return (f'{r.pruner + mark:<16}{r.sparsity:>9.0%}{r.accuracy_pruned:>12.2%}'
            f'{r.accuracy_finetuned:>11.2%}{r.params:>10,}{r.flops:>11,}{r.seconds:>8.2f}  | '
            f'{"":>13}{r.params_small:>9,}{r.flops_small:>11,}{r.latency_ratio:>9.2f}')


def _notes(rows: list[DemoRow], dense_params: int, noise: float | None) -> list[str]:
    same = [r.pruner for r in rows if r.params_small >= dense_params]
    notes = ['latency: CPU batch-1 forward time relative to the dense model (torch.utils.benchmark,'
             ' models timed interleaved, median of rounds' +
             (f'; the dense model varied by {noise:.0%} between rounds, so smaller differences '
              'are noise)' if noise is not None else ')')]
    if same:
        notes.append(f"* {', '.join(same)}: unstructured masks zero single weights inside kept "
                     'channels, so no channel can be removed and the speedup leaves the model as '
                     'it is (only sparse kernels or hardware would gain)')
    if any(r.pruner == 'slim' for r in rows):
        notes.append('slim masks BatchNorm scales, not conv weights: its masked columns count the '
                     'convs at full size (dense FLOPs) until the speedup removes those channels')
    return notes


def format_table(dense_acc: float, dense_params: int, dense_flops: int, rows: Iterable[DemoRow],
                 dense_tuned: DemoRow | None = None, latency_noise: float | None = None) -> str:
    """Masked columns count non-zero weights; 'after speedup' is the physically smaller model.
    ``dense_tuned``: the dense model after the same fine-tune (a fair baseline row)."""
    rows = list(rows)
    header = (f"{'pruner':<16}{'sparsity':>9}{'acc pruned':>12}{'acc tuned':>11}{'params':>10}{'FLOPs':>11}"
              f"{'time s':>8}  | after speedup:{'params':>9}{'FLOPs':>11}{'latency':>9}")
    lines = [header, '-' * len(header),
             f"{'dense':<16}{'-':>9}{dense_acc:>12.2%}{'-':>11}{dense_params:>10,}{dense_flops:>11,}{'-':>8}"
             f"  | {'':>13}{dense_params:>9,}{dense_flops:>11,}{1.0:>9.2f}"]
    if dense_tuned is not None:
        lines.append(_row(dense_tuned))
    for r in rows:
        lines.append(_row(r, '*' if r.params_small >= dense_params else ''))
    return '\n'.join(lines + [''] + _notes(rows, dense_params, latency_noise))


def main(sparsity: float = 0.5, epochs: int = 15, finetune_epochs: int = 3) -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print('Training a CNN on scikit-learn digits (1,797 real 8x8 images), then pruning it '
          f'to {sparsity:.0%} with each one-shot pruner and fine-tuning {finetune_epochs} epochs.')
    result = run_demo(sparsity, epochs, finetune_epochs)
    dense_acc, dense_params, dense_flops, rows = result
    print(format_table(dense_acc, dense_params, dense_flops, rows, dense_tuned=result.dense_tuned,
                       latency_noise=result.latency_noise))
