"""Tied channel groups (residual streams) searched as one variable under a FLOPs budget."""
import copy
import json

import pytest
import torch
import torchvision

from prunus.compression.torch import AMCPruner, NetAdaptPruner, SimulatedAnnealingPruner, get_masks
from prunus.compression.torch.auto import CostModel, pruned_flops
from prunus.compression.torch.auto.base import channel_masks, follow
from prunus.speedup import speedup

from .models import FineTune, Fidelity, example_input, residual_model

CONVS = ['stem', 'a1', 'b1', 'transition', 'a2', 'b2']
TARGET = 0.85  # above what a1 and a2 alone can remove (about 0.72 at 0.95 each)


def unit_masks(model, cost, allocation):
    """Masks built straight from the cost model's units: the first channels go."""
    masks, modules = {}, dict(model.named_modules())
    for key, sparsity in allocation.items():
        unit = cost.tied[key]
        keep = torch.ones(unit.size, dtype=torch.bool)
        keep[:round(sparsity * unit.size)] = False
        masks.update({n: channel_masks(modules[n], follow(keep, i)) for n, i in unit.index.items()})
    return masks


def test_the_residual_streams_become_units_with_their_batchnorms():
    cost = CostModel(residual_model(), example_input(), CONVS)
    assert list(cost.followers) == ['a1', 'a2']
    assert {k: u.members for k, u in cost.tied.items()} == {'stem': ['stem', 'b1'], 'transition': ['transition', 'b2']}
    assert cost.tied['stem'].followers.keys() == {'bn0', 'bn_b1'}
    assert cost.useful == ['stem', 'a1', 'transition', 'a2']
    assert cost.flops_reduction({n: 0.95 for n in cost.followers}) < TARGET


@pytest.mark.parametrize('allocation', [{'stem': 0.5}, {'transition': 0.25, 'a1': 0.5},
                                        {'stem': 0.75, 'a1': 0.25, 'transition': 0.5, 'a2': 0.125}])
def test_unit_flops_equal_the_speedup(allocation):
    model, x = residual_model(), example_input()
    cost = CostModel(model, x, CONVS)
    masks = unit_masks(model, cost, {k: v for k, v in allocation.items() if k in cost.tied})
    for name in (n for n in allocation if n in cost.followers):
        keep = torch.ones(model.get_submodule(name).out_channels, dtype=torch.bool)
        keep[:round(allocation[name] * len(keep))] = False
        masks[name] = channel_masks(model.get_submodule(name), keep)
        masks.update({f: channel_masks(model.get_submodule(f), follow(keep, i))
                      for f, i in cost.followers[name].items()})
    measured = pruned_flops(model, x, masks)
    assert abs(cost.flops(allocation) - measured) <= 0.01 * measured


def removed_channels(masks, name):
    return (masks[name]['weight'].flatten(1).abs().amax(dim=1) == 0).nonzero().flatten().tolist()


@pytest.mark.parametrize('search', ['simulated_annealing', 'netadapt', 'amc'])
def test_a_budget_out_of_reach_of_single_layers_is_met(search, tmp_path):
    model, x = residual_model(), example_input()
    dense_model = copy.deepcopy(model)
    fidelity = Fidelity(model)
    config = [{'sparsity': TARGET, 'op_types': ['Conv2d']}]
    options = dict(experiment_data_dir=tmp_path, budget='flops', dummy_input=x, progress=False)
    if search == 'simulated_annealing':
        pruner = SimulatedAnnealingPruner(model, config, fidelity, stop_temperature=60, cool_down_rate=0.8, **options)
    elif search == 'netadapt':
        pruner = NetAdaptPruner(model, config, FineTune(fidelity), fidelity, sparsity_per_iteration=0.3, **options)
    else:
        pruner = AMCPruner(model, [{'op_types': ['Conv2d']}], lambda data, m: fidelity(m), [(fidelity.x, None)],
                           flops_ratio=1 - TARGET, channel_round=1, train_episode=4, warmup=2, bsize=4,
                           hidden1=8, hidden2=8, output_dir=tmp_path, progress=False)
    pruned = pruner.compress()
    dense = pruned_flops(dense_model, x, {})
    assert abs(1 - pruned_flops(pruned, x) / dense - TARGET) <= 0.01
    masks = get_masks(pruned)
    # the budget is out of reach of a1 and a2 alone, so some residual stream must shrink
    units = [(a, b) for a, b in (('stem', 'b1'), ('transition', 'b2')) if a in masks or b in masks]
    assert units
    for first, second in units:
        assert removed_channels(masks, first) == removed_channels(masks, second) != []
    small = speedup(pruned, x)
    assert small.b1.out_channels == small.stem.out_channels == 16 - len(removed_channels(masks, 'stem'))
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(fidelity.x), pruned.eval()(fidelity.x), rtol=1e-5, atol=1e-5)
    best = json.loads((tmp_path / 'best_config.json').read_text())
    assert best['units'] == {'stem': ['stem', 'b1'], 'transition': ['transition', 'b2']}
    assert {tuple(e['op_names']) for e in best['config_list']} >= set(units)
    history = json.loads((tmp_path / 'search_history.json').read_text())
    assert any(t.get('units', {}).get('stem') == ['stem', 'b1'] for t in history['trials'])


def test_resnet18_half_flops_by_annealing_searches_the_residual_streams(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    dense_model = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    fidelity = Fidelity(model, n=4, shape=(3, 32, 32))
    pruner = SimulatedAnnealingPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], fidelity,
                                      experiment_data_dir=tmp_path, stop_temperature=80, cool_down_rate=0.8,
                                      budget='flops', dummy_input=x, progress=False)
    searched = pruner.searchable()
    assert {'conv1', 'layer2.0.conv2', 'layer3.0.conv2', 'layer4.0.conv2'} <= set(pruner.tied)
    assert pruner.tied['layer2.0.conv2'].members == ['layer2.0.conv2', 'layer2.0.downsample.0', 'layer2.1.conv2']
    assert set(pruner.tied) <= set(searched) and len(searched) == 12
    pruned = pruner.compress()
    assert abs(1 - pruned_flops(pruned, x) / pruned_flops(dense_model, x, {}) - 0.5) <= 0.01


def test_without_a_flops_budget_every_selected_layer_stays_its_own_variable(tmp_path):
    model = residual_model()
    pruner = SimulatedAnnealingPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], Fidelity(model),
                                      experiment_data_dir=tmp_path, dummy_input=example_input(), progress=False)
    assert pruner.tied == {} and pruner.searchable() == CONVS


def test_mobilenet_v2_searches_every_pointwise_conv():
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    cost = CostModel(model, torch.randn(1, 3, 32, 32), convs)
    covered = set(cost.followers) | {m for u in cost.tied.values() for m in u.members}
    # the depthwise convs follow their expansion conv's channels instead
    assert covered == {n for n in convs if model.get_submodule(n).groups == 1}
    assert len(cost.tied) == 5 and len(cost.useful) == 25


def test_sensitivity_keeps_single_layers_since_its_sweep_prunes_one_at_a_time(tmp_path):
    from prunus.compression.torch import SensitivityPruner
    model = residual_model()
    pruner = SensitivityPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], evaluator=Fidelity(model),
                               checkpoint_dir=tmp_path, budget='flops', dummy_input=example_input(), progress=False)
    assert pruner.tied == {} and pruner.searchable() == ['a1', 'a2']
