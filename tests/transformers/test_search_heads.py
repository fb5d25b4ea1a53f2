"""Attention heads and FFN widths as variables of the automatic searches."""
import pytest
import torch

from prunus.compression.torch import (AMCPruner, AutoCompressPruner, L1FilterPruner, NetAdaptPruner,
                                      SensitivityPruner, SimulatedAnnealingPruner, get_masks)
from prunus.compression.torch.flops import module_flops
from prunus.layers.torch.heads import attention_layout
from prunus.layers.torch.modules import PrunedMultiheadAttention
from prunus.speedup import speedup

from .models import HEADS, build, first_tensor

FFN = {'bert': r'.*intermediate\.dense', 'encoder_stack': r'.*linear1'}
HEAD_ENTRY = {'op_types': ['Linear'], 'granularity': 'head'}


def _config(name, sparsity=0.5):
    return [{'sparsity': sparsity, **HEAD_ENTRY}, {'sparsity': sparsity, 'op_names_re': [FFN[name]]}]


def _evaluator(model, x):
    with torch.no_grad():
        ref = first_tensor(model(*x))

    def evaluate(candidate):
        with torch.no_grad():
            return -float((first_tensor(candidate(*x)) - ref).pow(2).mean())
    return evaluate


def _heads_of(model):
    counts = []
    for m in model.modules():
        lay = attention_layout(m)
        if lay is not None or isinstance(m, PrunedMultiheadAttention):
            counts.append(m.num_heads if lay is None else lay.num_heads)
    return counts


def _search(kind, name, model, x, tmp_path, budget='flops'):
    ev = _evaluator(model, x)
    common = dict(dummy_input=x, progress=False)
    if kind == 'annealing':
        return SimulatedAnnealingPruner(model, _config(name), ev, experiment_data_dir=tmp_path, budget=budget,
                                        start_temperature=100, stop_temperature=70, **common)
    if kind == 'netadapt':
        return NetAdaptPruner(model, _config(name), lambda m: None, ev, experiment_data_dir=tmp_path,
                              budget=budget, sparsity_per_iteration=0.1, **common)
    if kind == 'sensitivity':
        return SensitivityPruner(model, _config(name), evaluator=ev, checkpoint_dir=tmp_path, budget=budget,
                                 sparsity_per_iter=0.25, sparsities=[0.25, 0.5, 0.75], **common)
    config = [dict(HEAD_ENTRY), {'op_names_re': [FFN[name]]}]
    return AMCPruner(model, config, lambda loader, m: ev(m), [x], flops_ratio=0.5, train_episode=4, warmup=2,
                     output_dir=tmp_path, lbound=0.25, **common)


@pytest.mark.parametrize('name', ['bert', 'encoder_stack'])
@pytest.mark.parametrize('kind', ['annealing', 'netadapt', 'amc', 'sensitivity'])
def test_a_flops_search_over_heads_and_ffn_lands_on_its_budget_and_speeds_up_exactly(kind, name, tmp_path):
    model, x = build(name)
    total = module_flops(model, x)['']
    pruner = _search(kind, name, model, x, tmp_path)
    names = pruner.searchable()
    assert sum(n in pruner.head_units for n in names) == 2 and len(names) == 4  # 2 attentions, 2 FFNs
    pruner.compress()
    allocation = pruner.best_allocation
    estimated = pruner.measure(allocation)
    assert abs(estimated - 0.5) < (0.05 if kind == 'netadapt' else 0.02)
    with torch.no_grad():
        masked = first_tensor(model(*x))
    small, summary = speedup(model, x, return_summary=True)
    with torch.no_grad():
        assert torch.allclose(first_tensor(small(*x)), masked, atol=1e-5, rtol=1e-4)
    assert abs((1 - summary.flops_after / total) - estimated) < 1e-9  # the cost model is exact here
    kept = [HEADS - pruner.pruned(k, allocation.get(k, 0.0)) for k in names if k in pruner.head_units]
    assert _heads_of(small) == kept and min(kept) >= 1


