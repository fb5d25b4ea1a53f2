"""Prune -> (speedup) -> fine-tune on the digits CNNs: prunus against Torch-Pruning.

Every flow starts from the same trained dense model of its seed and gets the same
fine-tune (``finetune_models.train``: Adam, batch 32, same epochs and learning rate):

* ``dense+ft``: the dense model, fine-tuned as long as the pruned ones (the fair baseline);
* ``masked``: prunus ``L1FilterPruner(dependency_aware=True)`` on every Conv2d, masks held
  through the fine-tune (the masked model computes at dense cost);
* ``speedup``: the same masks, ``prunus.speedup``, then the fine-tune;
* ``masked-group`` / ``speedup-group``: ``L1FilterPruner(..., importance='group')``
  (defaults: reduction ``'mean'`` over raw L1 magnitudes, no normalization), masks held
  through the fine-tune / sped up, then the fine-tune;
* ``masked-recon``: the same group choice, then ``reconstruct`` with its defaults
  (least-squares refit of every conv against the dense model on 1,024 training images;
  the classifier, the model's head, keeps its row lengths), masks held through the fine-tune;
* ``speedup-recon``: that same refit masked model, sped up, then the fine-tune (its twin is
  ``masked-recon``, as ``masked`` is the twin of ``speedup`` and ``masked-group`` of
  ``speedup-group``);
* ``tp``: Torch-Pruning ``MetaPruner`` with ``MagnitudeImportance(p=1)``, the same
  pruning ratio per layer and the same ignored layers (every Linear), then the fine-tune.

Reported per flow (mean over seeds): accuracy right after removal and after the
fine-tune, parameters, MACs at batch 1, and batch-1 CPU latency relative to the dense
model (``torch.utils.benchmark``, all models of a seed timed interleaved, median), all
of the deployed model: after the fine-tune, ``fix_constants`` (a no-op for the masked and
Torch-Pruning models). While fine-tuning, a sped-up model also holds its layers' weights
on removed constant inputs and the removed BatchNorm shifts, so that those constants learn
as in the masked model ("params while fine-tuning"). A
second table: ``round_to=8`` against none, MAC ratio against latency ratio.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/finetune_quality.py

The fine-tune is the same for every flow: ``--ft-epochs``, ``--ft-lr`` and ``--schedule``
(``constant``, or ``cosine`` decay to zero). Under a constant learning rate the last
epoch's accuracy swings by about a point from epoch to epoch, so single rows are noisy:
the verdict gives each difference to Torch-Pruning with its standard error over seeds.

Parts can run in parallel (``--models plain --json a.json``, ...) and be joined with
``--combine a.json b.json c.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from collections import defaultdict
from importlib.metadata import version

import torch
import torch_pruning as tp
from torch.utils import benchmark as tb
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(__file__))
from finetune_models import MODELS, accuracy, digits, train  # noqa: E402

from prunus.compression.torch import L1FilterPruner, reconstruct  # noqa: E402
from prunus.speedup import fix_constants, speedup  # noqa: E402

FLOWS = ['dense+ft', 'masked', 'speedup', 'masked-group', 'speedup-group', 'masked-recon',
         'speedup-recon', 'tp']
SPED = ('speedup', 'speedup-group', 'speedup-recon')
TWIN = {'speedup': 'masked', 'speedup-group': 'masked-group',  # the masked model each
        'speedup-recon': 'masked-recon'}  # was sped up from
# accuracies are float32 percentages: equal image counts can differ by ~1e-7 in the mean
TIE = 1e-6
CALIBRATION = 1024  # training images the reconstruction fits on, in batches of 256


def macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    model.eval()
    with torch.no_grad():
        model(x)  # warm: a cached frozen path is built once, not per call
        with FlopCounterMode(display=False) as counter:
            model(x)
    return counter.get_total_flops() // 2


def prunus_flow(dense, x, ratio, importance, sped: bool, round_to=None, calibration=None):
    model = copy.deepcopy(dense)
    kwargs = {} if importance is None else {'importance': importance}
    if round_to:
        kwargs['round_to'] = round_to
    pruner = L1FilterPruner(model, [{'sparsity': ratio, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x, **kwargs)
    pruner.compress()
    if calibration is not None:
        reconstruct(model, dense, calibration)
    return speedup(model, x, pruner) if sped else model


def tp_flow(dense, x, ratio, round_to=None):
    model = copy.deepcopy(dense)
    # prunus prunes the convs only: Torch-Pruning leaves every Linear alone too
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                  pruning_ratio=ratio, ignored_layers=linears,
                                  round_to=round_to)
    pruner.step()
    return model


def latencies(models: dict[str, torch.nn.Module], x: torch.Tensor, rounds: int = 7
              ) -> dict[str, float]:
    """Median batch-1 seconds per model, the models timed round-robin so drifts in machine
    load hit all of them alike."""
    times = defaultdict(list)
    for model in models.values():
        model.eval()
    with torch.no_grad():
        for _ in range(rounds):
            for name, model in models.items():
                timer = tb.Timer('m(x)', globals={'m': model, 'x': x}, num_threads=1)
                times[name].append(timer.timeit(100).median)
    return {n: statistics.median(t) for n, t in times.items()}


_DENSE: dict = {}


def dense_model(arch: str, seed: int, args) -> torch.nn.Module:
    """The trained dense model of a seed (trained once, shared by both ratios)."""
    if (arch, seed) not in _DENSE:
        torch.manual_seed(seed)
        _DENSE[arch, seed] = train(MODELS[arch](), digits(seed)[0], args.epochs, args.lr, seed)
    return _DENSE[arch, seed]


def run_seed(arch: str, seed: int, ratio: float, args) -> dict[str, dict]:
    train_set, test_set = digits(seed)
    dense = dense_model(arch, seed, args)
    x = train_set[0][:4]
    one = train_set[0][:1]
    calibration = list(train_set[0][:CALIBRATION].split(256))
    made = {
        'dense+ft': copy.deepcopy(dense),
        'masked': prunus_flow(dense, x, ratio, None, False),
        'speedup': prunus_flow(dense, x, ratio, None, True),
        'masked-group': prunus_flow(dense, x, ratio, 'group', False),
        'speedup-group': prunus_flow(dense, x, ratio, 'group', True),
        'masked-recon': prunus_flow(dense, x, ratio, 'group', False, calibration=calibration),
        'speedup-recon': prunus_flow(dense, x, ratio, 'group', True, calibration=calibration),
        'tp': tp_flow(dense, x, ratio),
    }
    out = {}
    for flow, model in made.items():
        removal = accuracy(model, test_set)
        train_params = sum(p.numel() for p in model.parameters())
        train(model, train_set, args.ft_epochs, args.ft_lr, seed + 100, args.schedule)
        fix_constants(model)  # deployed as a user would: the learned constants fixed
        out[flow] = {'removal': removal, 'final': accuracy(model, test_set),
                     'params': sum(p.numel() for p in model.parameters()),
                     'train_params': train_params, 'macs': macs(model, one)}
    lat = latencies({f: m for f, m in made.items()}, one)
    for flow in made:
        out[flow]['latency'] = lat[flow] / lat['dense+ft']
    out['dense+ft']['dense'] = accuracy(dense, test_set)
    return out


def round_to_rows(arch: str, ratio: float, seed: int, args) -> dict:
    """MACs and batch-1 latency (relative to dense) of the sped-up model, without and
    with ``round_to=8``, and Torch-Pruning's with ``round_to=8``."""
    dense = dense_model(arch, seed, args)
    x = digits(seed)[0][0][:4]
    one = x[:1]
    made = {'dense': dense, 'prunus': prunus_flow(dense, x, ratio, 'group', True),
            'prunus round_to=8': prunus_flow(dense, x, ratio, 'group', True, round_to=8),
            'tp round_to=8': tp_flow(dense, x, ratio, round_to=8)}
    lat = latencies(made, one)
    base = macs(dense, one)
    return {k: {'macs': macs(m, one) / base, 'latency': lat[k] / lat['dense'],
                'widths': [c.out_channels for c in m.modules()
                           if isinstance(c, torch.nn.Conv2d)]}
            for k, m in made.items() if k != 'dense'}


