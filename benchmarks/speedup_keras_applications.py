"""Keras speedup on keras.applications: independent vs dependency-aware L1 masks.

For each architecture (weights=None, random BatchNorm statistics so constants are not
trivially zero) L1FilterPruner masks 50% of the filters of the given layer types, with and
without ``dependency_aware``; ``speedup`` then removes what it can. Reported: params
before/after, how many masked channels the speedup had to keep (and why, summed), and the
relative max output error of the sped-up model against the masked one.

    OMP_NUM_THREADS=1 python benchmarks/speedup_keras_applications.py --size 64
    OMP_NUM_THREADS=1 python benchmarks/speedup_keras_applications.py --all
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
# every other keras.applications family, with the input side it needs (masks on every
# convolution type: depthwise and separable convs carry the channels of MobileNets,
# EfficientNetV2, Xception and NASNet)
ALL_CONVS = ['Conv2D', 'DepthwiseConv2D', 'SeparableConv2D']
MORE = {'ConvNeXtTiny': 64, 'DenseNet121': 64, 'EfficientNetV2B0': 64, 'InceptionV3': 96,
        'InceptionResNetV2': 96, 'MobileNet': 64, 'MobileNetV3Small': 64,
        'MobileNetV3Large': 64, 'NASNetMobile': 224, 'ResNet50V2': 64, 'ResNet101': 64,
        'VGG16': 64, 'Xception': 96}


def _perturb_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            values = []  # scale=False / center=False layers lack gamma / beta
            for v in layer.weights:
                c, name = v.shape[0], v.path.rsplit('/', 1)[-1]
                values.append(rng.uniform(0.5, 2.0, c) if 'variance' in name else
                              rng.uniform(0.5, 1.5, c) if 'gamma' in name else
                              rng.normal(0, 0.5, c))
            layer.set_weights(values)


def measure(app: str, size: int, dependency_aware: bool) -> str:
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, app)(weights=None, input_shape=(size, size, 3), classes=10)
    _perturb_batchnorm(model, np.random.default_rng(0))
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': TYPES.get(app, ALL_CONVS)}],
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
    parser.add_argument('--all', action='store_true',
                        help='every keras.applications family, each at the input size it needs')
    args = parser.parse_args()
    models = {**{m: args.size for m in TYPES}, **MORE} if args.all else \
        {m: args.size for m in args.models}
    for app, size in models.items():
        for dependency_aware in (False, True):
            print(measure(app, size, dependency_aware), flush=True)


if __name__ == '__main__':
    main()
