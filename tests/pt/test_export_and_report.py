"""Legacy-NNI export/import files, ONNX export and the sparsity report."""
from __future__ import annotations

import pytest
import torch

from prunus.compression.torch import (L1FilterPruner, LevelPruner, apply_compression_results, get_masks,
                                      load_masks)

from .zoo import ConvBnReluConv


def _pruned(sparsity=0.5):
    model = ConvBnReluConv()
    pruner = L1FilterPruner(model, [{'sparsity': sparsity, 'op_types': ['Conv2d']}])
    pruner.compress()
    return pruner, model


def test_mask_file_layout_is_module_to_param_masks(tmp_path):
    pruner, model = _pruned()
    pruner.export_model(tmp_path / 'm.pth', tmp_path / 'mask.pth')
    masks = torch.load(tmp_path / 'mask.pth')
    assert set(masks) == {'conv1', 'conv2'}
    assert set(masks['conv1']) == {'weight', 'bias'}
    state = torch.load(tmp_path / 'm.pth')
    assert set(state) == set(ConvBnReluConv().state_dict())  # no mask buffers leak in


def test_nni_style_mask_keys_are_accepted():
    pruner, model = _pruned()
    nni_style = {name: {f'{p}_mask': m for p, m in per.items()} for name, per in get_masks(model).items()}
    assert load_masks(nni_style).keys() == get_masks(model).keys()


def test_apply_compression_results_checks_before_changing(tmp_path):
    _, model = _pruned()
    bad = {'conv1': {'weight': torch.zeros(1)}}
    fresh = ConvBnReluConv()
    before = fresh.conv1.weight.clone()
    with pytest.raises(ValueError, match=r"masks\['conv1'\]\['weight'\] has shape"):
        apply_compression_results(fresh, bad)
    assert torch.equal(fresh.conv1.weight, before)


def test_onnx_export(tmp_path):
    onnx = pytest.importorskip('onnx')
    pruner, _ = _pruned()
    pruner.export_model(tmp_path / 'm.pth', onnx_path=tmp_path / 'm.onnx', input_shape=(1, 3, 8, 8))
    onnx.checker.check_model(onnx.load(str(tmp_path / 'm.onnx')))


def test_onnx_export_without_an_input_says_what_it_needs(tmp_path):
    pruner, _ = _pruned()
    with pytest.raises(ValueError, match='needs input_shape or dummy_input'):
        pruner.export_model(tmp_path / 'm.pth', onnx_path=tmp_path / 'm.onnx')
    assert not (tmp_path / 'm.pth').exists()


def test_sparsity_report_rows_and_flops():
    pruner, model = _pruned(0.5)
    report = pruner.sparsity_report(torch.randn(1, 3, 8, 8))
    row = report['conv2']
    assert (row.channels, row.channels_kept) == (12, 6)
    assert row.params == 12 * 8 * 9 and row.params_kept == 6 * 8 * 9
    assert row.flops_kept == row.flops // 2 and row.flops > 0
    assert abs(report.sparsity - 0.5) < 1e-9
    text = str(report)
    assert 'conv2' in text and '6/12' in text and 'total' in text


def test_sparsity_report_without_input_omits_flops():
    model = ConvBnReluConv()
    pruner = LevelPruner(model, [{'sparsity': 0.25, 'op_types': ['default']}])
    pruner.compress()
    report = pruner.sparsity_report()
    assert all(r.flops is None for r in report)
    assert report['fc'].params_kept == round(0.75 * 48)