def round_table(rounds: dict) -> list[str]:
    lines = ['| model | channels removed | variant | conv widths | MACs vs dense | '
             'latency vs dense |', '|---|---|---|---|---|---|']
    for key, per in rounds.items():
        arch, ratio = key.split('@')
        for variant, r in per.items():
            lines.append(f'| {arch} | {float(ratio):.0%} | {variant} | '
                         f'{", ".join(map(str, r["widths"]))} | {r["macs"]:.3f} | '
                         f'{r["latency"]:.2f} |')
    return lines


def table(results: dict, seeds: list[int]) -> list[str]:
    lines = ['| model | channels removed | flow | acc. after removal % | acc. after fine-tune % '
             '| min / max over seeds | params (deployed) | params while fine-tuning | MACs '
             '| latency vs dense |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for key, per_seed in results.items():
        arch, ratio = key.split('@')[0], float(key.split('@')[1])
        for flow in (f for f in FLOWS if f in per_seed[seeds[0]]):
            rows = [per_seed[s][flow] for s in seeds]
            mean = {k: statistics.mean(r[k] for r in rows) for k in rows[0] if k != 'dense'}
            finals = [r['final'] for r in rows]
            lines.append(f'| {arch} | {ratio:.0%} | {flow} | {mean["removal"]:.2f} | '
                         f'{mean["final"]:.2f} | {min(finals):.1f} / {max(finals):.1f} | '
                         f'{mean["params"]:,.0f} | {mean.get("train_params", mean["params"]):,.0f} | '
                         f'{mean["macs"]:,.0f} | '
                         f'{mean["latency"]:.2f} |')
    return lines


def _paired(per_seed: dict, seeds: list[str], flow: str, other: str) -> tuple[float, float]:
    """Mean and standard error over seeds of ``flow``'s final accuracy minus ``other``'s."""
    diff = [per_seed[s][flow]['final'] - per_seed[s][other]['final'] for s in seeds]
    err = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
    mean = statistics.mean(diff)
    return (0.0 if abs(mean) < TIE else mean), err


def verdict(results: dict, seeds: list[int]) -> list[str]:
    lines = []
    for key, per_seed in results.items():
        arch, ratio = key.split('@')[0], float(key.split('@')[1])

        def mean(flow, key):
            return statistics.mean(per_seed[s][flow][key] for s in seeds)
        flows = [f for f in SPED if f in per_seed[seeds[0]]]
        best = max(flows, key=lambda f: mean(f, 'final'))
        for flow in flows:
            vs_tp, err = _paired(per_seed, seeds, flow, 'tp')
            vs_masked, err_masked = _paired(per_seed, seeds, flow, 'masked')
            twin = TWIN[flow]
            vs_twin, err_twin = _paired(per_seed, seeds, flow, twin)
            fewer = mean(flow, 'macs') <= mean('tp', 'macs')
            missed = [what for what, bad in (('below Torch-Pruning', vs_tp < 0 or not fewer),
                                             ('> 0.5 pt below its masked twin', vs_twin < -0.5))
                      if bad]
            masked_text = ('' if twin == 'masked' else
                           f', {vs_masked:+.2f} +- {err_masked:.2f} pt vs prunus masked (L1)')
            lines.append(f'- {arch} {ratio:.0%} {flow}: {vs_tp:+.2f} +- {err:.2f} pt vs '
                         f'Torch-Pruning ({"equal or fewer" if fewer else "more"} MACs), '
                         f'{vs_twin:+.2f} +- {err_twin:.2f} pt vs its masked twin {twin}'
                         f'{masked_text}{" (best prunus flow)" if flow == best else ""}: '
                         + ('targets met' if not missed else 'missed: ' + ', '.join(missed)))
    return lines


def _measure(args) -> dict:
    results, rounds = {}, {}
    start = time.perf_counter()
    for arch in args.models:
        for ratio in args.ratios:
            key = f'{arch}@{ratio}'
            results[key] = {str(s): run_seed(arch, s, ratio, args) for s in args.seeds}
            if not args.skip_round_to:
                rounds[key] = round_to_rows(arch, ratio, args.seeds[0], args)
            print(f'{arch} {ratio}: done ({time.perf_counter() - start:.0f} s)', flush=True)
    return {'results': results, 'rounds': rounds, 'seconds': time.perf_counter() - start,
            'argv': sys.argv[1:]}


def _combine(paths: list[str]) -> dict:
    out = {'results': {}, 'rounds': {}, 'seconds': 0.0, 'argv': []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        for key, per_seed in part['results'].items():  # parts may split models or seeds
            out['results'].setdefault(key, {}).update(per_seed)
        for key, row in part['rounds'].items():  # the first part's: its first seed's table
            out['rounds'].setdefault(key, row)
        out['seconds'] = max(out['seconds'], part['seconds'])
        out['argv'].append(' '.join(part['argv']))
    return out


def _document(data: dict, args, command: str) -> list[str]:
    seeds = sorted({s for per_seed in data['results'].values() for s in per_seed}, key=int)
    return ['# Fine-tune quality: prunus masked / sped-up against Torch-Pruning', '',
            f'Command: `{command}`', '',
            f'torch {torch.__version__}, torch-pruning {version("torch-pruning")}; seeds '
            f'{", ".join(seeds)}; dense training {args.epochs} epochs (Adam, lr {args.lr}), '
            f'fine-tune {args.ft_epochs} epochs (Adam, lr {args.ft_lr}, {args.schedule}) for '
            'every flow; 450 '
            'test images per seed (one image = 0.22 pt). MACs at batch 1 (the masked model '
            'computes at dense cost). Latency: batch-1 CPU, one thread, median of interleaved '
            '`torch.utils.benchmark` rounds, relative to the dense model; on a shared '
            'machine expect ~10% noise, and at these tiny sizes per-call overhead dominates.',
            '', *table(data['results'], seeds), '', '## Against the targets', '',
            *verdict(data['results'], seeds), '',
            *(['## round_to=8: MACs against latency '
               f'(seed {seeds[0]}, group importance, no fine-tune needed)', '',
               *round_table(data['rounds']), ''] if data['rounds'] else []),
            f'Wall time {data["seconds"]:.0f} s.']


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--ratios', type=float, nargs='+', default=[0.5, 0.75])
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--ft-epochs', type=int, default=3)
    parser.add_argument('--ft-lr', type=float, default=1e-3)
    parser.add_argument('--schedule', choices=['constant', 'cosine'], default='constant')
    parser.add_argument('--skip-round-to', action='store_true',
                        help='leave out the round_to latency table')
    parser.add_argument('--json', help='write the raw measurements here (a part)')
    parser.add_argument('--combine', nargs='+', help='join parts written with --json')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results',
                                                      'finetune_quality.md'))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = _combine(args.combine) if args.combine else _measure(args)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(data, f)
    parts = data['argv'] if args.combine else [' '.join(sys.argv[1:])]
    command = '; '.join(f'OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/finetune_quality.py '
                        f'{p}'.strip() for p in parts)
    if args.combine:
        # the fine-tune flags go along: the joined document's header is written from them
        command += f'; then `... {" ".join(sys.argv[1:])}`'
    doc = _document(data, args, command)
    with open(args.out, 'w') as f:
        f.write('\n'.join(doc) + '\n')
    print('\n'.join(doc))


if __name__ == '__main__':
    main()
