"""Invariants every registered PyTorch pruner keeps on every zoo model it can prune."""
from __future__ import annotations

import copy

import pytest
import torch

from prunus.compression import available_pruners, prune_count
from prunus.compression.torch import apply_compression_results, get_masks, strip
from prunus.layers.torch import specs

from .helpers import make_pruner, prunable_types, run_compress
from .zoo import ZOO, build

PRUNERS = {name: cls for name, cls in available_pruners('torch').items()
           if getattr(cls, 'conformance', True)}


def _pairs():
    for pruner_name, cls in sorted(PRUNERS.items()):
        for model_name in ZOO:
            model, _ = build(model_name)
            if prunable_types(cls, model):
                yield pytest.param(pruner_name, model_name, id=f'{pruner_name}-{model_name}')


PAIRS = list(_pairs())


def _compress(pruner_name, model_name, sparsity=0.5, key='sparsity'):
    cls = PRUNERS[pruner_name]
    model, example = build(model_name)
    config = [{key: sparsity, 'op_types': prunable_types(cls, model)}]
    pruner = make_pruner(pruner_name, cls, model, config, example)
    return pruner, run_compress(pruner_name, pruner), example


def _pruned_units(module, mask, structured):
    if not structured:
        return int((mask == 0).sum()), mask.numel()
    rows = specs.filter_matrix(module, mask)
    return int((rows == 0).all(dim=1).sum()), rows.shape[0]


def test_registry_has_the_one_shot_pruners():
    assert {'level', 'l1', 'l2', 'fpgm', 'slim', 'apoz', 'mean_activation', 'taylorfo'} <= set(PRUNERS)


@pytest.mark.parametrize('pruner_name,model_name', PAIRS)
@pytest.mark.parametrize('sparsity', [0.3, 0.5])
def test_exact_sparsity(pruner_name, model_name, sparsity):
    pruner, model, _ = _compress(pruner_name, model_name, sparsity)
    modules = dict(model.named_modules())
    counts = [_pruned_units(modules[n], m['weight'], pruner.structured) for n, m in get_masks(model).items()]
    assert counts, 'no layer was masked'
    if pruner.global_by_default:
        assert sum(c[0] for c in counts) == prune_count(sum(c[1] for c in counts), sparsity)
    else:
        assert all(pruned == prune_count(total, sparsity) for pruned, total in counts)


GLOBAL_PAIRS = [p for p in PAIRS if 'total_sparsity' in PRUNERS[p.values[0]].config_spec.targets]


@pytest.mark.parametrize('pruner_name,model_name', GLOBAL_PAIRS)
def test_total_sparsity_is_exact_over_the_selected_layers(pruner_name, model_name):
    pruner, model, _ = _compress(pruner_name, model_name, 0.4, key='total_sparsity')
    modules = dict(model.named_modules())
    counts = [_pruned_units(modules[n], m['weight'], pruner.structured) for n, m in get_masks(model).items()]
    assert sum(c[0] for c in counts) == prune_count(sum(c[1] for c in counts), 0.4)


@pytest.mark.parametrize('pruner_name,model_name', PAIRS)
def test_masks_survive_optimizer_steps(pruner_name, model_name):
    _, model, example = _compress(pruner_name, model_name)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    modules = dict(model.named_modules())
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(example).float().pow(2).mean().backward()
        for name, per_param in get_masks(model).items():
            for pname, mask in per_param.items():
                grad = getattr(modules[name], pname).grad
                assert grad is None or bool((grad[mask == 0] == 0).all())
        optimizer.step()
    for name, per_param in get_masks(model).items():
        for pname, mask in per_param.items():
            assert bool((getattr(modules[name], pname)[mask == 0] == 0).all())


@pytest.mark.parametrize('pruner_name,model_name', PAIRS)
def test_export_and_reload_round_trip(pruner_name, model_name, tmp_path):
    pruner, model, example = _compress(pruner_name, model_name)
    model.eval()
    expected = model(example)
    pruner.export_model(tmp_path / 'model.pth', tmp_path / 'mask.pth')
    fresh, _ = build(model_name)
    fresh.load_state_dict(torch.load(tmp_path / 'model.pth'))
    apply_compression_results(fresh, tmp_path / 'mask.pth')
    fresh.eval()
    torch.testing.assert_close(fresh(example), expected)
    saved = torch.load(tmp_path / 'mask.pth')
    assert saved.keys() == get_masks(model).keys()


@pytest.mark.parametrize('pruner_name,model_name', PAIRS)
def test_strip_leaves_a_plain_model_with_the_same_outputs(pruner_name, model_name):
    _, model, example = _compress(pruner_name, model_name)
    model.eval()
    expected = model(example)
    plain_keys = set(build(model_name)[0].state_dict())
    strip(model)
    assert not any(name.endswith('_mask') for name, _ in model.named_buffers())
    assert not get_masks(model)
    assert set(model.state_dict()) == plain_keys
    torch.testing.assert_close(model(example), expected)


@pytest.mark.parametrize('pruner_name', sorted(PRUNERS))
@pytest.mark.parametrize('bad_entry,error', [
    ({'sparsity': 1.5, 'op_types': ['default']}, ValueError),
    ({'sparsity': '0.5', 'op_types': ['default']}, TypeError),
    ({'sparsity': 0.5}, ValueError),
    ({'sparsity': 0.5, 'op_names': ['no_such_layer']}, ValueError),
    ({'sparsity': 0.5, 'op_types': ['default'], 'sparsty': 1}, ValueError),
])
def test_bad_config_is_rejected_and_leaves_the_model_untouched(pruner_name, bad_entry, error):
    cls = PRUNERS[pruner_name]
    model, example = build('conv_bn_relu_conv')
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=r'config_list\[0\]'):
        run_compress(pruner_name, make_pruner(pruner_name, cls, model, [bad_entry], example))
    assert not get_masks(model)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])
