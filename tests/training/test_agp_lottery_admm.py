"""AGP, LotteryTicket and ADMM on the digits CNN: schedules, exact sparsity, accuracy."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.compression import allocation, get_pruner
from prunus.compression.torch import ADMMPruner, AGPPruner

from prunus.testing import recipes as _recipes
from prunus.testing.digits import accuracy, make_model, train_epoch


def weight_sparsity(masks) -> float:
    return sum(int((m['weight'] == 0).sum()) for m in masks.values()) / sum(
        m['weight'].numel() for m in masks.values())


def test_agp_default_ops_to_90_percent_global_within_one_point_of_dense():
    """One seed of the recipe; benchmarks/training_digits.py sweeps seeds and CNNs."""
    def check(pruner, epoch):
        span = _recipes.AGP_SPAN - 1  # NNI 1.x: the last epoch before end_epoch is at the target
        expected = 0.9 + (0.0 - 0.9) * (1 - min(epoch, span) / span) ** 3
        assert pruner.applied[0] == pytest.approx(expected)
        masks = pruner.get_masks()
        total = sum(m['weight'].numel() for m in masks.values())
        zeros = sum(int((m['weight'] == 0).sum()) for m in masks.values())
        assert zeros == allocation.prune_count(total, pruner.applied[0])  # exact, ranked globally
    outcome = _recipes.agp_run(seed=0, arch='demo', check=check)
    assert outcome.applied[-1] == 0.9 and outcome.sparsity == pytest.approx(0.9, abs=1e-4)
    assert set(outcome.layer_sparsity) == {'features.0', 'features.3', 'features.7', 'classifier'}
    # Global ranking spares the small first conv and classifier (about 0.25 and 0.2).
    assert outcome.layer_sparsity['features.0'] < 0.5 and outcome.layer_sparsity['classifier'] < 0.5
    assert outcome.pruned >= outcome.dense - 1.0


def test_agp_total_sparsity_is_validated():
    model = make_model(0)
    with pytest.raises(ValueError, match=r"config_list\[0\] sets both 'final_sparsity' and 'total_sparsity'"):
        AGPPruner(model, [{'final_sparsity': 0.5, 'total_sparsity': 0.5, 'op_types': ['default']}])
    with pytest.raises(ValueError, match=r"config_list\[0\]\['max_sparsity_per_layer'\] only applies together"):
        AGPPruner(model, [{'final_sparsity': 0.5, 'max_sparsity_per_layer': 0.6, 'op_types': ['default']}])
    pruner = AGPPruner(model, [{'total_sparsity': 0.9, 'max_sparsity_per_layer': 0.92, 'end_epoch': 1,
                                'op_types': ['default']}])
    pruner.compress()
    pruner.update_epoch(1)
    assert max(pruner.get_pruned_weights().values()) <= 0.92 + 1e-9
    assert weight_sparsity(pruner.get_masks()) == pytest.approx(0.9, abs=1e-4)


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


def test_lottery_ticket_five_rounds_to_80_percent_within_one_point():
    """One seed of the recipe; benchmarks/training_digits.py sweeps seeds and CNNs."""
    seen = {}

    def check(pruner, round_index, optimizer, scheduler):
        model, masks = pruner.bound_model, pruner.get_masks()
        if round_index == 0:
            seen['initial'] = copy.deepcopy(model.state_dict())
        expected = 1 - (1 - 0.8) ** (round_index / 5)
        modules = dict(model.named_modules())
        for name, mask in masks.items():
            assert int((mask['weight'] == 0).sum()) == allocation.prune_count(mask['weight'].numel(), expected)
            if 'previous' in seen:  # nested: a pruned weight never comes back
                assert not (mask['weight'] > seen['previous'][name]['weight']).any()
            # survivors rewound to their initial values
            assert torch.equal(modules[name].weight.detach(), seen['initial'][f'{name}.weight'] * mask['weight'])
        assert scheduler.last_epoch == 0 and optimizer.param_groups[0]['lr'] == 0.05
        seen['previous'], seen['pruner'] = masks, pruner
    outcome = _recipes.lottery_run(seed=0, arch='demo', check=check)
    assert len(outcome.rounds) == 6 and weight_sparsity(seen['previous']) == pytest.approx(0.8, abs=1e-3)
    assert outcome.rounds[-1] >= outcome.dense - 1.0  # round 0: dense, same per-round budget
    with pytest.raises(RuntimeError, match='all 5 prune iterations have run already'):
        seen['pruner'].prune_iteration_start()


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
