"""The dependency-aware pruner's trace is reused by the speedup that follows, and never
once the model, the input or the handlers changed."""
import copy

import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup
from prunus.speedup.cache import recall
from prunus.speedup.structure import meta_copy
from prunus.speedup.trace import trace_model
from tests.speedup.zoo import Attention, ResidualAdd, max_rel_error, randomize_norms

X = torch.randn(1, 3, 12, 12)
CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def _pruned(model, x=X):
    pruner = L1FilterPruner(model, CONFIG, dependency_aware=True, dummy_input=x)
    pruner.compress()
    return pruner


def _exact(model, x, **kw):
    with torch.no_grad():
        ref = model.eval()(x)
    small, summary = speedup(model, x, return_summary=True, **kw)
    with torch.no_grad():
        assert max_rel_error(ref, small(x)) < 1e-4
    return summary


def test_speedup_reuses_the_pruners_trace():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    _pruned(model)
    summary = _exact(model, X)
    assert summary.trace_reused and summary.removed_channels > 0


def test_replacing_a_layer_invalidates():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    _pruned(model)
    model.head.fc = nn.Linear(16, 7)  # same input size, new layer
    assert recall(model, X, None) is None
    assert not _exact(model, X).trace_reused


def test_changing_a_layer_setting_invalidates():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    _pruned(model)
    model.a[0].padding = (2, 2)  # same parameters, other output shape
    model.a[0].dilation = (2, 2)
    assert recall(model, X, None) is None
    assert not _exact(model, X).trace_reused


def test_other_or_modified_input_invalidates():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    x = X.clone()
    _pruned(model, x)
    assert recall(model, x.clone(), None) is None
    assert recall(model, x, {nn.Linear: None}) is None
    x.mul_(2.0)
    assert recall(model, x, None) is None
    assert not _exact(model, x).trace_reused


def test_copies_do_not_inherit_the_trace():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    _pruned(model)
    assert recall(copy.deepcopy(model), X, None) is None


class _ValueBranch(Attention):
    """Branches on a value, which a meta tensor does not have (nn.MultiheadAttention alone
    is a handled layer now, so the meta trace follows it)."""

    def forward(self, x):
        if float(x.abs().sum()) >= 0:
            return super().forward(x)
        return x


def test_a_path_the_meta_trace_cannot_follow_is_traced_again():
    torch.manual_seed(0)
    model = randomize_norms(_ValueBranch().eval())
    x = torch.randn(2, 5, 6)
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}],
                   dependency_aware=True, dummy_input=x).compress()
    with pytest.raises(Exception):  # the meta trace cannot follow the value branch
        trace_model(meta_copy(model).eval(), x.to('meta'), constants=False, strict=True)
    assert recall(model, x, None) is not None  # the real run traced it again
    _exact(model, x)


class _Switch(nn.Module):
    """A plain Python flag changes the path; no module or tensor changes."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 4, 1)
        self.pool_first = False

    def forward(self, x):
        y = self.bn(self.conv(x))
        if self.pool_first:
            y = torch.nn.functional.avg_pool2d(y, 2)
        return self.head(torch.relu(y))


def test_a_changed_python_path_is_caught_by_the_replay():
    torch.manual_seed(0)
    model = randomize_norms(_Switch().eval())
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['conv']}],
                            dependency_aware=True, dummy_input=X)
    pruner.compress()
    model.pool_first = True
    assert recall(model, X, None) is not None  # nothing the fingerprint sees changed
    summary = _exact(model, X)
    assert not summary.trace_reused
