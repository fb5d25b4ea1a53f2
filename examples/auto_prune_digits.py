"""Search a per-layer allocation for the demo's digits CNN at half its FLOPs, then shrink it.

Simulated annealing scores candidates on a validation split; the search history, best
config and best masks land in ./sa_digits (rerun to see it resume without evaluating).
Candidates run two at a time in a process pool.
"""
from concurrent.futures import ProcessPoolExecutor

from prunus.compression.torch import SimulatedAnnealingPruner, pruned_flops
from prunus.demo import DigitsCNN, accuracy, load_digits_data, train
from prunus.speedup import speedup


class ValAccuracy:
    """A picklable evaluator, so a process pool can run it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __call__(self, model):
        return accuracy(model, self.x, self.y)


if __name__ == '__main__':
    x_train, y_train, x_test, y_test = load_digits_data(0)
    model = train(DigitsCNN(), x_train[:1000], y_train[:1000], epochs=15)
    example = x_test[:1]
    dense_flops = pruned_flops(model, example, {})
    with ProcessPoolExecutor(2) as pool:
        pruner = SimulatedAnnealingPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                          ValAccuracy(x_train[1000:], y_train[1000:]), budget='flops',
                                          dummy_input=example, experiment_data_dir='sa_digits', executor=pool,
                                          candidates_per_temperature=2)
        model = pruner.compress()
    small = speedup(model, example)
    print(f'allocation: {pruner.best_allocation}')
    print(f'FLOPs left: {pruned_flops(small, example, {}) / dense_flops:.3f}, '
          f'test accuracy before fine-tuning: {accuracy(small, x_test, y_test):.2%}')
