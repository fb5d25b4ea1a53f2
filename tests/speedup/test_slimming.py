"""Zero-scale BatchNorm channels (Network Slimming): the BatchNorm ignores its input
there, so the speedup removes the channel on both sides of it, exactly."""
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, SlimPruner
from prunus.speedup import speedup
from tests.speedup.zoo import ResidualAdd, conv_bn, masked_copy, max_rel_error, randomize_norms

X = torch.randn(2, 3, 12, 12)


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 16), conv_bn(16, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def bn_masks(model: nn.Module, names: list[str], drop: list[int], shift: bool = True) -> dict:
    """Zero the scale (and, with ``shift``, the shift) of channels ``drop``."""
    masks = {}
    for name in names:
        bn = model.get_submodule(name)
        w = torch.ones_like(bn.weight)
        w[drop] = 0.0
        masks[name] = {'weight': w, 'bias': w.clone() if shift else torch.ones_like(w)}
    return masks


def check(model, masks):
    ref = masked_copy(model, masks)(X)
    small, summary = speedup(model, X, masks, return_summary=True)
    assert max_rel_error(ref, small(X)) < 1e-4
    return small, summary


def test_scale_and_shift_masked_removes_the_producing_filters():
    model = randomize_norms(Plain().eval())
    small, summary = check(model, bn_masks(model, ['a.1', 'b.1'], [0, 3, 5, 9]))
    assert small.a[0].out_channels == 12 and small.b[0].in_channels == 12
    assert small.b[0].out_channels == 12 and small.fc.in_features == 12
    assert small.a[1].num_features == 12
    assert summary.removed_channels == 8


def test_scale_only_leaves_a_constant_folded_where_it_can_be():
    model = randomize_norms(Plain().eval())
    with torch.no_grad():
        model.a[1].bias[[1, 2]] = 0.5  # positive: it passes the ReLU
    # a.1's shifts reach the padded conv b.0, which carries them on a constant path;
    # b.1's reach the mean and the Linear, which gets the bias-like (one value per output) path
    small, summary = check(model, bn_masks(model, ['a.1', 'b.1'], [1, 2], shift=False))
    assert small.a[0].out_channels == 14
    assert small.b[0].out_channels == 14 and small.fc.in_features == 14
    assert small.b[0].carried_constants.dim() == 4
    assert small.fc.carried_constants.shape == (small.fc.out_features,)


def test_channel_read_elsewhere_is_kept():
    model = randomize_norms(ResidualAdd().eval())
    # a.4 zeroes channels of the residual branch, but the stem's channels also reach
    # the addition and a.0: nothing can go, and the result is still exact
    small, summary = check(model, bn_masks(model, ['a.4'], [0, 1, 2]))
    assert small.stem[0].out_channels == 16
    small, summary = check(model, bn_masks(model, ['a.1'], [0, 1, 2]))
    assert small.a[0].out_channels == 13 and small.a[3].in_channels == 13
    assert small.stem[0].out_channels == 16


def test_slim_pruner_then_speedup():
    model = randomize_norms(Plain().eval())
    pruner = SlimPruner(model, [{'sparsity': 0.5, 'op_types': ['BatchNorm2d']}])
    pruner.compress()
    ref = model(X)
    small, summary = speedup(model, X, pruner, return_summary=True)
    assert max_rel_error(ref, small(X)) < 1e-4
    before = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in small.parameters()) < before
    assert summary.removed_channels == 16


def test_dependency_aware_trace_is_not_reused_when_a_norm_zeroes_channels():
    model = randomize_norms(Plain().eval())
    pruner = L1FilterPruner(model, [{'sparsity': 0.25, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=X)
    pruner.compress()
    masks = {**pruner.get_masks(), **bn_masks(model, ['b.1'], [0, 1, 2, 3, 4, 5, 6, 7])}
    small, summary = check(model, masks)
    assert not summary.trace_reused
    assert small.b[0].out_channels < 12
