"""What SensitivityAnalysis/SensitivityPruner and NetAdaptPruner add to the shared invariants."""
import copy

import pytest
import torch

from prunus.compression.torch import NetAdaptPruner, SensitivityAnalysis, SensitivityPruner, get_masks
from prunus.compression.torch.auto.sensitivity import tolerated_sparsity

from .models import Fidelity, FineTune, tiny_model

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def test_analysis_scores_each_layer_alone_on_copies(tmp_path):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    fidelity = Fidelity(model)
    analysis = SensitivityAnalysis(model, fidelity, sparsities=[0.25, 0.75], progress=False)
    result = analysis.analysis(val_args=[model])
    assert set(result) == {'conv1', 'conv2', 'conv3'} and all(set(r) == {0.25, 0.75} for r in result.values())
    assert analysis.baseline == pytest.approx(0.0)
    assert all(r[0.75] <= r[0.25] < 0 for r in result.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not get_masks(model)
    text = analysis.table()
    assert text.splitlines()[0].split() == ['layer', '0.25', '0.75'] and 'conv2' in text
    analysis.export(tmp_path / 's.csv')
    loaded = SensitivityAnalysis.load_csv(tmp_path / 's.csv')
    assert all(loaded[n] == pytest.approx(result[n]) for n in result)
    figure = analysis.plot(tmp_path / 's.png')
    assert (tmp_path / 's.png').stat().st_size > 0 and len(figure.axes[0].lines) == 3


def test_analysis_stops_a_layer_early():
    model = tiny_model()
    analysis = SensitivityAnalysis(model, Fidelity(model), sparsities=[0.25, 0.5, 0.75],
                                   early_stop_mode='dropped', early_stop_value=0.0, progress=False)
    result = analysis.analysis(specified_layers=['conv2'])
    assert list(result) == ['conv2'] and list(result['conv2']) == [0.25]


@pytest.mark.parametrize('kwargs,message', [
    ({'early_stop_mode': 'fall'}, 'early_stop_mode must be one of'),
    ({'early_stop_mode': 'dropped'}, 'needs a numeric early_stop_value'),
    ({'sparsities': [0.5, 1.0]}, r'sparsities must be numbers in \(0, 1\); got \[1.0\]'),
])
def test_analysis_rejects_bad_arguments(kwargs, message):
    model = tiny_model()
    with pytest.raises(ValueError, match=message):
        SensitivityAnalysis(model, Fidelity(model), **kwargs)


def test_tolerated_sparsity_reads_up_to_the_first_failure():
    row = {0.1: 0.99, 0.2: 0.97, 0.3: 0.80, 0.4: 0.96}
    assert tolerated_sparsity(row, 1.0, 0.05, 0.0) == 0.2
    assert tolerated_sparsity(row, 1.0, 0.02, 0.05) == 0.1
    assert tolerated_sparsity(row, 1.0, 0.0, 0.05) == 0.05


def test_sensitivity_pruner_calls_evaluator_and_finetuner_with_the_legacy_args(tmp_path):
    model = tiny_model()
    fidelity = Fidelity(model)
    seen = []

    def finetuner(m, tag):
        seen.append((m is model, tag))
    pruner = SensitivityPruner(model, CONFIG, finetuner=finetuner, evaluator=fidelity, sparsity_per_iter=0.25,
                               checkpoint_dir=tmp_path, sparsities=[0.25, 0.5, 0.75], progress=False)
    assert pruner.compress(eval_args=[model], finetune_args=[model, 'x']) is model
    assert seen == [(True, 'x'), (True, 'x')]
    assert sorted(p.name for p in tmp_path.glob('sensitivity_round*.csv')) == ['sensitivity_round0.csv',
                                                                               'sensitivity_round1.csv']


def test_netadapt_fine_tunes_every_candidate_and_keeps_the_winners_weights(tmp_path):
    model = tiny_model()
    fidelity = Fidelity(model)
    calls = []

    class Counting(FineTune):
        def __call__(self, m):
            calls.append(1)
            super().__call__(m)
    pruner = NetAdaptPruner(model, CONFIG, Counting(fidelity), fidelity, sparsity_per_iteration=0.25,
                            experiment_data_dir=tmp_path, progress=False)
    pruned = pruner.compress()
    assert len(calls) == fidelity.calls >= 3
    assert not torch.equal(pruned.conv3.weight, tiny_model().conv3.weight * get_masks(pruned)['conv3']['weight'])


def test_netadapt_rejects_bad_arguments(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match=r'sparsity_per_iteration must be in \(0, 1\); got 1.5'):
        NetAdaptPruner(model, CONFIG, FineTune(Fidelity(model)), Fidelity(model), sparsity_per_iteration=1.5)
    with pytest.raises(TypeError, match='short_term_fine_tuner must be callable'):
        NetAdaptPruner(model, CONFIG, None, Fidelity(model))


def test_sensitivity_pruner_uses_a_custom_proportion_rule(tmp_path):
    model = tiny_model()
    fidelity = Fidelity(model)
    seen = []

    def only_conv3(score, threshold, sensitivities):
        seen.append(sorted(sensitivities))
        return {'conv1': 1e-6, 'conv2': 1e-6, 'conv3': 1.0}
    pruner = SensitivityPruner(model, [{'sparsity': 0.3, 'op_types': ['Conv2d']}], evaluator=fidelity,
                               sparsity_proportion_calc=only_conv3, sparsity_per_iter=0.3, checkpoint_dir=tmp_path,
                               sparsities=[0.5], progress=False)
    pruner.compress()
    assert seen == [['conv1', 'conv2', 'conv3']]
    assert pruner.best_allocation['conv3'] > 0.3 and pruner.best_allocation['conv1'] == 0
