"""SimulatedAnnealingPruner: budget, determinism, files, resume, executors."""
import copy
import json
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest
import torch

from prunus.compression.torch import SimulatedAnnealingPruner, get_masks
from prunus.compression.torch.auto import pruned_flops

from .models import Fidelity, example_input, tiny_model

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
FAST = {'start_temperature': 100, 'stop_temperature': 60, 'cool_down_rate': 0.8}


def _run(tmp_path, **kwargs):
    model = tiny_model()
    fidelity = kwargs.pop('evaluator', None) or Fidelity(model)
    options = {**FAST, 'experiment_data_dir': tmp_path, 'progress': False, **kwargs}
    pruner = SimulatedAnnealingPruner(model, CONFIG, fidelity, **options)
    return pruner, pruner.compress(), fidelity


def test_weight_budget_is_met_and_masks_are_attached(tmp_path):
    pruner, model, fidelity = _run(tmp_path)
    masks = get_masks(model)
    removed = sum(float((1 - m['weight']).sum()) for m in masks.values())
    total = sum(model.get_submodule(n).weight.numel() for n in pruner.targets)
    assert abs(removed / total - 0.5) <= 0.01
    # one evaluation per distinct candidate: a repeated allocation is looked up
    history = json.loads((pruner.experiment_data_dir / 'search_history.json').read_text())
    assert 1 <= fidelity.calls == len(history['trials']) <= 1 + len(pruner.schedule)


def test_flops_budget_is_met_on_the_sped_up_model(tmp_path):
    x = example_input()
    dense = pruned_flops(tiny_model(), x, {})
    pruner, model, _ = _run(tmp_path, budget='flops', dummy_input=x)
    assert abs(1 - pruned_flops(model, x) / dense - 0.5) <= 0.01


def test_same_seed_same_search_other_seed_other_path(tmp_path):
    a, _, _ = _run(tmp_path / 'a', seed=3)
    b, _, _ = _run(tmp_path / 'b', seed=3)
    c, _, _ = _run(tmp_path / 'c', seed=4)
    trials = [json.loads((tmp_path / d / 'search_history.json').read_text())['trials'] for d in 'abc']
    assert a.best_allocation == b.best_allocation and trials[0] == trials[1]
    assert [t['key'] for t in trials[0]] != [t['key'] for t in trials[2]]


def test_files_are_written_and_a_rerun_resumes_without_evaluating(tmp_path):
    pruner, model, first = _run(tmp_path)
    history = json.loads((tmp_path / 'search_history.json').read_text())
    assert len(history['trials']) == first.calls
    best = json.loads((tmp_path / 'best_config.json').read_text())
    assert best['score'] == pytest.approx(pruner.best_score)
    saved = torch.load(tmp_path / 'best_masks.pth')
    assert all(torch.equal(saved[n]['weight'], m['weight']) for n, m in get_masks(model).items())
    again, _, fidelity = _run(tmp_path)
    assert fidelity.calls == 0 and again.best_allocation == pruner.best_allocation


def test_best_config_reproduces_the_masks_with_the_base_pruner(tmp_path):
    from prunus.compression.torch import L1FilterPruner
    pruner, model, _ = _run(tmp_path)
    config = json.loads((tmp_path / 'best_config.json').read_text())['config_list']
    again = L1FilterPruner(tiny_model(), config).compress()
    for name, masks in get_masks(model).items():
        assert torch.equal(get_masks(again)[name]['weight'], masks['weight'])


@pytest.mark.parametrize('kind', ['thread', 'process'])
def test_parallel_candidates_give_the_serial_result(tmp_path, kind):
    serial, _, _ = _run(tmp_path / 's', candidates_per_temperature=2)
    pool = ThreadPoolExecutor(2) if kind == 'thread' else ProcessPoolExecutor(2)
    with pool:
        parallel, _, _ = _run(tmp_path / 'p', candidates_per_temperature=2, executor=pool)
    assert parallel.best_allocation == serial.best_allocation
    assert parallel.best_score == pytest.approx(serial.best_score)


def test_dask_executor(tmp_path):
    distributed = pytest.importorskip('distributed')
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        parallel, _, _ = _run(tmp_path / 'd', candidates_per_temperature=2, executor=client.get_executor())
    serial, _, _ = _run(tmp_path / 's', candidates_per_temperature=2)
    assert parallel.best_allocation == serial.best_allocation


@pytest.mark.parametrize('kwargs,message', [
    ({'cool_down_rate': 1.2}, r'cool_down_rate must be in \(0, 1\); got 1.2'),
    ({'perturbation_magnitude': 0}, r'perturbation_magnitude must be in \(0, 1\); got 0'),
    ({'optimize_mode': 'max'}, "optimize_mode must be 'maximize' or 'minimize'; got 'max'"),
    ({'base_algo': 'fpmg'}, "no torch pruner is registered as 'fpmg'; did you mean 'fpgm'"),
    ({'base_algo': 'slim'}, "base_algo must be a one-shot pruner of Conv/Linear layers; 'slim' prunes"),
    ({'budget': 'flops'}, "budget='flops' needs dummy_input"),
    ({'budget': 'latency'}, "budget must be one of"),
])
def test_bad_arguments_are_rejected_before_touching_the_model(tmp_path, kwargs, message):
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises((ValueError, TypeError), match=message):
        SimulatedAnnealingPruner(model, CONFIG, Fidelity(model), experiment_data_dir=tmp_path, **kwargs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not get_masks(model)


def test_one_budget_per_search():
    model = tiny_model()
    config = [{'sparsity': 0.5, 'op_names': ['conv1']}, {'sparsity': 0.3, 'op_names': ['conv2']}]
    with pytest.raises(ValueError, match=r"one overall budget, but config_list\[0\] asks 0.5, "
                                         r"config_list\[1\] asks 0.3"):
        SimulatedAnnealingPruner(model, config, Fidelity(model))


def test_a_base_algo_passed_where_optimize_mode_goes_gets_a_hint():
    model = tiny_model()
    with pytest.raises(ValueError, match="got 'l1' \\(it names a pruner: the legacy signature puts optimize_mode "
                                         "before base_algo; pass base_algo='l1' by keyword\\)"):
        SimulatedAnnealingPruner(model, CONFIG, Fidelity(model), 'l1')
