"""Speedup benchmark: prunus (dependency-aware L1Filter + speedup) vs Torch-Pruning 1.6.1.

For each torchvision architecture (weights=None) both tools remove 50% of the channels of
every Conv2d by L1 norm (the classifier excluded). Per model we report:

* the time to decide and remove (pruner + physical removal), the median of
  ``--tool-repeats`` runs on fresh copies, the tools taking turns after a warm-up
  forward, so neither gets the warm caches of the other; prunus twice: with its
  exactness check (the default, which runs the result once), with ``check=False``, and
  with ``learn_constants=False`` (no probe of the removed BatchNorm shifts, which only a
  fine-tune needs);
* params and MACs before/after, one-thread CPU latency at batch 1 and 16 (best of
  ``--repeats`` interleaved rounds: before, prunus and Torch-Pruning take turns);
  all of prunus' deployed model (after ``fix_constants``);
* where batch-1 time goes: convolution kernels (``aten::conv2d`` in torch.profiler) vs
  everything else, before and after, which shows how close to the MAC ratio removing
  channels can get on this machine;
* prunus' exactness error against the masked model.

Torch-Pruning is only measured here, never imported by prunus.

    OMP_NUM_THREADS=1 python benchmarks/speedup_torchvision.py --models resnet18 resnet50
"""
from __future__ import annotations

import argparse
import copy
import gc
import inspect
import os
import statistics
import time

