"""pruning_type='retrain_free' (Kwon et al. 2022, as INC's training API ran it): channel
masks from Fisher information on fixed weights, rearranged against each layer's Fisher block."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from prunus.compression.patterns import parse_pattern
from prunus.compression.torch import Pruning, WeightPruningConfig, get_masks, prepare_pruning
from prunus.compression.torch.fisher_masks import block_gradients, pruning_cost, rearrange


@pytest.mark.parametrize('pattern', ['channelx1', '1xchannel', 'channelx2', '2xchannel'])
def test_block_gradients_are_the_gradients_of_an_explicit_block_mask(pattern):
    torch.manual_seed(0)
    layer = nn.Linear(8, 6)
    x, target = torch.randn(5, 8), torch.randn(5, 6)
    parsed = parse_pattern(pattern)
    bh, bw = parsed.rows or 6, parsed.cols or 8
    mask = torch.ones(6 // bh, 8 // bw, requires_grad=True)
    full = mask.repeat_interleave(bh, 0).repeat_interleave(bw, 1)
    loss = nn.functional.mse_loss(nn.functional.linear(x, layer.weight * full, layer.bias), target)
    loss.backward()
    layer.zero_grad()
    nn.functional.mse_loss(layer(x), target).backward()
    assert torch.allclose(block_gradients(layer.weight, layer.weight.grad, parsed).float(),
                          mask.grad.reshape(-1), atol=1e-6)


def test_rearrangement_keeps_the_count_and_never_raises_the_predicted_cost():
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        grads = torch.randn(30, 24, generator=g) + torch.randn(1, 24, generator=g)
        diagonal = grads.pow(2).sum(0)
        keep = np.ones(24, dtype=bool)
        keep[torch.sort(diagonal, stable=True).indices[:10].numpy()] = False
        new = rearrange(keep, grads)
        assert (~new).sum() == 10
        assert pruning_cost(new, grads) <= pruning_cost(keep, grads) + 1e-9
    # blocks whose gradients cancel are dropped together although their diagonal is larger
    grads = torch.tensor([[1., -1., .6, .6]] * 2)
    assert rearrange(np.array([True, True, False, False]), grads).tolist() == [False, False, True, True]


def two_layer(seed=0):
    """Hidden units 0-7 barely fire but have large outgoing weights (magnitude keeps
    them); units 8-15 carry the signal through small outgoing weights."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight[:8] *= 0.01
        model[2].weight[:, :8] *= 10
        model[2].weight[:, 8:] *= 0.5
    return model


def run(model, config, steps=12, lr=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=g)
    y = torch.randn(64, 4, generator=g)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    pruning = prepare_pruning(model, config, optimizer)
    for _ in range(steps):
        nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
    pruning.on_train_end()
    return x


def config(pattern='channelx1', sparsity=0.5, kind='retrain_free', **extra):
    return WeightPruningConfig([{'op_names': ['^2$'], 'pattern': pattern, **extra}], pruning_type=kind,
                               target_sparsity=sparsity, start_step=9, end_step=9, pruning_frequency=1)


@pytest.mark.parametrize('pattern,dim', [('channelx1', 0), ('1xchannel', 1)])
def test_whole_channels_at_the_exact_count_on_fixed_weights(pattern, dim):
    model = two_layer()
    dense = copy.deepcopy(model)
    run(model, config(pattern))
    mask = get_masks(model)['2']['weight']
    channels = mask.amax(dim=dim)
    assert bool((mask == channels.unsqueeze(dim)).all())          # whole channels
    assert int((channels == 0).sum()) == channels.numel() // 2   # exactly half
    assert torch.equal(model[2].weight, dense[2].weight * mask)   # the pruned layer was not trained
    assert torch.equal(model[2].bias, dense[2].bias)


def test_fisher_finds_the_units_that_matter_where_magnitude_does_not():
    errors = {}
    for kind in ('retrain_free', 'magnitude'):
        model = two_layer()
        dense = copy.deepcopy(model)
        x = run(model, config(kind=kind), lr=0.0)
        with torch.no_grad():
            errors[kind] = float((model(x) - dense(x)).pow(2).mean())
        if kind == 'retrain_free':
            kept = get_masks(model)['2']['weight'].amax(dim=0)
            assert kept[8:].sum() > kept[:8].sum()
    assert errors['retrain_free'] < errors['magnitude']


def test_results_are_deterministic():
    masks = []
    for _ in range(2):
        model = two_layer()
        run(model, config())
        masks.append(get_masks(model)['2']['weight'])
    assert torch.equal(*masks)


@pytest.mark.parametrize('pattern', ['4x1', '2:4', '1x1'])
def test_a_pattern_that_is_not_channels_is_rejected_before_anything_changes(pattern):
    model = two_layer()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"pruners\[0\]\['pattern'\].*retrain_free.*channelx1"):
        Pruning(config(pattern), model)
    assert not get_masks(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
