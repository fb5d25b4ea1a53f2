"""How to build each registered automatic pruner for a tiny, fast search."""
from __future__ import annotations

from prunus.compression.torch import NetAdaptPruner, SensitivityPruner, SimulatedAnnealingPruner

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


FACTORIES = {'simulated_annealing': simulated_annealing, 'netadapt': netadapt, 'sensitivity': sensitivity}
