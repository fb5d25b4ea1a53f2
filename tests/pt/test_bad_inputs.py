"""A bad-input matrix for the PyTorch side: every case gets the documented error type with
one line naming what and where, and the model is byte-identical afterwards.

The mask cases are derived from the rules of :mod:`prunus.compression.mask_rules` (one
violation per rule, for every entry point that takes masks); the input cases from the
forms :func:`prunus.layers.torch.inputs.check_inputs` declares."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from prunus.compression.torch import (ActivationAPoZRankFilterPruner, L1FilterPruner, apply_compression_results,
                                      apply_masks, load_masks)
from prunus.speedup import ModelSpeedup, speedup

from .helpers import model_bytes


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.conv2(torch.relu(self.bn(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 3, 8, 8)
W = (8, 3, 3, 3)


def _bad_masks():
    """(id, masks, error type, words the message must hold): one per mask rule."""
    ones = torch.ones(W)
    nan = ones.clone()
    nan[0, 0, 0, 0] = float('nan')
    inf = ones.clone()
    inf[1] = float('inf')
    half = ones.clone()
    half[2] = 0.5
    two = torch.ones(W, dtype=torch.int64)
    two[0] = 2
    return [
        ('not-a-dict', [ones], TypeError, 'must be a dict'),
        ('entry-not-a-dict', {'conv1': ones}, TypeError, "['conv1']"),
        ('name-not-str', {1: {'weight': ones}}, TypeError, 'strings'),
        ('unknown-module', {'conv_1': {'weight': ones}}, ValueError, "did you mean 'conv1'"),
        ('unknown-param', {'conv1': {'kernel': ones}}, ValueError, "no parameter 'kernel'"),
        ('not-a-tensor', {'conv1': {'weight': 1.0}}, TypeError, "masks['conv1']['weight']"),
        ('wrong-shape', {'conv1': {'weight': torch.ones(8, 3, 3)}}, ValueError, 'shape (8, 3, 3)'),
        ('complex', {'conv1': {'weight': ones.to(torch.complex64)}}, TypeError, 'dtype'),
        ('nan', {'conv1': {'weight': nan}}, ValueError, 'NaN'),
        ('inf', {'conv1': {'weight': inf}}, ValueError, 'infinite'),
        ('half', {'conv1': {'weight': half}}, ValueError, 'other than 0 and 1'),
        ('int-two', {'conv1': {'weight': two}}, ValueError, 'other than 0 and 1'),
        ('bias-shape', {'conv1': {'weight': ones, 'bias': torch.ones(3)}}, ValueError, "['bias']"),
    ]


def _entry_points(tmp_path):
    """Every way masks enter a torch model (a callable taking model and masks)."""
    def via_file(fn):
        def run(model, masks):
            path = tmp_path / 'm.pth'
            torch.save(masks, path)
            return fn(model, str(path))
        return run
    return {
        'apply_masks': lambda m, k: apply_masks(m, k),
        'apply_compression_results': lambda m, k: apply_compression_results(m, k),
        'apply_compression_results(file)': via_file(apply_compression_results),
        'speedup': lambda m, k: speedup(m, X, k),
        'speedup(file)': via_file(lambda m, p: speedup(m, X, p)),
        'ModelSpeedup': lambda m, k: ModelSpeedup(m, X, k).speedup_model(),
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert '\n' not in text, text
    assert len(text) < 400, text
    return text


@pytest.mark.parametrize('case', _bad_masks(), ids=lambda c: c[0])
@pytest.mark.parametrize('entry', ['apply_masks', 'apply_compression_results', 'apply_compression_results(file)',
                                   'speedup', 'speedup(file)', 'ModelSpeedup'])
def test_bad_masks_are_refused_and_change_nothing(tmp_path, entry, case):
    _, masks, error, words = case
    if entry.endswith('(file)') and case[0] in ('not-a-tensor',):
        pytest.skip('a float is not a tensor torch.save keeps as one')
    model = Net()
    before = model_bytes(model)
    with pytest.raises(error) as info:
        _entry_points(tmp_path)[entry](model, masks)
    assert words in _one_line(info.value)
    if entry.endswith('(file)') and error is not TypeError:
        assert 'm.pth' in str(info.value) or 'masks[' in str(info.value)
    assert model_bytes(model) == before


def _bad_inputs():
    return [
        ('none', None, TypeError, 'is None'),
        ('string', 'x', TypeError, 'holds no tensor'),
        ('wrong-channels', torch.randn(2, 1, 8, 8), ValueError, "layer 'conv1' (Conv2d)"),
        ('wrong-rank', torch.randn(3, 8), ValueError, "'conv1'"),
        ('wrong-dtype', torch.randint(0, 3, (2, 3, 8, 8)), ValueError, 'int64'),
        ('nan', torch.full((2, 3, 8, 8), float('nan')), ValueError, 'NaN'),
        ('too-many', (X, X), ValueError, 'does not fit the model'),
        ('bad-kwargs', {'y': X}, ValueError, 'does not fit the model'),
        ('dict-int-keys', {1: X}, TypeError, 'keys must be strings'),
    ]


@pytest.mark.parametrize('case', _bad_inputs(), ids=lambda c: c[0])
@pytest.mark.parametrize('entry', ['speedup', 'ModelSpeedup', 'dependency_aware'])
def test_bad_example_inputs_name_the_input_and_layer(entry, case):
    _, inputs, error, words = case
    model = Net()
    before = model_bytes(model)
    config = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
    run = {'speedup': lambda: speedup(model, inputs),
           'ModelSpeedup': lambda: ModelSpeedup(model, inputs).speedup_model(),
           'dependency_aware': lambda: L1FilterPruner(model, config, dependency_aware=True,
                                                      dummy_input=inputs).compress()}[entry]
    if entry == 'dependency_aware' and inputs is None:
        error, words = ValueError, 'needs dummy_input'
    with pytest.raises(error) as info:
        run()
    assert words in _one_line(info.value)
    assert model_bytes(model) == before


def test_data_driven_pruner_names_the_batch_and_the_layer():
    model = Net()
    before = model_bytes(model)
    data = [torch.randn(4, 3, 8, 8), torch.randn(4, 5, 8, 8)]
    with pytest.raises(ValueError) as info:
        ActivationAPoZRankFilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], data=data).compress()
    text = _one_line(info.value)
    assert 'ActivationAPoZRankFilterPruner' in text and 'batch 1' in text and "'conv1'" in text
    assert model_bytes(model) == before


def test_corrupt_and_wrong_mask_files_name_the_file(tmp_path):
    model = Net()
    before = model_bytes(model)
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a torch file')
    listed = tmp_path / 'list.pth'
    torch.save([torch.ones(1)], listed)
    pickled = tmp_path / 'obj.pth'
    torch.save({'conv1': {'weight': torch.ones(W)}, 'x': Net}, pickled)
    for path, error, words in ((corrupt, ValueError, 'corrupt'), (listed, TypeError, 'got list'),
                               (pickled, ValueError, 'other than tensors'),
                               (tmp_path / 'missing.pth', FileNotFoundError, 'does not exist')):
        for run in (apply_compression_results, load_masks, lambda m, p: speedup(m, X, p)):
            args = (model, str(path)) if run is not load_masks else (str(path),)
            with pytest.raises(error) as info:
                run(*args)
            text = _one_line(info.value)
            assert os.fspath(path) in text and words in text
            assert 'weights_only=False' not in text
    assert model_bytes(model) == before


def test_export_into_a_missing_directory_writes_nothing(tmp_path):
    model = Net()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    pruner.compress()
    with pytest.raises(FileNotFoundError, match='does not exist'):
        pruner.export_model(str(tmp_path / 'model.pth'), str(tmp_path / 'missing' / 'mask.pth'))
    assert list(tmp_path.iterdir()) == []
    pruner.export_model(str(tmp_path / 'model.pth'), str(tmp_path / 'mask.pth'))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mask.pth', 'model.pth']


def test_bad_custom_handlers_are_type_errors():
    model = Net()
    from prunus.speedup import Handler
    for handlers, words in (({nn.Conv2d: 'x'}, 'Handler instance'), ({nn.Conv2d: Handler}, 'not the class'),
                            (['x'], 'must be a dict'), ({'Conv2d': Handler()}, 'nn.Module subclass')):
        with pytest.raises(TypeError) as info:
            speedup(model, X, {}, custom_handlers=handlers)
        assert words in _one_line(info.value)


@pytest.mark.parametrize('wrong', ['conv2d', 'CONV2D', 'Conv2D'])
def test_op_types_in_the_wrong_case_get_a_did_you_mean(wrong):
    for config in ([{'sparsity': 0.5, 'op_types': [wrong]}],
                   [{'sparsity': 0.5, 'op_types': ['Conv2d']}, {'exclude': True, 'op_types': [wrong]}]):
        with pytest.raises(ValueError, match="did you mean 'Conv2d'"):
            L1FilterPruner(Net(), config)


def test_speedup_check_fails_on_nan_difference(monkeypatch):
    from prunus.speedup import core
    assert core._relative_error(torch.ones(3), torch.tensor([1.0, float('nan'), 1.0])) == float('inf')
    assert core._relative_error(torch.tensor([float('nan')]), torch.tensor([float('nan')])) == 0.0
    assert core._relative_error(torch.tensor([float('inf'), 1.0]), torch.tensor([float('inf'), 1.0])) == 0.0
    assert core._relative_error(torch.tensor([1.0, 2.0]), torch.tensor([float('inf'), 2.0])) == float('inf')


def _misc_cases(tmp_path):
    from prunus.compression.torch import AGPPruner, SimulatedAnnealingPruner, load_pruning_yaml
    config = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    bad_yaml = tmp_path / 'bad.yaml'
    bad_yaml.write_text('pruning:\n  approach: [\n')
    return [
        ('sa-cool-down', lambda m: SimulatedAnnealingPruner(m, config, lambda x: 1.0, cool_down_rate=1.5),
         ValueError, 'SimulatedAnnealingPruner: cool_down_rate'),
        ('sa-base-algo', lambda m: SimulatedAnnealingPruner(m, config, lambda x: 1.0, base_algo='l9'),
         ValueError, 'SimulatedAnnealingPruner'),
        ('sa-evaluator-str', lambda m: SimulatedAnnealingPruner(m, config, lambda x: 'high', experiment_data_dir=tmp_path / 's')
         .compress(), TypeError, 'must return a number'),
        ('sa-evaluator-nan', lambda m: SimulatedAnnealingPruner(m, config, lambda x: float('nan'),
                                                                experiment_data_dir=tmp_path / 'n').compress(),
         ValueError, 'NaN'),
        ('sa-dir-is-file', lambda m: SimulatedAnnealingPruner(m, config, lambda x: 1.0, experiment_data_dir=a_file)
         .compress(), NotADirectoryError, 'is a file'),
        ('agp-epochs', lambda m: AGPPruner(m, [{'initial_sparsity': 0, 'final_sparsity': 0.5, 'start_epoch': 3,
                                               'end_epoch': 1, 'op_types': ['Conv2d']}], None),
         ValueError, "['end_epoch'] (1)"),
        ('yaml-syntax', lambda m: load_pruning_yaml(str(bad_yaml)), ValueError, 'bad.yaml'),
        ('speedup-tolerance', lambda m: speedup(m, X, tolerance=-1), ValueError, 'tolerance'),
        ('speedup-not-a-model', lambda m: speedup('model', X), TypeError, 'torch.nn.Module'),
    ]


@pytest.mark.parametrize('index', range(9))
def test_misc_bad_arguments_are_named(tmp_path, index):
    name, run, error, words = _misc_cases(tmp_path)[index]
    model = Net()
    before = model_bytes(model)
    with pytest.raises(error) as info:
        run(model)
    assert words in _one_line(info.value), name
    assert model_bytes(model) == before


def test_amc_with_an_empty_val_loader_says_so():
    from prunus.compression.torch import AMCPruner
    with pytest.raises(ValueError, match='val_loader yields no batch'):
        AMCPruner(Net(), [{'op_types': ['Conv2d']}], lambda loader, model: 1.0, [])