def test_the_sparsity_budget_counts_the_weights_head_masks_zero(tmp_path):
    model, x = build('bert')
    pruner = _search('annealing', 'bert', model, x, tmp_path, budget='sparsity')
    pruner.compress()
    masks = get_masks(model)
    selected = {n for key in pruner.head_units for n in pruner.members(key)} | set(pruner.targets)
    total = sum(dict(model.named_modules())[n].weight.numel() for n in selected)
    total += sum(3 * pruner.head_units[k].group.layout.inner for k in pruner.head_units)  # Q/K/V biases
    zero = 0
    for n in selected:
        zero += int((masks[n]['weight'] == 0).sum()) if n in masks else 0
        if n in masks and 'bias' in masks[n] and 'attention.self' in n:
            zero += int((masks[n]['bias'] == 0).sum())
    # the FFN's channels count their own rows and bias rows; their bias is not in the total
    ffn_bias = sum(int((masks[n]['bias'] == 0).sum()) for n in pruner.targets if n in masks)
    assert abs(pruner.measure(pruner.best_allocation) - (zero - ffn_bias) / total) < 1e-9
    speedup(model, x)


def test_best_config_list_reproduces_the_search_masks(tmp_path):
    model, x = build('bert')
    pruner = _search('annealing', 'bert', model, x, tmp_path)
    pruner.compress()
    config = pruner.best_config_list(pruner.best_allocation)
    assert any(e.get('granularity') == 'head' for e in config)
    found = get_masks(model)
    other, _ = build('bert')
    L1FilterPruner(other, config, dummy_input=x).compress()
    again = get_masks(other)
    assert set(found) == set(again)
    assert all(torch.equal(found[n][p], again[n][p]) for n in found for p in found[n])


def test_a_search_without_head_entries_keeps_heads(tmp_path):
    model, x = build('bert')
    ev = _evaluator(model, x)
    pruner = SimulatedAnnealingPruner(model, [{'sparsity': 0.3, 'op_names_re': [FFN['bert']]}], ev,
                                      experiment_data_dir=tmp_path, budget='flops', dummy_input=x,
                                      start_temperature=100, stop_temperature=80, progress=False)
    assert not pruner.head_units
    pruner.compress()
    assert _heads_of(speedup(model, x)) == [HEADS, HEADS]


def test_searches_that_cannot_take_heads_say_so(tmp_path):
    model, x = build('bert')
    with pytest.raises(ValueError, match=r"config_list\[0\]\['granularity'\] is 'head', which AutoCompressPruner "
                                         'does not search'):
        AutoCompressPruner(model, _config('bert'), lambda *a, **k: None, lambda m: 0.0, x,
                           experiment_data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"needs a filter criterion as base_algo.*'level'"):
        SimulatedAnnealingPruner(model, _config('bert'), lambda m: 0.0, experiment_data_dir=tmp_path,
                                 base_algo='level', dummy_input=x)
    with pytest.raises(ValueError, match="needs dummy_input"):
        SimulatedAnnealingPruner(model, _config('bert'), lambda m: 0.0, experiment_data_dir=tmp_path)
    assert not get_masks(model)


@pytest.mark.parametrize('name', ['bert', 'encoder_stack'])
def test_a_parameter_budget_counts_what_the_speedup_removes(name, tmp_path):
    model, x = build(name)
    before = sum(p.numel() for p in model.parameters())
    pruner = SimulatedAnnealingPruner(model, _config(name, 0.2), _evaluator(model, x), experiment_data_dir=tmp_path,
                                      budget='params', dummy_input=x, start_temperature=100, stop_temperature=70,
                                      progress=False)
    pruner.compress()
    estimated = pruner.measure(pruner.best_allocation)
    small = speedup(model, x)
    assert abs(estimated - 0.2) < 0.02
    assert abs((1 - sum(p.numel() for p in small.parameters()) / before) - estimated) < 1e-9


def test_gpt2_heads_alone_under_a_flops_budget(tmp_path):
    model, x = build('gpt2')
    total = module_flops(model, x)['']
    pruner = NetAdaptPruner(model, [{'sparsity': 0.2, 'op_types': ['Conv1D'], 'granularity': 'head'}],
                            lambda m: None, _evaluator(model, x), experiment_data_dir=tmp_path, budget='flops',
                            dummy_input=x, sparsity_per_iteration=0.05, progress=False)
    pruner.compress()
    small, summary = speedup(model, x, return_summary=True)
    assert abs((1 - summary.flops_after / total) - pruner.measure(pruner.best_allocation)) < 1e-9
    assert sum(_heads_of(small)) < 2 * HEADS


def test_autocompress_takes_no_params_budget(tmp_path):
    model, x = build('bert')
    with pytest.raises(ValueError, match="budget='sparsity'"):
        AutoCompressPruner(model, [{'sparsity': 0.5, 'op_names_re': [FFN['bert']]}], lambda *a, **k: None,
                           lambda m: 0.0, x, experiment_data_dir=tmp_path, budget='params')
