"""The framework-agnostic search pieces: budgets, annealing, history."""
import json

import numpy as np
import pytest

from prunus.compression.history import BEST_CONFIG_FILE, HISTORY_FILE, SearchHistory
from prunus.compression.search import (AnnealingSchedule, acceptance_probability, guided, perturb, refine_to_budget,
                                       scale_to_budget, solve_layer)

SIZES = {'a': 100, 'b': 300, 'c': 600}


def weight_measure(alloc):
    # whole tenths of each layer, like pruning 10 channels per layer
    return sum(SIZES[k] * round(v * 10) / 10 for k, v in alloc.items()) / sum(SIZES.values())


@pytest.mark.parametrize('target', [0.1, 0.37, 0.5, 0.8])
def test_scale_to_budget_lands_within_half_a_step(target):
    alloc = scale_to_budget({'a': 0.1, 'b': 0.3, 'c': 0.2}, weight_measure, target)
    assert abs(weight_measure(alloc) - target) <= 0.5 * 60 / 1000 + 1e-9
    assert alloc['b'] >= alloc['c'] >= alloc['a'] or max(alloc.values()) == 0.95


def test_scale_to_budget_rejects_an_unreachable_target():
    with pytest.raises(ValueError, match='budget of 0.9900 is unreachable'):
        scale_to_budget({'a': 0.5}, lambda a: a['a'], 0.99, max_sparsity=0.9)


def test_solve_layer_finds_the_smallest_sparsity_or_none():
    value = solve_layer({'a': 0.0, 'b': 0.0, 'c': 0.0}, 'c', weight_measure, 0.3)
    assert weight_measure({'a': 0, 'b': 0, 'c': value}) >= 0.3
    assert weight_measure({'a': 0, 'b': 0, 'c': value - 0.1}) < 0.3
    assert solve_layer({'a': 0.0, 'b': 0.0, 'c': 0.0}, 'a', weight_measure, 0.3) is None


def test_schedule_cools_geometrically_and_validates():
    temps = list(AnnealingSchedule(100, 20, 0.9))
    assert len(temps) == 16 and temps[0] == 100 and temps[-1] > 20 >= temps[-1] * 0.9
    with pytest.raises(ValueError, match='cool_down_rate must be in'):
        AnnealingSchedule(100, 20, 1.5)
    with pytest.raises(ValueError, match='stop_temperature < start_temperature'):
        AnnealingSchedule(10, 20, 0.9)


def test_guided_gives_larger_layers_larger_sparsities():
    assert guided([0.1, 0.5, 0.3], [10, 1000, 5]) == [0.3, 0.5, 0.1]


def test_perturb_is_seeded_and_clipped():
    a = perturb([0.0, 0.9], 0.5, np.random.default_rng(3), max_sparsity=0.95)
    b = perturb([0.0, 0.9], 0.5, np.random.default_rng(3), max_sparsity=0.95)
    assert a == b and all(0 <= v <= 0.95 for v in a)


def test_acceptance_probability():
    assert acceptance_probability(0.9, 0.8, 50, 100, 0.02) == 1.0
    assert acceptance_probability(0.78, 0.8, 100, 100, 0.02) == pytest.approx(np.exp(-1))
    cold = acceptance_probability(0.78, 0.8, 20, 100, 0.02)
    assert cold < acceptance_probability(0.78, 0.8, 100, 100, 0.02)
    assert acceptance_probability(0.7, 0.8, 50, 100, 0.02, maximize=False) == 1.0


def test_history_persists_resumes_and_restarts_on_other_settings(tmp_path):
    history = SearchHistory(tmp_path, 'sa', {'seed': 0})
    history.record({'key': 'x', 'score': 0.5})
    history.save_best([{'sparsity': 0.5, 'op_names': ['a']}], 0.5)
    saved = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert saved['trials'][0]['score'] == 0.5
    assert json.loads((tmp_path / BEST_CONFIG_FILE).read_text())['config_list'][0]['op_names'] == ['a']
    again = SearchHistory(tmp_path, 'sa', {'seed': 0})
    assert again.resumed and again.lookup('x')['score'] == 0.5
    other = SearchHistory(tmp_path, 'sa', {'seed': 1})
    assert not other.resumed and other.lookup('x') is None


def test_refine_combines_coarse_layers_to_land_near_the_budget():
    units = {'a': 4, 'b': 4}
    sizes = {'a': 1.0, 'b': 1.5}

    def measure(alloc):
        return sum(sizes[k] * round(v * units[k]) / units[k] for k, v in alloc.items()) / 2.5
    scaled = scale_to_budget({'a': 1.0, 'b': 1.0}, measure, 0.4)
    refined = refine_to_budget(scaled, units, measure, 0.4)
    assert abs(measure(refined) - 0.4) <= abs(measure(scaled) - 0.4)
    assert abs(measure(refined) - 0.4) < 0.03
    assert all(abs(v * 4 - round(v * 4)) < 1e-9 for v in refined.values())
