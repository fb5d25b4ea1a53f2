"""Automatic pruners vs uniform L1 filter pruning at equal FLOPs, on the demo's digits CNN.

The dense CNN is trained on scikit-learn digits (train split 1000 images); searches score
candidates on a validation split (347 images) and every number in the table is accuracy
on the held-out test split (450 images). The budget is a FLOPs reduction (FLOPs measured
on the sped-up model with ``prunus.speedup``). The baseline prunes every conv by the same
L1 sparsity (give or take one channel per layer, to meet the same FLOPs), with the
same masking (BatchNorm followers too), so the only difference is the per-layer
allocation. "tuned" is after the same
3-epoch fine-tuning for every method. NetAdapt and Sensitivity fine-tune during their
search and AutoCompress trains with ADMM, by design, so their "pruned" column already
includes that training; simulated annealing and AMC only evaluate.

A second part times AMC on torchvision mobilenet_v2 (weights=None) at flops_ratio=0.5
with a small evaluator (random 64x64 images), with the default train_episode=800.

    OMP_NUM_THREADS=1 python benchmarks/auto_pruners_digits.py            # both parts
    OMP_NUM_THREADS=1 python benchmarks/auto_pruners_digits.py --skip-amc-mobilenet
"""
from __future__ import annotations

import argparse
import copy
import logging
import tempfile
import time
from pathlib import Path

import torch

from prunus.compression import get_pruner
from prunus.compression.torch import apply_masks, pruned_flops
from prunus.demo import DigitsCNN, accuracy, load_digits_data, train

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def data():
    x_train, y_train, x_test, y_test = load_digits_data(0)
    return (x_train[:1000], y_train[:1000]), (x_train[1000:], y_train[1000:]), (x_test, y_test)


