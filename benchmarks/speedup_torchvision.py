"""Speedup benchmark: prunus (dependency-aware L1Filter + speedup) vs Torch-Pruning 1.6.1.

For each torchvision architecture (weights=None) both tools remove 50% of the channels of
every Conv2d by L1 norm (the classifier excluded), then we report the time to decide and
remove, params and MACs before/after, one-thread CPU latency at batch 1 and 16, and
prunus' exactness error. Torch-Pruning is only measured here, never imported by prunus.

    OMP_NUM_THREADS=1 python benchmarks/speedup_torchvision.py --models resnet18 resnet50
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup


def macs(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def latency(model, x, repeats):
    model.eval()
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_prunus(model, x):
    start = time.perf_counter()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    decide = time.perf_counter() - start
    small, summary = speedup(model, x, pruner, return_summary=True)
    with torch.no_grad():  # measured outside the timings: the masked model is unchanged
        ref = model.eval()(x)
        err = float((small(x) - ref).abs().max() / ref.abs().max())
    return small, decide + summary.seconds, summary.seconds, err


def run_torch_pruning(model, x):
    import torch_pruning as tp  # noqa: PLC0415 (benchmark-only peer)
    start = time.perf_counter()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1:]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=last,
                                  root_module_types=[torch.nn.Conv2d])
    pruner.step()
    return model, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+', default=['resnet18', 'resnet50', 'mobilenet_v2'])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out', default='benchmarks/results/speedup_torchvision.md')
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        base = getattr(torchvision.models, name)(weights=None).eval()
        x1 = torch.randn(1, 3, args.size, args.size)
        x16 = torch.randn(16, 3, args.size, args.size)
        small, total_s, speed_s, err = run_prunus(copy.deepcopy(base), x1)
        tp_model, tp_s = run_torch_pruning(copy.deepcopy(base), x1)
        lat = {k: [latency(m, x, args.repeats if x is x1 else 2) for x in (x1, x16)]
               for k, m in (('before', base), ('prunus', small), ('tp', tp_model))}
        row = dict(model=name, prunus_s=total_s, speedup_s=speed_s, tp_s=tp_s,
                   params=(sum(p.numel() for p in base.parameters()),
                           sum(p.numel() for p in small.parameters()),
                           sum(p.numel() for p in tp_model.parameters())),
                   macs=(macs(base, x1), macs(small, x1), macs(tp_model, x1)), lat=lat, err=err)
        rows.append(row)
        print(format_row(row), flush=True)
    write(rows, args)


def format_row(r):
    p, m, lat = r['params'], r['macs'], r['lat']
    mac_ratio = m[1] / m[0]
    lat_ratio = lat['prunus'][0] / lat['before'][0]
    tp_ratio = lat['tp'][0] / lat['before'][0]
    return (f"| {r['model']} | {r['prunus_s']:.2f} ({r['speedup_s']:.2f}) | {r['tp_s']:.2f} | "
            f"{p[0]/1e6:.2f} / {p[1]/1e6:.2f} / {p[2]/1e6:.2f} | "
            f"{m[0]/1e6:.0f} / {m[1]/1e6:.0f} / {m[2]/1e6:.0f} | "
            f"{lat['before'][0]*1e3:.1f} / {lat['prunus'][0]*1e3:.1f} / {lat['tp'][0]*1e3:.1f} | "
            f"{lat['before'][1]*1e3:.0f} / {lat['prunus'][1]*1e3:.0f} / {lat['tp'][1]*1e3:.0f} | "
            f"{mac_ratio:.2f} | {lat_ratio:.2f} | {tp_ratio:.2f} | {r['err']:.1e} |")


HEADER = ('| model | prunus decide+remove s (speedup pass) | Torch-Pruning s | params M '
          'before/prunus/TP | MACs M before/prunus/TP | latency b1 ms before/prunus/TP | '
          'latency b16 ms before/prunus/TP | MAC ratio | prunus latency ratio b1 | '
          'TP latency ratio b1 | prunus rel. error |\n' + '|---' * 12 + '|')


def write(rows, args):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, 'w') as f:
        f.write(f'# Speedup benchmark ({args.size}x{args.size}, 1 CPU thread, torch '
                f'{torch.__version__}, weights=None, 50% of Conv2d channels by L1)\n\n')
        f.write('Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python '
                f"benchmarks/speedup_torchvision.py --models {' '.join(args.models)} "
                f'--size {args.size} --repeats {args.repeats}`\n\n')
        f.write(HEADER + '\n' + '\n'.join(format_row(r) for r in rows) + '\n')
    print(HEADER)
    print('\n'.join(format_row(r) for r in rows))


if __name__ == '__main__':
    main()
