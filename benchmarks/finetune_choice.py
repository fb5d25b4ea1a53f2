"""Channel choice or parametrization? Swap them between prunus and Torch-Pruning.

The digits CNNs of ``finetune_quality.py``; per seed one trained dense model and one
fine-tune (``finetune_models.train``) for every flow:

* ``tp``: Torch-Pruning ``MagnitudeImportance(p=1)``, as in ``finetune_quality.py``;
* ``p``: prunus ``L1FilterPruner(dependency_aware=True)`` -> ``speedup``;
* ``p_tpc``: Torch-Pruning's channel choice applied as prunus masks -> prunus ``speedup``
  (prunus's parametrization: removed channels' constants folded, frozen border paths,
  eval-only offset);
* ``tp_pc``: prunus's L1 choice removed by Torch-Pruning (which drops the constants);
* ``pg`` / ``tp_pgc``: the same pair for ``importance='group'``.

``p_tpc`` against ``tp`` isolates the parametrization (same channels), ``tp_pc`` against
``tp`` the channel choice (same removal code). Torch-Pruning's choice is read off by
tagging every BatchNorm's running mean with its channel index before its pruner runs
(its magnitude importance reads weights only), so the models must follow every conv by a
BatchNorm (all three here do).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/finetune_choice.py --out /tmp/choice.json

Prints a line per seed and, at the end, the mean and standard error of each flow's
difference to ``tp`` per model and ratio.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys

import torch
import torch_pruning as tp
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
from finetune_models import MODELS, accuracy, digits, train  # noqa: E402

from prunus.compression.torch import L1FilterPruner  # noqa: E402
from prunus.speedup import speedup  # noqa: E402


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def norm_after(name: str) -> str:
    """``features.3`` -> ``features.4``: the BatchNorm right after a conv in a Sequential."""
    head, _, last = name.rpartition('.')
    return f'{head}.{int(last) + 1}'


def tp_prune(model: nn.Module, x: torch.Tensor, ratio: float, importance) -> nn.Module:
    """Torch-Pruning's removal, in place."""
    tp.pruner.MetaPruner(model, x, importance=importance, pruning_ratio=ratio,
                         ignored_layers=[model.fc]).step()
    return model


def tp_keeps(dense: nn.Module, x: torch.Tensor, ratio: float) -> dict[str, torch.Tensor]:
    """Bool per output channel of every conv: what Torch-Pruning keeps."""
    model = copy.deepcopy(dense)
    mods = dict(model.named_modules())
    for name, conv in convs(model).items():
        mods[norm_after(name)].running_mean = torch.arange(conv.out_channels,
                                                           dtype=torch.float32)
    tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                         pruning_ratio=ratio, ignored_layers=[model.fc]).step()
    mods = dict(model.named_modules())
    out = {}
    for name, conv in convs(dense).items():
        keep = torch.zeros(conv.out_channels, dtype=torch.bool)
        keep[mods[norm_after(name)].running_mean.round().long()] = True
        out[name] = keep
    return out