class Evaluator:
    """Validation accuracy of a model (picklable); AMC calls it with its val_loader first."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __call__(self, *args):
        return accuracy(args[-1], self.x, self.y)


class FineTuner:
    def __init__(self, x, y, epochs=1):
        self.x, self.y, self.epochs = x, y, epochs

    def __call__(self, model):
        train(model, self.x, self.y, self.epochs, lr=0.01, seed=7)


def build(name, model, target, train_xy, val_xy, example, workdir):
    evaluator = Evaluator(*val_xy)
    config = [{'sparsity': target, 'op_types': ['Conv2d']}]
    common = dict(budget='flops', dummy_input=example, progress=False)
    if name == 'simulated_annealing':
        return get_pruner(name)(model, config, evaluator, experiment_data_dir=workdir, **common)
    if name == 'netadapt':
        return get_pruner(name)(model, config, FineTuner(*train_xy), evaluator, sparsity_per_iteration=0.1,
                                experiment_data_dir=workdir, **common)
    if name == 'sensitivity':
        return get_pruner(name)(model, config, finetuner=FineTuner(*train_xy), evaluator=evaluator,
                                sparsity_per_iter=0.15, checkpoint_dir=workdir, **common)
    if name == 'amc':
        return get_pruner(name)(model, [{'op_types': ['Conv2d']}], evaluator, [val_xy], flops_ratio=1 - target,
                                channel_round=1, train_episode=200, warmup=50, output_dir=workdir, progress=False)
    if name == 'auto_compress':
        def trainer(model, optimizer, criterion, epoch):
            from prunus.demo import train_epoch
            train_epoch(model, optimizer, criterion, *train_xy, seed=epoch)
        return get_pruner(name)(model, config, trainer, evaluator, example, num_iterations=2,
                                admm_num_iterations=2, admm_training_epochs=1, experiment_data_dir=workdir,
                                budget='flops', progress=False)
    raise ValueError(name)


def uniform_l1(dense, target, example, val_xy):
    """Uniform L1 over the same layers on the same FLOPs budget, same masking: the common
    sparsity nearest the budget, then single channels moved until the FLOPs match."""
    helper = get_pruner('simulated_annealing')(copy.deepcopy(dense), CONFIG, Evaluator(*val_xy), budget='flops',
                                               dummy_input=example, experiment_data_dir=tempfile.mkdtemp(),
                                               progress=False)
    helper.target_sparsity = target
    names = helper.searchable()
    allocation = helper.fit_budget({n: 1.0 for n in names})
    model = apply_masks(copy.deepcopy(dense), helper.masks_for(allocation))
    return model, allocation


def row(label, model, dense_flops, example, test_xy, train_xy, seconds, note=''):
    flops = pruned_flops(model, example) / dense_flops
    pruned_acc = accuracy(model, *test_xy)
    tuned = train(copy.deepcopy(model), *train_xy, 3, lr=0.01, seed=11)
    return (f'| {label} | {flops:.3f} | {pruned_acc:.2%} | {accuracy(tuned, *test_xy):.2%} | {seconds:.1f} | {note} |')


def digits_part(methods, targets):
    torch.manual_seed(0)
    train_xy, val_xy, test_xy = data()
    dense = train(DigitsCNN(), *train_xy, 15, seed=0)
    example = test_xy[0][:1]
    dense_flops = pruned_flops(dense, example, {})
    lines = [f'Dense CNN: test accuracy {accuracy(dense, *test_xy):.2%}, {dense_flops:,} FLOPs.', '']
    for target in targets:
        lines += [f'### FLOPs budget: remove {target:.0%}', '',
                  '| method | FLOPs left (sped-up) | test acc pruned | test acc tuned (3 ep) | search s | allocation |',
                  '|---|---|---|---|---|---|']
        start = time.perf_counter()
        baseline, allocation = uniform_l1(dense, target, example, val_xy)
        lines.append(row('uniform L1 (baseline)', baseline, dense_flops, example, test_xy, train_xy,
                         time.perf_counter() - start, _fmt(allocation)))
        for name in methods:
            start = time.perf_counter()
            with tempfile.TemporaryDirectory() as workdir:
                pruner = build(name, copy.deepcopy(dense), target, train_xy, val_xy, example, workdir)
                model = pruner.compress()
            lines.append(row(name, model, dense_flops, example, test_xy, train_xy, time.perf_counter() - start,
                             _fmt(pruner.best_allocation or {})))
            print(lines[-1], flush=True)
        lines.append('')
    return lines


def _fmt(allocation):
    return ', '.join(f'{n}: {v:.2f}' for n, v in allocation.items())


def amc_mobilenet_part(episodes):
    import torchvision
    model = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    generator = torch.Generator().manual_seed(0)
    val = [(torch.randn(16, 3, 64, 64, generator=generator), torch.randint(0, 10, (16,), generator=generator))]
    evaluator = Evaluator(*val[0])
    dense_flops = pruned_flops(model, val[0][0][:1], {})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        pruner = get_pruner('amc')(model, [{'op_types': ['Conv2d', 'Linear']}], evaluator, val, flops_ratio=0.5,
                                   train_episode=episodes, output_dir=workdir, progress=False)
        pruned = pruner.compress()
    seconds = time.perf_counter() - start
    ratio = pruned_flops(pruned, val[0][0][:1]) / dense_flops
    return ['### AMC on torchvision mobilenet_v2 (weights=None, 10 classes, 64x64 input)', '',
            f'flops_ratio=0.5, train_episode={episodes} (warmup 100), evaluator: accuracy on 16 random images.',
            f'Searched layers: {len(pruner.searchable())} (layers the speedup can shrink alone, and residual-tied groups as one unit each).',
            f'Wall time: {seconds:.1f} s (limit 600 s); FLOPs left after speedup: {ratio:.4f} of {dense_flops:,}.', '']


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--methods', nargs='*',
                        default=['simulated_annealing', 'netadapt', 'sensitivity', 'amc', 'auto_compress'])
    parser.add_argument('--targets', nargs='*', type=float, default=[0.5, 0.7])
    parser.add_argument('--skip-amc-mobilenet', action='store_true')
    parser.add_argument('--amc-episodes', type=int, default=800)
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'auto_pruners_digits.md'))
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    lines = ['# Automatic pruners on the digits CNN', '', *__doc__.split('\n\n')[1:3], '']
    lines += digits_part(args.methods, args.targets)
    if not args.skip_amc_mobilenet:
        lines += amc_mobilenet_part(args.amc_episodes)
    text = '\n'.join(lines)
    print(text)
    Path(args.out).write_text(text + '\n')


if __name__ == '__main__':
    main()