import torch
import torchvision
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import fix_constants, speedup

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def macs(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def run_prunus(model, x, check=True, learn=True):
    """Prune and remove; returns (small model, total s, speedup-pass s, rel. error)."""
    start = time.perf_counter()
    pruner = L1FilterPruner(model, CONFIG, dependency_aware=True, dummy_input=x)
    pruner.compress()
    decide = time.perf_counter() - start
    kwargs = {} if check else {'check': False}  # older prunus had no check keyword
    if not learn:
        kwargs['learn_constants'] = False
    small, summary = speedup(model, x, pruner, return_summary=True, **kwargs)
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


def timed_runs(base, x, repeats):
    """The tools take turns on fresh copies; medians of their times, and one result each."""
    with torch.no_grad():
        base(x)  # warm-up shared by all
    runs = {'prunus': [], 'nocheck': [], 'fixed': [], 'tp': []}

    def fresh():
        # a clean heap for every tool: otherwise whoever runs next pays for collecting
        # the previous tool's garbage (Python's cyclic collector kicks in mid-run)
        model = copy.deepcopy(base)
        gc.collect()
        return model

    for _ in range(repeats):
        runs['prunus'].append(run_prunus(fresh(), x))
        if 'check' in inspect.signature(speedup).parameters:
            runs['nocheck'].append(run_prunus(fresh(), x, check=False))
        if 'learn_constants' in inspect.signature(speedup).parameters:
            runs['fixed'].append(run_prunus(fresh(), x, learn=False))
        runs['tp'].append(run_torch_pruning(fresh(), x))
    med = lambda vals: statistics.median(vals) if vals else float('nan')  # noqa: E731
    return dict(
        small=runs['prunus'][-1][0], tp_model=runs['tp'][-1][0],
        err=max(r[3] for r in runs['prunus'] + runs['nocheck'] + runs['fixed']),
        prunus_s=med([r[1] for r in runs['prunus']]),
        speedup_s=med([r[2] for r in runs['prunus']]),
        nocheck_s=med([r[1] for r in runs['nocheck']]),
        fixed_s=med([r[1] for r in runs['fixed']]),
        tp_s=med([r[1] for r in runs['tp']]))


def latencies(models, x, rounds):
    """Best time of ``rounds`` interleaved rounds per model (noise on a shared machine
    only ever adds time)."""
    best = {k: float('inf') for k in models}
    with torch.no_grad():
        for m in models.values():
            m.eval()(x)
        for _ in range(rounds):
            for k, m in models.items():
                start = time.perf_counter()
                m(x)
                best[k] = min(best[k], time.perf_counter() - start)
    return best


def conv_share(model, x, n=5):
    """Milliseconds per batch-1 forward spent in convolution kernels (torch.profiler)."""
    with torch.no_grad():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                model(x)
    return sum(e.cpu_time_total for e in prof.key_averages() if e.key == 'aten::conv2d') / n / 1e3


def measure(name, args):
    torch.manual_seed(0)
    base = getattr(torchvision.models, name)(weights=None).eval()
    x1 = torch.randn(1, 3, args.size, args.size)
    x16 = torch.randn(16, 3, args.size, args.size)
    row = dict(model=name, **timed_runs(base, x1, args.tool_repeats))
    deployed = copy.deepcopy(row['small'])
    fix_constants(deployed)  # what is deployed: the learnable constants fixed
    row['small'] = deployed
    models = {'before': base, 'prunus': deployed, 'tp': row['tp_model']}
    lat1 = latencies(models, x1, args.repeats)
    lat16 = latencies(models, x16, 2)
    row['lat'] = {k: (lat1[k], lat16[k]) for k in models}
    row['conv_ms'] = (conv_share(base, x1), conv_share(row['small'], x1))
    row['params'] = tuple(sum(p.numel() for p in m.parameters()) for m in models.values())
    row['macs'] = tuple(macs(m, x1) for m in models.values())
    return row


def format_row(r):
    p, m, lat = r['params'], r['macs'], r['lat']
    return (f"| {r['model']} | {r['prunus_s']:.2f} ({r['speedup_s']:.2f}) | {r['nocheck_s']:.2f} "
            f"| {r['fixed_s']:.2f} | {r['tp_s']:.2f} | "
            f"{p[0]/1e6:.2f} / {p[1]/1e6:.2f} / {p[2]/1e6:.2f} | "
            f"{m[0]/1e6:.0f} / {m[1]/1e6:.0f} / {m[2]/1e6:.0f} | "
            f"{lat['before'][0]*1e3:.1f} / {lat['prunus'][0]*1e3:.1f} / {lat['tp'][0]*1e3:.1f} | "
            f"{lat['before'][1]*1e3:.0f} / {lat['prunus'][1]*1e3:.0f} / {lat['tp'][1]*1e3:.0f} | "
            f"{m[1] / m[0]:.2f} | {lat['prunus'][0] / lat['before'][0]:.2f} | "
            f"{lat['tp'][0] / lat['before'][0]:.2f} | {r['err']:.1e} |")


def format_conv_row(r):
    (cb, ca), lat = r['conv_ms'], r['lat']
    wb, wa = lat['before'][0] * 1e3, lat['prunus'][0] * 1e3
    return (f"| {r['model']} | {r['macs'][1] / r['macs'][0]:.2f} | {cb:.1f} -> {ca:.1f} "
            f"({ca / cb:.2f}) | {max(wb - cb, 0):.1f} -> {max(wa - ca, 0):.1f} "
            f"({max(wa - ca, 0) / max(wb - cb, 1e-9):.2f}) | {wa / wb:.2f} |")


HEADER = ('| model | prunus decide+remove s (speedup pass), checked | prunus s, check=False | '
          'prunus s, learn_constants=False | Torch-Pruning s | params M before/prunus/TP | '
          'MACs M before/prunus/TP | '
          'latency b1 ms before/prunus/TP | latency b16 ms before/prunus/TP | MAC ratio | '
          'prunus latency ratio b1 | TP latency ratio b1 | prunus rel. error |\n'
          + '|---' * 13 + '|')
CONV_HEADER = ('| model | MAC ratio | conv kernels ms b1 before -> prunus (ratio) | '
               'everything else ms (ratio) | latency ratio |\n' + '|---' * 5 + '|')


def write(rows, args):
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    table = HEADER + '\n' + '\n'.join(format_row(r) for r in rows)
    conv = CONV_HEADER + '\n' + '\n'.join(format_conv_row(r) for r in rows)
    with open(args.out, 'w') as f:
        f.write(f'# Speedup benchmark ({args.size}x{args.size}, 1 CPU thread, torch '
                f'{torch.__version__}, weights=None, 50% of Conv2d channels by L1)\n\n')
        f.write('Command: `OMP_NUM_THREADS=1 PYTHONPATH=. python '
                f"benchmarks/speedup_torchvision.py --models {' '.join(args.models)} "
                f'--size {args.size} --repeats {args.repeats} '
                f'--tool-repeats {args.tool_repeats}`\n\n')
        f.write(table + '\n\nWhere batch-1 time goes (prunus result; Torch-Pruning '
                'returns the same layer shapes):\n\n' + conv + '\n')
    print(table)
    print(conv)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+', default=['resnet18', 'resnet50', 'mobilenet_v2'])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--repeats', type=int, default=10, help='latency rounds (batch 1)')
    parser.add_argument('--tool-repeats', type=int, default=3,
                        help='decide+remove runs per tool (median)')
    parser.add_argument('--out', default='benchmarks/results/speedup_torchvision.md')
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.models:
        rows.append(measure(name, args))
        print(format_row(rows[-1]), flush=True)
    write(rows, args)


if __name__ == '__main__':
    main()
