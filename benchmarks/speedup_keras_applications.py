"""Keras speedup on keras.applications: independent vs dependency-aware L1 masks.

For each architecture (weights=None, random BatchNorm statistics so constants are not
trivially zero) L1FilterPruner masks 50% of the filters of the given layer types, with and
without ``dependency_aware``; ``speedup`` then removes what it can. Reported: params
before/after, how many masked channels the speedup had to keep (and why, summed), and the
relative max output error of the sped-up model against the masked one.

    OMP_NUM_THREADS=1 python benchmarks/speedup_keras_applications.py --size 64
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

import keras
import numpy as np

from prunus.compression.tf import L1FilterPruner
from prunus.speedup.tf import speedup

TYPES = {'ResNet50': ['Conv2D'], 'MobileNetV2': ['Conv2D', 'DepthwiseConv2D'],
         'EfficientNetB0': ['Conv2D', 'DepthwiseConv2D']}


def _perturb_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.5, c),
                               rng.normal(0, 0.5, c), rng.uniform(0.5, 2.0, c)])


def measure(app: str, size: int, dependency_aware: bool) -> str:
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), classes=10)
    _perturb_batchnorm(model, np.random.default_rng(0))
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': TYPES[app]}],
                            dependency_aware=dependency_aware)
    pruner.compress()
    small, summary = speedup(model, pruner, return_summary=True)
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    err = np.abs(np.asarray(small(x, training=False)) - ref).max() / np.abs(ref).max()
    masked = sum(int((e['weight'].reshape(-1, e['weight'].shape[-1]).max(axis=0) == 0).sum())
                 for e in pruner.get_masks().values())
    why = Counter()
    for reason, n in summary['pruned_but_kept'].items():
        why[re.sub(r"'[^']*'", '<layer>', reason)] += n  # one line per kind of reason
    before, after = summary['params_before'], summary['params_after']
    return (f"{app:15s} {'dependency' if dependency_aware else 'independent':11s} "
            f"{before:>10,d} -> {after:>10,d} ({after / before:.3f})  masked {masked:6d}, "
            f"kept {sum(why.values()):5d} {dict(why)}  rel. error {err:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--models', nargs='+', default=list(TYPES))
    parser.add_argument('--size', type=int, default=64)
    args = parser.parse_args()
    for app in args.models:
        for dependency_aware in (False, True):
            print(measure(app, args.size, dependency_aware), flush=True)


if __name__ == '__main__':
    main()
