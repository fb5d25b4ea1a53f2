"""How to build each registered automatic pruner for a tiny, fast search."""
from __future__ import annotations

from prunus.compression.torch import AMCPruner, NetAdaptPruner, SensitivityPruner, SimulatedAnnealingPruner

from .models import FineTune

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def simulated_annealing(model, fidelity, directory, **kwargs):
    return SimulatedAnnealingPruner(model, CONFIG, fidelity, experiment_data_dir=directory, stop_temperature=60,
                                    cool_down_rate=0.8, progress=False, **kwargs)


def netadapt(model, fidelity, directory, **kwargs):
    return NetAdaptPruner(model, CONFIG, FineTune(fidelity), fidelity, sparsity_per_iteration=0.25,
                          experiment_data_dir=directory, progress=False, **kwargs)


def sensitivity(model, fidelity, directory, **kwargs):
    return SensitivityPruner(model, CONFIG, finetuner=FineTune(fidelity), evaluator=fidelity, sparsity_per_iter=0.25,
                             checkpoint_dir=directory, sparsities=[0.25, 0.5, 0.75], progress=False, **kwargs)


def amc(model, fidelity, directory, budget='sparsity', dummy_input=None, **kwargs):
    # AMC's budget is always FLOPs (flops_ratio); the weight-budget test reads its FLOPs instead.
    loader = [(fidelity.x, None)]
    return AMCPruner(model, [{'op_types': ['Conv2d']}], lambda data, m: fidelity(m), loader, flops_ratio=0.5,
                     channel_round=1, train_episode=6, warmup=3, bsize=8, hidden1=16, hidden2=16,
                     output_dir=directory, progress=False, **kwargs)


FACTORIES = {'simulated_annealing': simulated_annealing, 'netadapt': netadapt, 'sensitivity': sensitivity, 'amc': amc}
