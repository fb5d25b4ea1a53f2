"""Accuracy sweep of the training-aware pruners on the digits CNNs, over several seeds.

Runs the recipes of :mod:`prunus.testing.recipes` (the unit tests run seed 0 of the demo
CNN) for every seed and both small CNNs, and writes a Markdown table: AGP to 90% of all
conv/linear weights (global ranking via ``total_sparsity``) and the 5-round lottery
ticket at 80%, each against its dense reference. Each seed draws its own train/test split
(450 test images, so one image is 0.22 points) and its own initial weights.

    OMP_NUM_THREADS=1 python benchmarks/training_digits.py --seeds 0 1 2 3 4
"""
from __future__ import annotations

import argparse
import os
import time

import torch

from prunus.testing import recipes as _recipes


def _row(kind: str, arch: str, seed: int, dense: float, pruned: float, sparsity: float,
         layers: dict[str, float], seconds: float) -> str:
    per_layer = ', '.join(f'{n} {s:.2f}' for n, s in layers.items())
    return (f'| {kind} | {arch} | {seed} | {dense:.2f} | {pruned:.2f} | {pruned - dense:+.2f} | '
            f'{sparsity:.4f} | {per_layer} | {seconds:.0f} |')


def sweep(seeds: list[int], archs: list[str], kinds: list[str]) -> tuple[list[str], list[float]]:
    rows, gaps = [], []
    for kind in kinds:
        for arch in archs:
            for seed in seeds:
                start = time.perf_counter()
                if kind == 'agp':
                    out = _recipes.agp_run(seed, arch)
                    dense, pruned, sparsity = out.dense, out.pruned, out.sparsity
                else:
                    out = _recipes.lottery_run(seed, arch)
                    dense, pruned = out.rounds[0], out.rounds[-1]
                    sparsity = 1 - sum((1 - s) for s in out.layer_sparsity.values()) / len(out.layer_sparsity)
                rows.append(_row(kind, arch, seed, dense, pruned, sparsity, out.layer_sparsity,
                                 time.perf_counter() - start))
                gaps.append(pruned - dense)
                print(rows[-1], flush=True)
    return rows, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--archs', nargs='+', default=list(_recipes.ARCHITECTURES))
    parser.add_argument('--kinds', nargs='+', default=['agp', 'lottery'], choices=['agp', 'lottery'])
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'training_digits.md'))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, gaps = sweep(args.seeds, args.archs, args.kinds)
    header = ['# Training-aware pruning on the digits CNNs, several seeds',
              '',
              f'Command: `OMP_NUM_THREADS=1 python benchmarks/training_digits.py --seeds '
              f"{' '.join(map(str, args.seeds))} --archs {' '.join(args.archs)} --kinds {' '.join(args.kinds)}`",
              f'(torch {torch.__version__}). Recipes: `prunus/testing/recipes.py`. Accuracy in % on the '
              "seed's held-out 450 images; the lottery row's sparsity is the mean over layers "
              '(each layer is pruned to exactly 80%).',
              '',
              f'Worst gap (pruned - dense): {min(gaps):+.2f} points; gaps within 1 point: '
              f'{sum(g >= -1.0 for g in gaps)} of {len(gaps)}.',
              '',
              '| pruner | CNN | seed | dense % | pruned % | gap | weight sparsity | per-layer sparsity | s |',
              '|---|---|---|---|---|---|---|---|---|']
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as handle:
        handle.write('\n'.join(header + rows) + '\n')


if __name__ == '__main__':
    main()
