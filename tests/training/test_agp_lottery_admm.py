"""AGP, LotteryTicket and ADMM on the digits CNN: schedules, exact sparsity, accuracy."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.compression import allocation, get_pruner
from prunus.compression.torch import ADMMPruner, AGPPruner, LotteryTicketPruner

from ._digits import accuracy, make_model, train_epoch

PRETRAIN, FINETUNE = 8, 14
#: The first and last layers (288 and 1280 weights) stay dense, as usual; 91% of the two
#: middle layers is 90.06% of all conv/linear weights.
AGP_CONFIG = [{'initial_sparsity': 0.0, 'final_sparsity': 0.91, 'start_epoch': 0, 'end_epoch': 6,
               'frequency': 1, 'op_types': ['default']}, {'exclude': True, 'op_names': ['conv1', 'fc2']}]


def finetune_optimizer(model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [7, 10], 0.3)


def weight_sparsity(masks) -> float:
    return sum(int((m['weight'] == 0).sum()) for m in masks.values()) / sum(
        m['weight'].numel() for m in masks.values())


def pretrained(digits, seed):
    model = make_model(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(PRETRAIN):
        train_epoch(model, optimizer, digits, epoch)
    return model


def test_agp_reaches_90_percent_within_one_point_of_dense(digits):
    seed = 0
    base = pretrained(digits, seed)
    dense = copy.deepcopy(base)
    optimizer, scheduler = finetune_optimizer(dense)
    for epoch in range(FINETUNE):
        train_epoch(dense, optimizer, digits, 100 + epoch)
        scheduler.step()
    model = base
    optimizer, scheduler = finetune_optimizer(model)
    pruner = AGPPruner(model, AGP_CONFIG, optimizer, pruning_algorithm='level')
    pruner.compress()
    for epoch in range(FINETUNE):
        pruner.update_epoch(epoch)
        entry = pruner.entries[0]
        expected = 0.91 + (0.0 - 0.91) * (1 - min(epoch, 6) / 6) ** 3
        assert pruner.applied[0] == pytest.approx(expected)
        for name, mask in pruner.get_masks().items():
            assert int((mask['weight'] == 0).sum()) == allocation.prune_count(mask['weight'].numel(),
                                                                              pruner.applied[0]), name
        train_epoch(model, optimizer, digits, 100 + epoch)
        scheduler.step()
    masks = pruner.get_masks()
    assert sorted(masks) == ['conv2', 'fc1'] and entry.get('final_sparsity') == 0.91
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    total = sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros / total >= 0.9
    assert accuracy(model, digits) >= accuracy(dense, digits) - 1.0


@pytest.mark.parametrize('algorithm', ['l1', 'fpgm', 'taylorfo'])
def test_agp_with_other_algorithms_and_the_trainer_form(digits, algorithm):
    model = make_model(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    calls = []

    def trainer(model, optimizer, criterion, epoch):
        calls.append(epoch)
        train_epoch(model, optimizer, digits, epoch)
    config = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
    pruner = AGPPruner(model, config, optimizer, trainer=trainer, criterion=nn.CrossEntropyLoss(),
                       num_iterations=3, epochs_per_iteration=1, pruning_algorithm=algorithm)
    pruner.compress()
    statistics_passes = 3 if algorithm == 'taylorfo' else 0  # one data pass per update, at epoch=0
    assert len(calls) == 3 + statistics_passes and [c for c in calls if c] == [1, 2]
    for name in ('conv1', 'conv2'):
        kept = pruner.get_masks()[name]['weight'].flatten(1).amax(dim=1)
        assert int((kept == 0).sum()) == allocation.prune_count(kept.numel(), 0.5)


def test_agp_rejects_unknown_algorithm_and_bad_schedule():
    model = make_model(0)
    with pytest.raises(ValueError, match="AGPPruner: no torch pruner is registered as 'levle'; did you mean 'level'?"):
        AGPPruner(model, [{'sparsity': 0.5, 'op_types': ['default']}], None, pruning_algorithm='levle')
    with pytest.raises(ValueError, match=r"config_list\[0\]\['end_epoch'\] \(1\) must be >= 'start_epoch' \(3\)"):
        AGPPruner(model, [{'final_sparsity': 0.5, 'start_epoch': 3, 'end_epoch': 1, 'op_types': ['default']}])
    with pytest.raises(ValueError, match="'agp' schedules its own pruning"):
        AGPPruner(model, [{'sparsity': 0.5, 'op_types': ['default']}], pruning_algorithm='agp')
    assert get_pruner('agp') is AGPPruner


def test_lottery_ticket_five_rounds_to_80_percent_within_one_point(digits):
    epochs = 6
    model = make_model(2)
    initial = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=4, gamma=0.5)
    pruner = LotteryTicketPruner(model, [{'prune_iterations': 5, 'sparsity': 0.8, 'op_types': ['default']}],
                                 optimizer, scheduler)
    pruner.compress()
    accuracies, previous = [], None
    for round_index in pruner.get_prune_iterations():
        pruner.prune_iteration_start()
        masks = pruner.get_masks()
        expected = 1 - (1 - 0.8) ** (round_index / 5)
        for name, mask in masks.items():
            assert int((mask['weight'] == 0).sum()) == allocation.prune_count(mask['weight'].numel(), expected)
            if previous is not None:  # nested: a pruned weight never comes back
                assert not (mask['weight'] > previous[name]['weight']).any()
            module = dict(model.named_modules())[name]  # survivors rewound to their initial values
            assert torch.equal(module.weight.detach(), initial[f'{name}.weight'] * mask['weight'])
        assert scheduler.last_epoch == 0 and optimizer.param_groups[0]['lr'] == 3e-3
        previous = masks
        for epoch in range(epochs):
            train_epoch(model, optimizer, digits, epoch)
            scheduler.step()
        accuracies.append(accuracy(model, digits))
    assert len(accuracies) == 6 and weight_sparsity(previous) == pytest.approx(0.8, abs=1e-4)
    assert accuracies[-1] >= accuracies[0] - 1.0  # round 0 is the dense model, same seed and epochs
    with pytest.raises(RuntimeError, match='all 5 prune iterations have run already'):
        pruner.prune_iteration_start()


def test_admm_prunes_exactly_with_callback_and_without(digits):
    for with_callback in (True, False):
        model = make_model(3)
        seen = []

        def trainer(model, optimizer, criterion, epoch, callback=None):
            seen.append(callback)
            for x, y in digits.batches(epoch):
                optimizer.zero_grad()
                criterion(model(x), y).backward()
                if callback is not None:
                    callback()
                optimizer.step()

        def plain(model, optimizer, criterion, epoch):
            trainer(model, optimizer, criterion, epoch)
        config = [{'sparsity': 0.8, 'op_types': ['Linear']}]
        pruner = ADMMPruner(model, config, trainer if with_callback else plain, num_iterations=2,
                            epochs=1, row=1e-3, base_algo='level')
        pruner.compress()
        assert len(seen) == 2 and (seen[0] is not None) == with_callback
        for name in ('fc1', 'fc2'):
            mask = pruner.get_masks()[name]['weight']
            assert int((mask == 0).sum()) == allocation.prune_count(mask.numel(), 0.8)
        assert accuracy(model, digits) > 50.0
    with pytest.raises(ValueError, match='ADMMPruner: epochs_per_iteration must be an integer >= 1; got 0'):
        ADMMPruner(model, config, plain, epochs_per_iteration=0, criterion=nn.CrossEntropyLoss())


@pytest.mark.parametrize('algorithm', ['apoz', 'taylorfo'])
def test_agp_legacy_form_with_data_driven_algorithm_uses_batches_seen_while_training(digits, algorithm):
    model = make_model(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    config = [{'final_sparsity': 0.5, 'start_epoch': 0, 'end_epoch': 2, 'op_types': ['Conv2d']}]
    pruner = AGPPruner(model, config, optimizer, pruning_algorithm=algorithm)
    pruner.compress()
    with pytest.raises(RuntimeError, match='no batch ran through the pruned layers since the last update'):
        pruner.update_epoch(1)
    assert pruner.applied == {0: 0.0} and not (pruner.get_masks()['conv2']['weight'] == 0).any()
    for epoch in range(1, 3):
        train_epoch(model, optimizer, digits, epoch)
        pruner.update_epoch(epoch)
    kept = pruner.get_masks()['conv2']['weight'].flatten(1).amax(dim=1)
    assert int((kept == 0).sum()) == allocation.prune_count(kept.numel(), 0.5)
