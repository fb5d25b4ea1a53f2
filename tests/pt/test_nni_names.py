"""NNI legacy names and signatures that code written for NNI calls (issue 12's list)."""
from __future__ import annotations

import concurrent.futures
import warnings

import pytest
import torch
import torchvision
from torch import nn

from prunus.compression.torch import (AGPPruner, ActivationAPoZRankFilterPruner, AMCPruner, AutoCompressPruner,
                                      ChannelDependency, GroupDependency, L1FilterPruner, get_module_by_name, SensitivityPruner,
                                      TaylorFOWeightFilterPruner, count_flops_params, not_safe_to_prune)
from prunus.speedup import ModelSpeedup


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 4))


X = torch.randn(2, 3, 8, 8)
CONV = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def test_model_speedup_nni_signature(tmp_path):
    model = _cnn()
    pruner = L1FilterPruner(model, CONV)
    pruner.compress()
    pruner.export_model(str(tmp_path / 'w.pth'), str(tmp_path / 'mask.pth'))
    reference = model.eval()(X)
    speeder = ModelSpeedup(model, X, str(tmp_path / 'mask.pth'), 'cpu', 0, 8, None)
    assert speeder.bound_model is model
    speeder.speedup_model()
    assert model[0].out_channels == 4 and torch.allclose(model(X), reference, atol=1e-5)
    with pytest.raises(ValueError, match='confidence must be an integer >= 1; got 0'):
        ModelSpeedup(_cnn(), X, {}, confidence=0)
    with pytest.raises(ValueError, match=r'batch_dim must be a dimension of dummy_input \(4 dims\); got 7'):
        ModelSpeedup(_cnn(), X, {}, batch_dim=7)
    with pytest.raises(TypeError, match="customized_replace_func\\['Conv2d'\\] is function"):
        ModelSpeedup(_cnn(), X, {}, customized_replace_func={'Conv2d': lambda module, masks: module})


def test_taylor_global_sort_ranks_filters_across_layers():
    torch.manual_seed(0)
    model = _cnn()
    with torch.no_grad():
        model[3].weight.mul_(100)  # conv2's contributions dwarf conv1's
    data = [(torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,)))]
    pruner = TaylorFOWeightFilterPruner(model, CONV, data=data, criterion=nn.CrossEntropyLoss(), global_sort=True)
    pruner.compress()
    pruned = pruner.get_pruned_weights()
    total = 8 * 27 * pruned['0'] + 16 * 72 * pruned['3']
    assert pruned['0'] > 0.5 > pruned['3']  # conv1 loses more than its share
    assert round(8 * pruned['0']) + round(16 * pruned['3']) == 12  # one budget: half of 24 filters
    assert total > 0


def test_nni_positional_orders():
    model = _cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert L1FilterPruner(model, CONV, optimizer).optimizer is optimizer      # NNI 1.x
    assert L1FilterPruner(_cnn(), CONV, True, X).dependency_aware is True     # NNI 2.x
    apoz = ActivationAPoZRankFilterPruner(model, CONV, optimizer, 'relu', 2)  # NNI 1.x
    assert apoz.batch_limit == 2
    taylor = TaylorFOWeightFilterPruner(model, CONV, optimizer, 3)            # NNI 1.x
    assert taylor.batch_limit == 3 and taylor.trainer is None
    agp = AGPPruner(model, [{'final_sparsity': 0.5, 'op_types': ['Conv2d']}], optimizer, 'l1')  # NNI 1.x
    assert agp.pruning_algorithm == 'l1'
    with pytest.raises(TypeError, match="got multiple values for argument 'optimizer'"):
        L1FilterPruner(model, CONV, optimizer, optimizer=optimizer)


def test_agp_compute_target_sparsity_follows_update_epoch():
    config_list = [{'initial_sparsity': 0.0, 'final_sparsity': 0.8, 'start_epoch': 0, 'end_epoch': 10,
                    'frequency': 1, 'op_types': ['Conv2d']}]
    pruner = AGPPruner(_cnn(), config_list, None)
    pruner.compress()
    targets = []
    for epoch in range(11):
        pruner.update_epoch(epoch)
        targets.append(pruner.compute_target_sparsity(config_list[0]))
    assert targets[0] == 0.0 and targets[9] == targets[10] == 0.8
    assert targets[4] == pytest.approx(0.8 - 0.8 * (1 - 4 / 9) ** 3)


