"""Masked vs sped-up Keras models after the same fine-tune, on sklearn's digits.

    OMP_NUM_THREADS=1 PYTHONPATH=. python -m tests.tf.finetune_digits --seeds 1 2 3 4 5

For each architecture (a residual and a plain CNN, every conv zero-padded) and sparsity:
train the dense net once, prune it with dependency-aware L1 filter masks, speed the
masked copy up, then fine-tune the masked model and the sped-up one from that same start
with the same seed, and print both test accuracies (mean over seeds). Not a test: a
measurement for issue 11 (whether the constant paths learn as the masked model does).
"""
from __future__ import annotations

import argparse

import keras
import numpy as np
from sklearn.datasets import load_digits

from prunus.compression.tf import L1FilterPruner
from prunus.speedup.tf import speedup

L = keras.layers


def _unit(y, filters: int, name: str, strides: int = 1, relu: bool = True):
    y = L.Conv2D(filters, 3, strides=strides, padding='same', name=name)(y)
    y = L.BatchNormalization(momentum=0.9, name=f'{name}_bn')(y)
    return L.ReLU()(y) if relu else y


def residual() -> keras.Model:
    """stem -> [unit -> unit] + stem -> strided unit -> GAP -> Dense."""
    x = keras.Input((8, 8, 1))
    stem = _unit(x, 16, 'stem')
    y = L.ReLU()(L.Add()([stem, _unit(_unit(stem, 16, 'a1'), 16, 'a2', relu=False)]))
    y = L.GlobalAveragePooling2D()(_unit(y, 32, 'head', strides=2))
    return keras.Model(x, L.Dense(10, name='fc')(y))


def plain() -> keras.Model:
    """Three padded units, the last strided -> GAP -> Dense."""
    x = keras.Input((8, 8, 1))
    y = _unit(_unit(_unit(x, 16, 'c1'), 32, 'c2'), 32, 'c3', strides=2)
    return keras.Model(x, L.Dense(10, name='fc')(L.GlobalAveragePooling2D()(y)))


def digits():
    """(train, test) splits of sklearn's digits, 8x8x1 in [0, 1]."""
    data = load_digits()
    x = (data.images[..., None] / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def train(model: keras.Model, data, epochs: int, seed: int) -> keras.Model:
    """AdamW(3e-3, weight decay 1e-4), batch 64, seeded data order."""
    keras.utils.set_random_seed(seed)
    model.compile(keras.optimizers.AdamW(3e-3, weight_decay=1e-4),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*data, batch_size=64, epochs=epochs, shuffle=True, verbose=0)
    return model


def accuracy(model: keras.Model, data) -> float:
    """Top-1 accuracy in percent."""
    return float((np.asarray(model.predict(data[0], verbose=0)).argmax(1) == data[1]).mean()) * 100


def copy_of(model: keras.Model) -> keras.Model:
    """A fresh model with the same layers and weights."""
    twin = keras.models.clone_model(model)
    twin.set_weights(model.get_weights())
    return twin


def masked_copy(dense: keras.Model, sparsity: float):
    """A copy of ``dense`` with dependency-aware L1 masks attached (they hold in fit)."""
    model = copy_of(dense)
    pruner = L1FilterPruner(model, [{'sparsity': sparsity, 'op_types': ['Conv2D']}],
                            dependency_aware=True)
    pruner.compress()
    return model, pruner


def run(arch: str, sparsity: float, seeds: list[int], epochs: int, data) -> dict:
    """Mean accuracies (masked, sped-up) after the fine-tune, and the per-seed lists."""
    train_set, test_set = data
    keras.utils.set_random_seed(0)
    dense = train({'residual': residual, 'plain': plain}[arch](), train_set, 5, seed=0)
    masked, pruner = masked_copy(dense, sparsity)
    small = speedup(masked, pruner)
    tuned = {'masked': [], 'small': []}
    for seed in seeds:
        start, _ = masked_copy(dense, sparsity)
        tuned['masked'].append(accuracy(train(start, train_set, epochs, seed), test_set))
        tuned['small'].append(accuracy(train(copy_of(small), train_set, epochs, seed), test_set))
    return {'dense': accuracy(dense, test_set), 'removal': accuracy(small, test_set), **tuned}


def main(argv=None) -> None:
    """Prints one markdown row per architecture and sparsity.

    Args:
        argv: command-line arguments (default: sys.argv).

    Example::

        main(['--seeds', '1', '2'])
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3, 4, 5])
    parser.add_argument('--sparsities', type=float, nargs='+', default=[0.5, 0.75])
    parser.add_argument('--archs', nargs='+', default=['residual', 'plain'])
    parser.add_argument('--epochs', type=int, default=3)
    args = parser.parse_args(argv)
    data = digits()
    print('| model | sparsity | dense | after speedup | masked, fine-tuned | sped-up, fine-tuned |')
    print('|---|---|---|---|---|---|')
    for arch in args.archs:
        for sparsity in args.sparsities:
            r = run(arch, sparsity, args.seeds, args.epochs, data)
            print(f"| {arch} | {sparsity:.0%} | {r['dense']:.2f} | {r['removal']:.2f} | "
                  f"{np.mean(r['masked']):.2f} | {np.mean(r['small']):.2f} |", flush=True)
            print(f"<!-- {arch} {sparsity}: masked {r['masked']} small {r['small']} -->", flush=True)


if __name__ == '__main__':
    main()