def prunus_masked(dense: nn.Module, x: torch.Tensor, ratio: float, **kwargs):
    model = copy.deepcopy(dense)
    pruner = L1FilterPruner(model, [{'sparsity': ratio, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x, **kwargs)
    pruner.compress()
    return model, pruner


def prunus_keeps(masked: nn.Module) -> dict[str, torch.Tensor]:
    return {n: c.weight_mask.flatten(1).any(1) for n, c in convs(masked).items()}


def prunus_with(dense: nn.Module, x: torch.Tensor, ratio: float,
                keeps: dict[str, torch.Tensor]) -> nn.Module:
    """prunus's speedup of ``keeps`` (masks set on the model, dense weights restored)."""
    model, _ = prunus_masked(dense, x, ratio)
    originals = convs(dense)
    for name, conv in convs(model).items():
        conv.weight.data.copy_(originals[name].weight.data)
        conv.weight_mask.zero_()
        conv.weight_mask[keeps[name]] = 1
    return speedup(model, x)  # the masks on the model alone


class FixedChoice:
    """A Torch-Pruning importance that ranks the kept channels of ``keeps`` first."""

    def __init__(self, keeps: dict[nn.Module, torch.Tensor]):
        self.keeps = keeps

    def __call__(self, group) -> torch.Tensor:
        scores = torch.zeros(len(group[0].idxs))
        for i, (dep, idxs) in enumerate(group):
            if dep.pruning_fn == tp.prune_conv_out_channels and dep.layer in self.keeps:
                scores[torch.tensor(group[i].root_idxs)] = self.keeps[dep.layer][idxs].float()
                return scores
        raise RuntimeError('FixedChoice: no conv whose output channels the group prunes')


def tp_with(dense: nn.Module, x: torch.Tensor, ratio: float,
            keeps: dict[str, torch.Tensor]) -> nn.Module:
    model = copy.deepcopy(dense)
    mods = dict(model.named_modules())
    model = tp_prune(model, x, ratio, FixedChoice({mods[n]: k for n, k in keeps.items()}))
    return model


def flows(dense: nn.Module, x: torch.Tensor, ratio: float, normalization) -> dict:
    plain, plain_pruner = prunus_masked(dense, x, ratio)
    group, group_pruner = prunus_masked(dense, x, ratio, importance='group',
                                        group_normalization=normalization)
    return {'tp': tp_prune(copy.deepcopy(dense), x, ratio,
                           tp.importance.MagnitudeImportance(p=1)),
            'p': speedup(plain, x, plain_pruner),
            'p_tpc': prunus_with(dense, x, ratio, tp_keeps(dense, x, ratio)),
            'tp_pc': tp_with(dense, x, ratio, prunus_keeps(plain)),
            'pg': speedup(group, x, group_pruner),
            'tp_pgc': tp_with(dense, x, ratio, prunus_keeps(group))}


def summary(results: dict) -> list[str]:
    rows: dict[str, list[dict]] = {}
    for key, accs in results.items():
        rows.setdefault(key.rsplit('@', 1)[0], []).append(accs)
    lines = []
    for key, runs in rows.items():
        parts = []
        for flow in runs[0]:
            diff = [r[flow] - r['tp'] for r in runs]
            err = statistics.stdev(diff) / len(diff) ** 0.5 if len(diff) > 1 else 0.0
            parts.append(f'{flow} {statistics.mean(r[flow] for r in runs):.2f} '
                         f'({statistics.mean(diff):+.2f} +- {err:.2f})')
        lines.append(f'{key} ({len(runs)} seeds): ' + ', '.join(parts))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    parser.add_argument('--ratios', type=float, nargs='+', default=[0.5, 0.75])
    parser.add_argument('--seeds', type=int, nargs='+', default=list(range(10)))
    parser.add_argument('--epochs', type=int, default=8)
    parser.add_argument('--lr', type=float, default=3e-3)
    parser.add_argument('--ft-epochs', type=int, default=5)
    parser.add_argument('--ft-lr', type=float, default=3e-3)
    parser.add_argument('--group-normalization', default=None, choices=[None, 'max', 'mean'],
                        help="importance='group' normalization for pg (default: None, raw)")
    parser.add_argument('--out', required=True, help='JSON of the accuracies per seed')
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for arch in args.models:
        for seed in args.seeds:
            train_set, test_set = digits(seed)
            torch.manual_seed(seed)
            dense = train(MODELS[arch](), train_set, args.epochs, args.lr, seed)
            for ratio in args.ratios:
                accs = {}
                for flow, model in flows(dense, train_set[0][:4], ratio,
                                         args.group_normalization).items():
                    train(model, train_set, args.ft_epochs, args.ft_lr, seed + 100)
                    accs[flow] = accuracy(model, test_set)
                results[f'{arch}@{ratio}@{seed}'] = accs
                print(arch, ratio, seed, {k: round(v, 2) for k, v in accs.items()}, flush=True)
                with open(args.out, 'w') as f:
                    json.dump(results, f)
    print('\n'.join(summary(results)))


if __name__ == '__main__':
    main()
