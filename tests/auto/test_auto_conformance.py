"""Invariants every registered automatic pruner keeps on a tiny CNN."""
import json

import pytest
import torch

from prunus.compression import available_pruners
from prunus.compression.torch import get_masks, pruned_flops

from .factories import FACTORIES
from .models import Fidelity, example_input, tiny_model

# AutoCompress returns a sped-up model rather than a masked one: tests/auto/test_autocompress.py.
# TransformerHeadPruner needs attention groups, not a CNN: tests/transformers/test_head_pruner.py.
OWN_TESTS = {'auto_compress', 'transformer_head'}
AUTO = sorted(name for name, cls in available_pruners('torch').items()
              if not getattr(cls, 'conformance', True) and name not in OWN_TESTS)


def test_every_search_pruner_has_a_factory_here():
    assert set(AUTO) <= set(FACTORIES), 'add a factory for the new pruner in tests/auto/factories.py'
    assert {'simulated_annealing', 'netadapt', 'sensitivity', 'amc'} <= set(AUTO)


def run(name, directory, **kwargs):
    model = tiny_model()
    fidelity = Fidelity(model)
    pruner = FACTORIES[name](model, fidelity, directory, **kwargs)
    return pruner, pruner.compress(), fidelity


def weight_sparsity(pruner, model):
    masks = get_masks(model)
    removed = sum(float((1 - masks[n]['weight']).sum()) for n in pruner.targets if n in masks)
    return removed / sum(m.weight.numel() for m in pruner.targets.values())


@pytest.mark.parametrize('name', AUTO)
def test_weight_budget_is_met(name, tmp_path):
    pruner, model, _ = run(name, tmp_path)
    if pruner.budget == 'flops':
        pytest.skip(f'{name} budgets FLOPs only')
    assert abs(weight_sparsity(pruner, model) - 0.5) <= 0.01


@pytest.mark.parametrize('name', AUTO)
def test_flops_budget_is_met_after_speedup(name, tmp_path):
    x = example_input()
    dense = pruned_flops(tiny_model(), x, {})
    _, model, _ = run(name, tmp_path, budget='flops', dummy_input=x)
    removed = 1 - pruned_flops(model, x) / dense
    if name == 'amc':  # AMC's flops_ratio is a ceiling: the nearest allocation that keeps no more
        assert 0.5 - 1e-9 <= removed <= 0.5 + 0.02
    else:
        assert abs(removed - 0.5) <= 0.01


@pytest.mark.parametrize('name', AUTO)
def test_deterministic_given_the_seed(name, tmp_path):
    _, a, _ = run(name, tmp_path / 'a', seed=5)
    _, b, _ = run(name, tmp_path / 'b', seed=5)
    masks_a, masks_b = get_masks(a), get_masks(b)
    assert masks_a.keys() == masks_b.keys()
    assert all(torch.equal(masks_a[n]['weight'], masks_b[n]['weight']) for n in masks_a)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize('name', AUTO)
def test_experiment_dir_holds_history_best_config_and_masks_and_resumes(name, tmp_path):
    pruner, model, first = run(name, tmp_path)
    history = json.loads((tmp_path / 'search_history.json').read_text())
    assert history['trials'] and all('score' in t for t in history['trials'])
    best = json.loads((tmp_path / 'best_config.json').read_text())
    ceiling = name == 'amc'  # AMC's flops_ratio is a ceiling (see test_flops_budget_is_met_after_speedup)
    assert best['config_list'] and (0.5 - 1e-9 <= best['achieved'] <= 0.52 if ceiling
                                    else abs(best['achieved'] - 0.5) <= 0.01)
    saved = torch.load(tmp_path / 'best_masks.pth')
    assert all(torch.equal(saved[n]['weight'], m['weight']) for n, m in get_masks(model).items())
    again, model_again, second = run(name, tmp_path)
    assert second.calls < first.calls
    assert all(torch.equal(get_masks(model)[n]['weight'], m['weight']) for n, m in get_masks(model_again).items())


@pytest.mark.parametrize('name', AUTO)
def test_conv_layers_only_when_selected(name, tmp_path):
    pruner, model, _ = run(name, tmp_path)
    assert set(pruner.targets) == {'conv1', 'conv2', 'conv3'}
    assert 'fc' not in get_masks(model)


@pytest.mark.parametrize('name', [n for n in AUTO if n != 'amc'])
def test_a_process_pool_gives_the_serial_result(name, tmp_path):
    from concurrent.futures import ProcessPoolExecutor
    _, serial, _ = run(name, tmp_path / 's')
    with ProcessPoolExecutor(2) as pool:
        _, parallel, _ = run(name, tmp_path / 'p', executor=pool)
    assert all(torch.equal(get_masks(serial)[n]['weight'], m['weight']) for n, m in get_masks(parallel).items())
    # the same decisions; weights equal up to summation order, because forked workers run
    # on one thread (forksafe) while the serial run uses torch's default threads
    assert all(torch.allclose(p, q, rtol=1e-5, atol=1e-7)
               for p, q in zip(serial.state_dict().values(), parallel.state_dict().values()))


@pytest.mark.parametrize('name', [n for n in AUTO if n != 'amc'])
def test_flops_budget_needs_a_channel_criterion(name, tmp_path):
    with pytest.raises(ValueError, match="budget='flops' needs a channel criterion as base_algo; 'level'"):
        run(name, tmp_path, budget='flops', dummy_input=example_input(), base_algo='level')


def test_one_log_line_per_evaluated_trial(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger='prunus.search'):
        _, _, fidelity = run('simulated_annealing', tmp_path)
    trials = [r for r in caplog.records if ' trial ' in r.getMessage()]
    assert len(trials) == fidelity.calls and 'score' in trials[0].getMessage()


def test_progress_bar_shows_the_best_score(tmp_path, capsys):
    model = tiny_model()
    fidelity = Fidelity(model)
    pruner = FACTORIES['simulated_annealing'](model, fidelity, tmp_path)
    pruner.progress = True
    pruner.compress()
    assert f'best={pruner.best_score:.4f}' in capsys.readouterr().err