def test_legacy_pruner_methods():
    model = _cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    pruner = L1FilterPruner(model, CONV, optimizer)
    (first, config), _ = pruner.get_modules_to_compress()
    assert (first.name, first.type, config) == ('0', 'Conv2d', CONV[0])
    masks = pruner.calc_mask(pruner.get_modules_wrapper()[1])
    assert set(masks) == {'weight_mask', 'bias_mask'} and int(masks['bias_mask'].sum()) == 8
    assert pruner.calc_mask(model[0])['weight_mask'].shape == model[0].weight.shape
    with pytest.raises(ValueError, match="'fc' is not a layer this pruner selected"):
        pruner.calc_mask('fc')
    pruner.compress()
    assert pruner.get_pruned_weights() == {'0': 0.5, '3': 0.5}
    calls = []
    pruner.patch_optimizer(lambda: calls.append('after'))
    pruner.patch_optimizer_before(lambda: calls.append('before'))
    model(X).sum().backward()
    optimizer.step()
    assert calls == ['before', 'after']
    pruner.reset()
    assert pruner.get_pruned_weights() == {'0': 0.0, '3': 0.0}
    pruner.set_wrappers_attribute('if_calculated', False)
    assert model[0].if_calculated is False
    with pytest.raises(ValueError, match=r"config_list\[0\]\['sparsity'\]"):
        pruner.validate_config(model, [{'sparsity': 1.5, 'op_types': ['Conv2d']}])


def test_count_flops_params_matches_known_resnet18_count():
    model = torchvision.models.resnet18()
    flops, params, results = count_flops_params(model, (1, 3, 224, 224), verbose=False)
    assert params == 11689512
    assert flops == pytest.approx(1.82e9, rel=0.01)  # the multiply-accumulates NNI reported
    conv1 = next(r for r in results if r['name'] == 'conv1')
    assert conv1['flops'] == 112 * 112 * 64 * 3 * 49 and conv1['weight_shape'] == (64, 3, 7, 7)


def test_dependency_queries_on_a_residual_network():
    model = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    sets = ChannelDependency(model, x).dependency_sets
    assert {'conv1', 'layer1.0.conv2', 'layer1.1.conv2'} in sets and {'layer1.0.conv1'} in sets
    assert not_safe_to_prune(model, x) == ['fc']  # its outputs are the model's
    groups = GroupDependency(torchvision.models.mobilenet_v2(), x).dependency
    assert set(groups.values()) == {1}


def test_sensitivity_pruner_takes_nni_order():
    def evaluator(model):
        return 1.0

    def finetuner(model):
        pass

    pruner = SensitivityPruner(_cnn(), CONV, evaluator, finetuner)  # NNI: evaluator, then finetuner
    assert pruner.evaluator is evaluator and pruner.finetuner is finetuner


def test_amc_warns_of_the_arguments_it_ignores():
    loader = [(X, None)]
    with pytest.warns(UserWarning, match='n_points_per_layer, n_calibration_batches|n_calibration_batches, '
                                         'n_points_per_layer'):
        AMCPruner(_cnn(), [{'op_types': ['Conv2d']}], lambda data, m: 1.0, loader, n_points_per_layer=20,
                  n_calibration_batches=10, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        AMCPruner(_cnn(), [{'op_types': ['Conv2d']}], lambda data, m: 1.0, loader, channel_round=4, progress=False)


def test_auto_compress_accepts_an_executor(tmp_path):
    def trainer(model, optimizer, criterion, epoch):
        pass
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        pruner = AutoCompressPruner(_cnn(), CONV, trainer, lambda m: 1.0, X, num_iterations=1,
                                    admm_num_iterations=1, admm_training_epochs=1, stop_temperature=90,
                                    experiment_data_dir=str(tmp_path), executor=executor, progress=False)
        small = pruner.compress()
    assert sum(m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)) < 24


def test_get_module_by_name():
    model = torchvision.models.resnet18()
    parent, leaf = get_module_by_name(model, 'layer1.0.conv1')
    assert parent is model.layer1[0] and leaf is model.layer1[0].conv1
    assert get_module_by_name(model, 'layer1.9.conv1') == (None, None)


@pytest.mark.parametrize('config, builtin, message', [
    ([{'sparsity': 1.5, 'op_types': ['Conv2d']}], ValueError, r"config_list\[0\]\['sparsity'\] must be a number in \[0, 1\); got 1.5."),
    ([{'sparsity': 'half', 'op_types': ['Conv2d']}], TypeError, r"config_list\[0\]\['sparsity'\] must be a number"),
    ([{'sparsty': 0.5}], ValueError, r"config_list\[0\] has unknown key 'sparsty'; did you mean 'sparsity'\?"),
])
def test_config_errors_are_schema_errors_too(config, builtin, message):
    import schema
    for kind in (schema.SchemaError, builtin):
        with pytest.raises(kind, match=message) as caught:
            L1FilterPruner(_cnn(), config)
        assert str(caught.value).count('\n') == 0  # one line, the same for both


def test_training_config_errors_are_schema_errors_too():
    import schema
    from prunus.compression.torch import WeightPruningConfig, load_pruning_yaml
    with pytest.raises(schema.SchemaError, match="pruning config has unknown key 'patern'"):
        WeightPruningConfig(patern='2:4')
    with pytest.raises(ValueError, match="'pruning.approach' has unknown key 'weight_compresion'"):
        load_pruning_yaml('pruning:\n  approach:\n    weight_compresion: {}\n')
