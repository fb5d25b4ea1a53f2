"""002 (NNI legacy pruners): every snippet, with ``nni.algorithms.compression.pytorch.pruning``
replaced by ``prunus.compression.torch`` (and the TensorFlow one by ``prunus.compression.tf``).

Each test runs the document's code as written, then checks what the document says it does:
the sparsity reached, in which layers, and when.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from .conftest import accuracy, pruned_filters, train, trained_cnn, zeros_fraction


@pytest.fixture
def model(loader):
    return trained_cnn(loader)


def test_level_pruner_pytorch(model):
    from prunus.compression.torch import LevelPruner
    config_list = [{'sparsity': 0.8, 'op_types': ['default']}]
    pruner = LevelPruner(model, config_list)
    pruner.compress()
    for name in ('conv1', 'conv2', 'fc'):  # 'default': every weighted layer, 80% of its weights
        assert zeros_fraction(getattr(model, name).weight) == pytest.approx(0.8, abs=1 / 72)


def test_level_pruner_tensorflow():
    keras = pytest.importorskip('keras')
    from prunus.compression.tf import LevelPruner
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name='conv1'),
                              keras.layers.Flatten(), keras.layers.Dense(10, name='fc')])
    config_list = [{'sparsity': 0.8, 'op_types': ['default']}]
    pruner = LevelPruner(model, config_list)
    pruner.compress()
    for name in ('conv1', 'fc'):
        kernel = model.get_layer(name).kernel.numpy()
        assert (kernel == 0).mean() == pytest.approx(0.8, abs=1 / kernel.size)


def test_slim_pruner_masks_batchnorm_scales_globally(model):
    from prunus.compression.torch import SlimPruner
    config_list = [{'sparsity': 0.8, 'op_types': ['BatchNorm2d']}]
    pruner = SlimPruner(model, config_list)
    pruner.compress()
    gammas = torch.cat([model.bn1.weight, model.bn2.weight]).detach()
    assert zeros_fraction(gammas) == pytest.approx(round(0.8 * 24) / 24)  # ranked over both layers
    masked = model.bn2.weight.detach() == 0
    assert not model.bn2.bias.detach()[masked].any()


@pytest.mark.parametrize('name', ['FPGMPruner', 'L1FilterPruner', 'L2FilterPruner'])
def test_weight_filter_pruners(model, name):
    import prunus.compression.torch as pruning
    sparsity = 0.5 if name == 'FPGMPruner' else 0.8
    config_list = [{'sparsity': sparsity, 'op_types': ['Conv2d']}]
    pruner = getattr(pruning, name)(model, config_list)
    pruner.compress()
    for conv in (model.conv1, model.conv2):  # whole filters of every conv layer
        assert pruned_filters(conv) == pytest.approx(round(sparsity * conv.out_channels) / conv.out_channels)
    assert zeros_fraction(model.fc.weight) == 0


@pytest.mark.parametrize('name', ['ActivationAPoZRankFilterPruner', 'ActivationMeanRankFilterPruner',
                                  'TaylorFOWeightFilterPruner'])
def test_data_driven_pruners_with_statistics_batch_num(model, loader, name):
    import prunus.compression.torch as pruning
    config_list = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
    pruner = getattr(pruning, name)(model, config_list, statistics_batch_num=1)
    pruner.compress()
    # NNI 1.x: statistics are gathered from the first batch of the user's own training.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train(model, loader[:3], optimizer)
    for conv in (model.conv1, model.conv2):
        assert pruned_filters(conv) == 0.5
    assert pruner.get_pruned_weights() == {'conv1': 0.5, 'conv2': 0.5}


def test_agp_reaches_80_percent_in_10_epochs(model, loader):
    from prunus.compression.torch import AGPPruner
    config_list = [{
        'initial_sparsity': 0,
        'final_sparsity': 0.8,
        'start_epoch': 0,
        'end_epoch': 10,
        'frequency': 1,
        'op_types': ['default']
    }]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
    pruner = AGPPruner(model, config_list, optimizer, pruning_algorithm='level')
    pruner.compress()
    seen = []
    for epoch in range(12):
        pruner.update_epoch(epoch)
        seen.append(zeros_fraction(model.conv2.weight))
        train(model, loader[:1], optimizer)
    assert seen[0] == 0.0
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[8] < 0.8 and seen[9] == pytest.approx(0.8, abs=1 / 1152)  # NNI 1.x: epoch 9 ends it
    assert pruner.compute_target_sparsity(config_list[0]) == 0.8


def test_lottery_ticket_rounds(model, loader):
    from prunus.compression.torch import LotteryTicketPruner
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    config_list = [{
        'prune_iterations': 5,
        'sparsity': 0.8,
        'op_types': ['default']
    }]
    pruner = LotteryTicketPruner(model, config_list, optimizer)
    pruner.compress()
    reached = []
    for _ in pruner.get_prune_iterations():
        pruner.prune_iteration_start()
        reached.append(zeros_fraction(model.fc.weight))
        for epoch in range(1):
            train(model, loader[:2], optimizer)
    # round 0 trains dense; round k prunes 1-(1-P)^(1/n) of the survivors, round n is at P
    assert len(reached) == 6
    assert reached == pytest.approx([0.0] + [1 - 0.2 ** (k / 5) for k in range(1, 6)], abs=2e-3)
    assert zeros_fraction(model.fc.weight) == pytest.approx(0.8, abs=2e-3)


def test_admm_pruner(model, loader):
    from prunus.compression.torch import ADMMPruner

    def trainer(model, optimizer, criterion, epoch):
        train(model, loader[:1], optimizer)
    config_list = [{
        'sparsity': 0.8,
        'op_types': ['Conv2d'],
        'op_names': ['conv1']
    }, {
        'sparsity': 0.92,
        'op_types': ['Conv2d'],
        'op_names': ['conv2']
    }]
    pruner = ADMMPruner(model, config_list, trainer=trainer, num_iterations=30, epochs=5)
    pruner.compress()
    assert pruned_filters(model.conv1) == pytest.approx(round(0.8 * 8) / 8)
    assert pruned_filters(model.conv2) == pytest.approx(round(0.92 * 16) / 16)


def _evaluator(digits):
    return lambda model: accuracy(model, digits)


def test_netadapt_pruner(model, digits, loader, tmp_path):
    from prunus.compression.torch import NetAdaptPruner
    evaluator = _evaluator(digits)

    def short_term_fine_tuner(model, epochs=1):
        train(model, loader[:1], torch.optim.SGD(model.parameters(), lr=0.01))
    config_list = [{
        'sparsity': 0.5,
        'op_types': ['Conv2d']
    }]
    pruner = NetAdaptPruner(model, config_list, short_term_fine_tuner=short_term_fine_tuner, evaluator=evaluator,
                            base_algo='l1', experiment_data_dir=str(tmp_path))
    model = pruner.compress()
    total = sum(m.weight.numel() for m in (model.conv1, model.conv2))
    zeros = sum(int((m.weight == 0).sum()) for m in (model.conv1, model.conv2))
    assert zeros / total == pytest.approx(0.5, abs=1e-9)  # on the budget: a candidate at 0.5 exists


def test_simulated_annealing_pruner(model, digits, tmp_path):
    from prunus.compression.torch import SimulatedAnnealingPruner
    evaluator = _evaluator(digits)
    config_list = [{
        'sparsity': 0.5,
        'op_types': ['Conv2d']
    }]
    pruner = SimulatedAnnealingPruner(model, config_list, evaluator=evaluator, base_algo='l1', cool_down_rate=0.9,
                                      experiment_data_dir=str(tmp_path))
    model = pruner.compress()
    total = sum(m.weight.numel() for m in (model.conv1, model.conv2))
    zeros = sum(int((m.weight == 0).sum()) for m in (model.conv1, model.conv2))
    assert zeros / total == pytest.approx(0.5, abs=0.02)
    assert (tmp_path / 'search_result.json').exists() or any(tmp_path.iterdir())


def test_auto_compress_pruner(model, digits, loader, tmp_path):
    # The document imports ADMMPruner here (a typo); AutoCompressPruner is what it calls.
    from prunus.compression.torch import AutoCompressPruner
    evaluator = _evaluator(digits)
    dummy_input = digits[0][:2]

    def trainer(model, optimizer, criterion, epoch):
        train(model, loader[:1], optimizer)
    config_list = [{
            'sparsity': 0.5,
            'op_types': ['Conv2d']
        }]
    pruner = AutoCompressPruner(
                model, config_list, trainer=trainer, evaluator=evaluator,
                dummy_input=dummy_input, num_iterations=3, optimize_mode='maximize', base_algo='l1',
                cool_down_rate=0.9, admm_num_iterations=30, admm_training_epochs=5, experiment_data_dir=str(tmp_path))
    pruned = pruner.compress()
    before = 8 * 9 + 8 * 16 * 9
    after = sum(m.weight.numel() for m in pruned.modules() if isinstance(m, nn.Conv2d))
    assert after / before == pytest.approx(0.5, abs=0.1)  # sped up: channels really removed


def test_amc_pruner_meets_flops_ratio(model, digits, loader, tmp_path):
    from prunus.compression.torch import AMCPruner
    from prunus.compression.torch import count_flops_params

    def evaluator(val_loader, model):
        return accuracy(model, digits)
    val_loader = loader[:2]
    config_list = [{
            'op_types': ['Conv2d', 'Linear']
        }]
    from prunus.speedup import speedup
    dense, _, _ = count_flops_params(model, (1, 1, 8, 8), verbose=False)
    # A shorter search than the default 800 episodes, for CPUs.
    pruner = AMCPruner(model, config_list, evaluator, val_loader, flops_ratio=0.5, train_episode=8, warmup=4,
                       output_dir=str(tmp_path))
    pruner.compress()
    small = speedup(model, digits[0][:2], pruner)
    flops, _, _ = count_flops_params(small, (1, 1, 8, 8), verbose=False)
    assert flops / dense <= 0.5 + 0.02


def test_sensitivity_pruner(model, digits, loader, tmp_path):
    from prunus.compression.torch import SensitivityPruner

    def evaluator(model):
        return accuracy(model, digits)

    def fine_tuner(model):
        train(model, loader[:1], torch.optim.SGD(model.parameters(), lr=0.01))
    config_list = [{
            'sparsity': 0.5,
            'op_types': ['Conv2d']
        }]
    pruner = SensitivityPruner(model, config_list, finetuner=fine_tuner, evaluator=evaluator)
    # eval_args and finetune_args are the parameters passed to the evaluator and finetuner respectively
    pruner.compress(eval_args=[model], finetune_args=[model])
    total = sum(m.weight.numel() for m in (model.conv1, model.conv2))
    zeros = sum(int((m.weight == 0).sum()) for m in (model.conv1, model.conv2))
    assert zeros / total >= 0.5 - 0.02
