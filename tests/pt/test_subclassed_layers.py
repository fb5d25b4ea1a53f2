"""Layers that subclass a supported torch layer (torchvision's Conv3DSimple is a Conv3d) are
selected and pruned as their base class, and dependency-aware pruning ties them too."""
import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup


class MyConv(nn.Conv2d):
    """A user's conv subclass, as in timm or torchvision's video models."""


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = MyConv(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.body(x))
        return self.fc(x.mean((2, 3)))


X = torch.randn(2, 3, 8, 8)


def test_subclass_selected_by_base_type_and_own_name():
    for op_types in (['Conv2d'], ['default'], ['MyConv']):
        pruner = L1FilterPruner(Residual(), [{'sparsity': 0.5, 'op_types': op_types}])
        pruner.compress()
        assert 'body' in pruner.get_masks()
        assert pruner.get_masks()['body']['weight'].sum() == 4 * 8 * 9


def test_dependency_aware_ties_subclass_and_base_and_speedup_removes_them():
    model = Residual().eval()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=X)
    pruner.compress()
    masks = pruner.get_masks()
    kept = [masks[n]['weight'].flatten(1).any(1) for n in ('stem', 'body')]
    assert torch.equal(kept[0], kept[1])
    ref = model(X)
    small, summary = speedup(model, X, pruner, return_summary=True)
    assert summary.removed_channels == summary.masked_channels == 8
    assert small.stem.out_channels == small.body.out_channels == 4
    assert (small(X) - ref).abs().max() < 1e-5


def test_dependency_aware_warns_when_a_tied_layer_is_not_selected():
    model = Residual().eval()
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['stem']}],
                            dependency_aware=True, dummy_input=X)
    with pytest.warns(UserWarning, match="'stem' share channels with 'body'"):
        pruner.compress()

