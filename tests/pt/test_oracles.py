"""Each criterion on hand-built weights, where the pruned indices are known in advance."""
from __future__ import annotations

import torch
from torch import nn

from prunus.compression.torch import (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                                      FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner,
                                      SlimPruner, TaylorFOWeightFilterPruner)


def _linear(rows):
    layer = nn.Linear(len(rows[0]), len(rows), bias=True)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows, dtype=torch.float32))
        layer.bias.fill_(0.5)
    return nn.Sequential(layer)


def _pruned_rows(model, name='0'):
    mask = model.get_submodule(name).weight_mask
    return [i for i in range(mask.shape[0]) if not bool(mask[i].any())]


def _config(sparsity, op_types=('Linear',)):
    return [{'sparsity': sparsity, 'op_types': list(op_types)}]


def test_level_masks_the_smallest_magnitudes():
    model = _linear([[0.1, -0.5, 2.0], [0.3, 0.05, -0.2]])
    LevelPruner(model, _config(0.5)).compress()
    expected = torch.tensor([[0, 1, 1], [1, 0, 0]], dtype=torch.float32)
    assert torch.equal(model[0].weight_mask, expected)
    assert not hasattr(model[0], 'bias_mask')


def test_level_breaks_ties_by_lower_index():
    model = _linear([[1.0, 1.0, 1.0, 1.0]])
    LevelPruner(model, _config(0.5)).compress()
    assert model[0].weight_mask.tolist() == [[0, 0, 1, 1]]


def test_l1_and_l2_disagree_where_they_should():
    rows = [[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0], [4.0, 4.0, 0.0, 0.0]]
    # L1 sums: 4, 3, 8 -> row 1; L2 norms: 2, 3, 5.66 -> row 0.
    l1, l2 = _linear(rows), _linear(rows)
    L1FilterPruner(l1, _config(1 / 3)).compress()
    L2FilterPruner(l2, _config(1 / 3)).compress()
    assert _pruned_rows(l1) == [1]
    assert _pruned_rows(l2) == [0]
    assert l1[0].bias_mask.tolist() == [1, 0, 1]


def test_fpgm_prunes_the_filter_nearest_the_geometric_median():
    # Points 0, 1, 2, 3, 10 on a line: distance sums 16, 13, 12, 13, 34 -> index 2.
    model = _linear([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [10.0, 0.0]])
    FPGMPruner(model, _config(0.2)).compress()
    assert _pruned_rows(model) == [2]


def test_filter_pruners_use_output_channels_of_conv_transpose():
    layer = nn.ConvTranspose2d(2, 3, 1)
    with torch.no_grad():  # weight is (in, out, 1, 1): output channel 1 is smallest
        layer.weight.copy_(torch.tensor([[5.0, 0.1, 3.0], [5.0, 0.1, 3.0]]).reshape(2, 3, 1, 1))
    model = nn.Sequential(layer)
    L1FilterPruner(model, _config(1 / 3, ['ConvTranspose2d'])).compress()
    assert model[0].weight_mask[:, 1].sum() == 0 and model[0].weight_mask[:, [0, 2]].all()


def test_slim_ranks_batchnorm_scales_globally():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.5, -0.1, 2.0, 0.05]))
        model[1].weight.copy_(torch.tensor([0.3, 1.0]))
    SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNorm1d']}]).compress()
    assert model[0].weight_mask.tolist() == [1, 0, 1, 0]
    assert model[1].weight_mask.tolist() == [0, 1]
    assert model[0].bias_mask.tolist() == [1, 0, 1, 0]


def _activation_model():
    # Channel 0 is always negative (APoZ 1), channel 1 always positive with mean 2,
    # channel 2 positive half the time with mean 0.5 over the batch.
    layer = nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-1.0], [2.0], [1.0]]))
    x = torch.tensor([[1.0], [1.0], [1.0], [-1.0]])
    x_half = torch.tensor([[1.0], [1.0], [-1.0], [-1.0]])
    return nn.Sequential(layer), [x, x_half]


def test_apoz_prunes_the_channel_that_is_mostly_zero():
    model, data = _activation_model()
    ActivationAPoZRankFilterPruner(model, _config(1 / 3), data=data).compress()
    assert _pruned_rows(model) == [0]


def test_mean_activation_prunes_the_smallest_mean():
    model, data = _activation_model()
    ActivationMeanRankFilterPruner(model, _config(2 / 3), data=data).compress()
    # means after ReLU: channel 0 -> 0, channel 1 -> 1.5, channel 2 -> 0.625 -> prune 0 and 2.
    assert _pruned_rows(model) == [0, 2]


def test_taylor_uses_weight_times_gradient():
    # loss = sum(y) with x = [1, 0]: every row's gradient is [1, 0]; contributions
    # (w*g)^2 summed per row: 0.25, 1, 4 -> row 0, although its L1 norm is the largest.
    model = _linear([[0.5, 5.0], [1.0, 0.0], [2.0, 0.0]])
    data = [(torch.tensor([[1.0, 0.0]]), torch.zeros(1))]
    TaylorFOWeightFilterPruner(model, _config(1 / 3), data=data,
                               criterion=lambda out, target: out.sum()).compress()
    assert _pruned_rows(model) == [0]


def test_taylor_accumulates_over_batches():
    model = _linear([[1.0, 0.0], [0.0, 1.0]])
    data = [(torch.tensor([[1.0, 0.0]]), 0), (torch.tensor([[0.0, 3.0]]), 0)]
    TaylorFOWeightFilterPruner(model, _config(0.5), data=data,
                               criterion=lambda out, target: out.sum()).compress()
    assert _pruned_rows(model) == [0]  # 1 vs 9 once both batches count
