"""Every torchvision classification model through the speedup, with real-looking BatchNorm.

For each model (weights=None, every normalization layer given random statistics and affine
parameters, so a removed filter leaves a non-zero BatchNorm shift behind) the script masks
50% of the channels two ways and runs the speedup on each:

* ``independent``: every Conv/Linear but the classifier by its own L1 norms (tied layers
  disagree, so the speedup must keep what the other side still uses);
* ``dependency``: ``L1FilterPruner(dependency_aware=True)`` on every Conv2d.

It reports the exactness error against the masked model (the larger of the sped-up model's
and the deployed one's, after ``fix_constants``), parameters before, of the sped-up model
(which also holds the weights that let the removed channels' constants learn in
fine-tuning) and deployed, and removed/masked channels. ``vit_h_14``, ``vit_l_16`` and
``vit_l_32`` are skipped by default (memory on a 24 GiB machine).

    OMP_NUM_THREADS=2 python benchmarks/speedup_torchvision_zoo.py [--models resnet18 ...]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torchvision

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import fix_constants, speedup
from prunus.testing.speedup import l1_masks, masked_copy, max_rel_error, randomize_norms

SKIP = {'vit_h_14', 'vit_l_16', 'vit_l_32'}
FIXED_224 = ('vit', 'swin', 'maxvit')


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    kwargs = {'aux_logits': False, 'init_weights': True} if name in ('googlenet',
                                                                     'inception_v3') else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs)
    side = 224 if name.startswith(FIXED_224) else 75 if name == 'inception_v3' else 64
    return randomize_norms(model.eval()), torch.randn(1, 3, side, side)


def dependency_masks(model: torch.nn.Module, x: torch.Tensor) -> dict:
    pruner = L1FilterPruner(copy.deepcopy(model), [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    return pruner.get_masks()


def run(name: str, mode: str) -> str:
    model, x = build(name)
    start = time.perf_counter()
    try:
        masks = l1_masks(model) if mode == 'independent' else dependency_masks(model, x)
        with torch.no_grad():
            ref = masked_copy(model, masks)(x)
        small, s = speedup(model, x, masks, return_summary=True)
        with torch.no_grad():
            err = max_rel_error(ref, small(x))
            fix_constants(small)  # deployed: the constants stop learning, their weights go
            err = max(err, max_rel_error(ref, small(x)))
        deployed = sum(p.numel() for p in small.parameters())
    except Exception as exc:  # noqa: BLE001 (a benchmark row, not a crash)
        return f'| {name} | {mode} | failed: {type(exc).__name__}: {str(exc)[:120]} | | | |'
    return (f'| {name} | {mode} | {err:.1e} | {s.params_before / 1e6:.2f} -> '
            f'{s.params_after / 1e6:.2f} -> {deployed / 1e6:.2f} | '
            f'{s.removed_channels} / {s.masked_channels} | {time.perf_counter() - start:.1f} |')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+',
                        default=[n for n in torchvision.models.list_models(module=torchvision.models)
                                 if n not in SKIP])
    parser.add_argument('--modes', nargs='+', default=['independent', 'dependency'])
    args = parser.parse_args()
    print('| model | masks | rel. error (sped-up and deployed) | params M before -> sped-up '
          '(while fine-tuning) -> deployed | removed / masked channels | s |')
    print('|---|---|---|---|---|---|')
    for name in args.models:
        for mode in args.modes:
            print(run(name, mode), flush=True)


if __name__ == '__main__':
    main()
