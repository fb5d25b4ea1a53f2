"""Masks beside parameters: no renaming, zero gradients, zero weights through training."""
from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from prunus.compression.torch import LevelPruner, apply_masks, get_masks, strip


def _random_mask(param, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(param.shape, generator=generator) > 0.5).to(param.dtype)


def _masked_conv_net():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    masks = {'0': {'weight': _random_mask(model[0].weight), 'bias': _random_mask(model[0].bias, 1)},
             '3': {'weight': _random_mask(model[3].weight, 2)}}
    return model, masks


def _assert_masked_zero(model, masks):
    for name, per_param in masks.items():
        module = model.get_submodule(name)
        for pname, mask in per_param.items():
            assert bool((getattr(module, pname)[mask == 0] == 0).all()), f'{name}.{pname}'


def test_names_and_parameters_are_unchanged():
    model, masks = _masked_conv_net()
    keys, weight = list(model.state_dict()), model[0].weight
    apply_masks(model, masks)
    assert list(model.state_dict()) == keys
    assert model[0].weight is weight and isinstance(model[0].weight, nn.Parameter)
    assert torch.equal(model[0].weight_mask, masks['0']['weight'])
    assert torch.equal(model[0].bias_mask, masks['0']['bias'])


@pytest.mark.parametrize('make_optimizer', [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.05),
    lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
], ids=['sgd_momentum_wd', 'nesterov', 'adam_wd', 'adamw', 'rmsprop'])
def test_masked_weights_stay_zero_through_training(make_optimizer):
    model, masks = _masked_conv_net()
    optimizer = make_optimizer(model.parameters())
    x = torch.randn(4, 3, 6, 6)
    for _ in range(5):  # optimizer state built up before pruning must not revive weights
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
    apply_masks(model, masks)
    for _ in range(20):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        for name, per_param in masks.items():
            for pname, mask in per_param.items():
                grad = getattr(model.get_submodule(name), pname).grad
                assert bool((grad[mask == 0] == 0).all())
        optimizer.step()
        _assert_masked_zero(model, masks)


def test_an_optimizer_created_after_a_deepcopy_keeps_masks():
    model, masks = _masked_conv_net()
    apply_masks(model, masks)
    clone = copy.deepcopy(model)
    optimizer = torch.optim.SGD(clone.parameters(), lr=0.5, momentum=0.9, weight_decay=0.5)
    with torch.no_grad():
        clone[0].weight.add_(1.0)  # even after a manual edit
    clone(torch.randn(2, 3, 6, 6)).sum().backward()
    optimizer.step()
    _assert_masked_zero(clone, masks)


def test_loading_a_checkpoint_reapplies_masks():
    model, masks = _masked_conv_net()
    apply_masks(model, masks)
    model.load_state_dict({k: torch.ones_like(v) for k, v in model.state_dict().items()})
    _assert_masked_zero(model, masks)


def test_strip_bakes_masks_and_removes_every_trace():
    model, masks = _masked_conv_net()
    apply_masks(model, masks)
    x = torch.randn(2, 3, 6, 6)
    expected = model(x)
    strip(model)
    assert list(model[0]._buffers) == [] and not model[0]._forward_pre_hooks
    assert not model[0]._forward_hooks and not hasattr(model[0], '_prunus_masked')
    torch.testing.assert_close(model(x), expected)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    optimizer.step()
    assert bool((model[0].weight[masks['0']['weight'] == 0] != 0).any())  # plain again


def test_pickled_model_keeps_masks():
    model, masks = _masked_conv_net()
    apply_masks(model, masks)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded[0].weight_mask, masks['0']['weight'])
    _assert_masked_zero(loaded, masks)


def test_a_module_shared_in_two_places_is_masked_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    mask = _random_mask(shared.weight)
    apply_masks(model, {'0': {'weight': mask}})
    model(torch.randn(3, 4)).sum().backward()
    assert bool((shared.weight.grad[mask == 0] == 0).all())
    assert list(get_masks(model)) == ['0']


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision(dtype):
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)).to(dtype)
    LevelPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}]).compress()
    assert model[0].weight_mask.dtype == dtype
    assert int((model[0].weight == 0).sum()) >= 32
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 8, dtype=dtype)).float().sum().backward()
    optimizer.step()
    _assert_masked_zero(model, get_masks(model))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda(dtype):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).cuda().to(dtype)
    LevelPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}]).compress()
    assert model[0].weight_mask.device.type == 'cuda'
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 8, 8, device='cuda', dtype=dtype)).float().sum().backward()
    optimizer.step()
    _assert_masked_zero(model, get_masks(model))


def test_wrong_mask_shape_is_rejected_before_anything_changes():
    model, masks = _masked_conv_net()
    masks['3']['weight'] = torch.ones(2, 2)
    with pytest.raises(ValueError, match=r"masks\['3'\]\['weight'\] has shape \(2, 2\)"):
        apply_masks(model, masks)
    assert not get_masks(model)


def test_unknown_module_in_masks_suggests_a_name():
    model, masks = _masked_conv_net()
    with pytest.raises(ValueError, match="module '3x', which the model does not have; did you mean '3'"):
        apply_masks(model, {'3x': masks['3']})
