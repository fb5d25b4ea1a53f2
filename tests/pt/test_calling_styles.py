"""The data-driven pruners in every calling style NNI users wrote, plus prunus's own."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.compression.torch import (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                                      SlimPruner, TaylorFOWeightFilterPruner, bn_l1_penalty, get_masks)

from .zoo import ConvBnReluConv

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def _batches(n=3):
    return [(torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))) for _ in range(n)]


def _trainer(batches):
    def trainer(model, optimizer, criterion, epoch):
        model.train()
        for x, y in batches:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
    return trainer


@pytest.mark.parametrize('cls', [ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                                 TaylorFOWeightFilterPruner])
def test_data_given_directly_leaves_bn_stats_and_grads_alone(cls):
    model = ConvBnReluConv()
    running_mean = model.bn1.running_mean.clone()
    kwargs = {'criterion': nn.CrossEntropyLoss()} if cls is TaylorFOWeightFilterPruner else {}
    cls(model, CONFIG, data=_batches(), **kwargs).compress()
    assert torch.equal(model.bn1.running_mean, running_mean)
    assert all(p.grad is None for p in model.parameters())
    assert model.conv1.weight_mask.sum() == model.conv1.weight.numel() / 2


@pytest.mark.parametrize('cls', [ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                                 TaylorFOWeightFilterPruner])
def test_trainer_style_of_nni_2_3(cls):
    model = ConvBnReluConv()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = []
    trainer = _trainer(_batches())

    def counting_trainer(model, optimizer, criterion, epoch):
        calls.append(epoch)
        trainer(model, optimizer, criterion, epoch)

    cls(model, CONFIG, optimizer, counting_trainer, nn.CrossEntropyLoss(),
        sparsifying_training_batches=2).compress()
    assert calls == [0]
    assert int((model.conv2.weight_mask.flatten(1).sum(1) == 0).sum()) == 6


def test_legacy_style_collects_while_the_user_trains():
    model = ConvBnReluConv()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = ActivationAPoZRankFilterPruner(model, CONFIG, optimizer, 'relu', 2)  # NNI 1.x order
    pruner.compress()
    assert bool(model.conv1.weight_mask.all())  # nothing pruned before statistics exist
    trainer = _trainer(_batches(3))
    trainer(model, optimizer, nn.CrossEntropyLoss(), 0)
    assert int((model.conv1.weight_mask.flatten(1).sum(1) == 0).sum()) == 4


def test_legacy_taylor_needs_only_an_optimizer_and_the_users_loop():
    model = ConvBnReluConv()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    pruner = TaylorFOWeightFilterPruner(model, CONFIG, optimizer, statistics_batch_num=1)
    pruner.compress()
    _trainer(_batches(2))(model, optimizer, nn.CrossEntropyLoss(), 0)
    assert int((pruner.get_masks()['conv1']['weight'].flatten(1).sum(1) == 0).sum()) == 4


def test_taylor_without_criterion_or_loss_says_what_it_needs():
    model = ConvBnReluConv()
    with pytest.raises(ValueError, match='needs a criterion'):
        TaylorFOWeightFilterPruner(model, CONFIG, data=_batches(1)).compress()
    assert not get_masks(model)


def test_slim_sparsity_training_pulls_scales_down():
    model = ConvBnReluConv()
    before = model.bn1.weight.abs().sum().item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNorm2d']}], optimizer,
               _trainer(_batches()), nn.CrossEntropyLoss(), sparsifying_training_epochs=2,
               scale=0.1).compress()
    assert model.bn1.weight.abs().sum().item() < before - 0.5
    assert len(optimizer._optimizer_step_pre_hooks) == 0  # the regularizer is removed


def test_bn_l1_penalty_is_the_scaled_sum_of_scales():
    model = ConvBnReluConv()
    expected = 0.01 * (model.bn1.weight.abs().sum() + model.bn2.weight.abs().sum())
    torch.testing.assert_close(bn_l1_penalty(model, 0.01), expected)


@pytest.mark.parametrize('kwargs,message', [
    ({'trainer': 3.0}, 'trainer must be callable'),
    ({'statistics_batch_num': 0}, 'statistics_batch_num must be an integer >= 1; got 0'),
    ({'data': 5}, 'data must be an iterable of batches; got int'),
    ({'activation': 'tanhh'}, "activation must be one of"),
    ({'dependency_aware': True}, 'dependency_aware=True needs dummy_input'),
])
def test_bad_arguments_are_named(kwargs, message):
    model = ConvBnReluConv()
    with pytest.raises((TypeError, ValueError), match=message):
        ActivationAPoZRankFilterPruner(model, CONFIG, **kwargs)
    assert not get_masks(model)
