"""Group importance over coupled parameters, and round_to widths."""
import numpy as np
import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, L2FilterPruner
from prunus.compression.torch.group_importance import group_importance
from prunus.compression.widths import round_keep, rounded_count
from prunus.speedup import dependency_structure, speedup


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.next = nn.Conv2d(6, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 5 * 5, 3)

    def forward(self, x):
        x = self.next(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))


def _chain(seed=0):
    torch.manual_seed(seed)
    model = Chain().eval()
    with torch.no_grad():
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.5, 0.5)
    return model, torch.randn(2, 3, 5, 5)


def _group(model, x, member):
    groups, _ = dependency_structure(model, x)
    return next(g for g in groups if member in g.names)


def test_sum_without_normalization_adds_every_coupled_slice():
    model, x = _chain()
    group = _group(model, x, 'conv')
    assert set(group.names) == {'conv', 'bn'} and set(group.consumers) == {'next'}
    got = group_importance(group, dict(model.named_modules()), 1, 'sum', None)
    w, n = model.conv.weight.detach(), model.next.weight.detach()
    want = (w.abs().flatten(1).sum(1) + model.bn.weight.detach().abs()
            + model.bn.bias.detach().abs() + n.abs().sum((0, 2, 3)))
    assert torch.allclose(got, want.double())


def test_first_is_the_filter_criterion_and_linear_consumers_sum_their_features():
    model, x = _chain()
    modules = dict(model.named_modules())
    first = group_importance(_group(model, x, 'conv'), modules, 1, 'first', 'mean')
    assert torch.allclose(first, model.conv.weight.detach().abs().flatten(1).sum(1).double())
    after_flatten = group_importance(_group(model, x, 'next'), modules, 1, 'sum', None)
    fc = model.fc.weight.detach().abs().view(3, 4, 25).sum((0, 2))
    want = model.next.weight.detach().abs().flatten(1).sum(1) + fc
    assert torch.allclose(after_flatten, want.double())


@pytest.mark.parametrize('reduction', ['mean', 'sum'])  # max: one strong slice saves it
@pytest.mark.parametrize('normalization', ['mean', 'max', 'sum'])  # None: raw sizes decide
def test_a_channel_nobody_reads_loses_under_group_importance(reduction, normalization):
    model, x = _chain()
    with torch.no_grad():
        model.conv.weight[2] *= 3.0  # the strongest filter ...
        model.next.weight[:, 2] = 0.0  # ... that the next layer ignores
        model.bn.weight[2] = 1e-3
        model.bn.bias[2] = 0.0
    config = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]
    plain = L1FilterPruner(model, config, dependency_aware=True, dummy_input=x)
    assert bool(plain.calc_masks()['conv']['weight'][2].all())
    grouped = L1FilterPruner(model, config, dependency_aware=True, dummy_input=x,
                             importance='group', group_reduction=reduction,
                             group_normalization=normalization)
    assert not bool(grouped.calc_masks()['conv']['weight'][2].any())


def test_nni_defaults_are_unchanged():
    model, x = _chain()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    assert pruner.importance == 'filter' and pruner.round_to is None
    keep = pruner.calc_masks()['conv']['weight'].flatten(1).any(1)
    l1 = model.conv.weight.detach().abs().flatten(1).sum(1)
    assert set(keep.nonzero().flatten().tolist()) == set(l1.argsort()[3:].tolist())


@pytest.mark.parametrize('kwargs, message', [
    ({'importance': 'group'}, 'dependency_aware=True'),
    ({'importance': 'groups', 'dependency_aware': True}, "'filter' or 'group'"),
    ({'importance': 'group', 'dependency_aware': True, 'group_reduction': 'median'},
     'group_reduction'),
    ({'importance': 'group', 'dependency_aware': True, 'group_normalization': 'l2'},
     'group_normalization'),
    ({'round_to': 0}, 'round_to'),
    ({'round_to': 2.0}, 'round_to'),
])
def test_bad_options_name_themselves(kwargs, message):
    model, x = _chain()
    with pytest.raises(ValueError, match=message):
        L2FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], dummy_input=x,
                       **kwargs)


def test_rounded_count():
    assert rounded_count(37, 64, 8) == 40
    assert rounded_count(3, 64, 8) == 8  # never below one step
    assert rounded_count(60, 62, 8) == 56  # never above a multiple that fits
    assert rounded_count(5, 6, 8) == 6  # too narrow to round
    assert rounded_count(10, 24, 4, blocks=3) == 12  # a multiple of lcm(4, 3)


def test_round_keep_adds_the_best_pruned_and_drops_the_worst_kept():
    scores = np.array([5.0, 1.0, 4.0, 3.0, 2.0, 0.5, 6.0, 7.0])
    keep = scores >= 3.0  # 5 kept
    assert round_keep(keep, scores, 4).tolist() == [1, 0, 1, 0, 0, 0, 1, 1]
    keep = scores >= 5.0  # 3 kept -> 4: adds score 4
    assert round_keep(keep, scores, 4).tolist() == [1, 0, 1, 0, 0, 0, 1, 1]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 24, 3, padding=1)
        self.b = nn.Conv2d(24, 24, 3, padding=1)
        self.c = nn.Conv2d(24, 20, 3, padding=1, groups=2)
        self.d = nn.Conv2d(20, 30, 1)

    def forward(self, x):
        x = self.a(x)
        return self.d(self.c(x + self.b(x)))


@pytest.mark.parametrize('importance', ['filter', 'group'])
@pytest.mark.parametrize('ratio', [0.3, 0.6, 0.8])
def test_round_to_widths_after_speedup(importance, ratio):
    model = Residual().eval()
    x = torch.randn(2, 3, 6, 6)
    pruner = L1FilterPruner(model, [{'sparsity': ratio, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x, importance=importance,
                            round_to=4)
    pruner.compress()
    small = speedup(model, x, pruner)
    widths = [small.a.out_channels, small.b.out_channels, small.c.out_channels]
    assert small.a.out_channels == small.b.out_channels and small.d.out_channels == 30
    assert all(w % 4 == 0 for w in widths), widths
    assert small.c.out_channels % 2 == 0
