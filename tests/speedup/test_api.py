"""Public API: mask sources, in-place speedup, transactions, errors, summary, groups."""
import copy

import pytest
import torch
import torchvision
from torch import nn

from prunus.compression.torch import L1FilterPruner, LevelPruner
from prunus.speedup import (Handler, ModelSpeedup, SpeedupError, channel_groups,
                            dependency_groups, speedup)
from tests.speedup.zoo import (ResidualAdd, SEGate, conv_bn, l1_masks, masked_copy,
                               max_rel_error, randomize_norms)

X = torch.randn(1, 3, 12, 12)


def test_mask_file_and_in_place(tmp_path):
    model = randomize_norms(ResidualAdd().eval())
    masks = l1_masks(model)
    torch.save(masks, tmp_path / 'mask.pth')
    ref = masked_copy(model, masks)(X)
    speeder = ModelSpeedup(model, X, str(tmp_path / 'mask.pth'))
    assert speeder.speedup_model() is model
    assert max_rel_error(ref, model(X)) < 1e-4
    assert speeder.summary.params_after < speeder.summary.params_before


def test_pruner_masks_on_model_are_stripped():
    model = randomize_norms(SEGate().eval())
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    pruner.compress()
    ref = copy.deepcopy(model)(X)
    small = speedup(model, X, pruner)
    assert not any(n.endswith('_mask') for n, _ in small.named_buffers())
    assert max_rel_error(ref, small(X)) < 1e-4
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_unstructured_masks_kept_as_zeros():
    model = ResidualAdd().eval()
    pruner = LevelPruner(model, [{'sparsity': 0.5, 'op_types': ['default']}])
    pruner.compress()
    small, summary = speedup(model, X, pruner.get_masks(), return_summary=True)
    assert summary.params_after == summary.params_before
    assert summary.zero_weights > 0
    assert 'unstructured' in str(summary)


def test_conflicting_masks_keep_used_channels_and_say_why():
    model = randomize_norms(ResidualAdd().eval())
    masks = {'a.3': l1_masks(model)['a.3']}  # the residual's other producer keeps all
    small, summary = speedup(model, X, masks, return_summary=True)
    assert summary.removed_channels == 0 and summary.masked_channels == 8
    assert any("'stem.0'" in reason for reason in summary.kept)
    assert max_rel_error(masked_copy(model, masks)(X), small(X)) < 1e-4


class Odd(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c, c))

    def forward(self, x):
        return torch.einsum('nchw,dc->ndhw', x, self.weight)


class OddNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.odd, self.head = conv_bn(3, 8), Odd(8), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.head(self.odd(self.stem(x)))


class OddHandler(Handler):
    def count_in(self, module):
        return module.weight.shape[1]

    def count_out(self, module):
        return module.weight.shape[0]

    def prune_in(self, module, keep):
        module.weight = nn.Parameter(module.weight.data[:, keep])

    def prune_out(self, module, keep):
        module.weight = nn.Parameter(module.weight.data[keep])

    def dead_out(self, module):
        return (module.weight == 0).all(1)


def test_unknown_op_keeps_channels_and_custom_handler_removes_them():
    model = OddNet().eval()
    masks = {'stem.0': l1_masks(model)['stem.0']}
    _, summary = speedup(model, X, masks, return_summary=True)
    assert summary.removed_channels == 0
    assert any('einsum' in r or 'bmm' in r or 'mm' in r for r in summary.kept)
    small, summary = speedup(model, X, masks, {Odd: OddHandler()}, return_summary=True)
    assert summary.removed_channels == 4
    assert max_rel_error(masked_copy(model, masks)(X), small(X)) < 1e-4


class BrokenHandler(OddHandler):
    def prune_in(self, module, keep):
        raise NotImplementedError('no')


def test_failure_leaves_model_unchanged_and_names_layer():
    model = OddNet().eval()
    state = copy.deepcopy(model.state_dict())
    masks = {'stem.0': l1_masks(model)['stem.0']}
    with pytest.raises(SpeedupError, match=r"'odd' \(Odd, input \(1, 8, 12, 12\).*custom_handlers"):
        ModelSpeedup(model, X, masks, custom_handlers={Odd: BrokenHandler()}).speedup_model()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


class StoredWidth(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.width = nn.Conv2d(3, 8, 3, padding=1), 8
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)).reshape(-1, self.width))


def test_stored_channel_count_is_named():
    model = StoredWidth().eval()
    with pytest.raises(SpeedupError, match=r'StoredWidth.width=8'):
        speedup(model, X, {'conv': l1_masks(model)['conv']})


def test_bad_masks_are_rejected():
    model = ResidualAdd().eval()
    with pytest.raises(ValueError, match="module 'nope'"):
        speedup(model, X, {'nope': {'weight': torch.ones(1)}})
    with pytest.raises(ValueError, match=r"masks\['stem.0'\]\['weight'\] has shape \(1,\)"):
        speedup(model, X, {'stem.0': {'weight': torch.ones(1)}})
    with pytest.raises(TypeError, match='masks must be a dict'):
        speedup(model, X, 3)


def test_channel_groups_residual():
    groups = channel_groups(ResidualAdd().eval(), X)
    tied = next(g for g in groups if 'a.3' in g)
    assert {'stem.0', 'stem.1', 'a.3', 'a.4'} <= set(tied)
    assert ['head.fc'] in groups


def test_grouped_conv_constraint_is_reported():
    model = torchvision.models.resnext50_32x4d(weights=None).eval()
    groups = dependency_groups(model, torch.randn(1, 3, 32, 32))
    g = next(g for g in groups if 'layer1.0.conv1' in g.names)
    assert g.groups == 32


def test_dependency_aware_l1_lets_speedup_remove_all_on_resnet18():
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    ref = copy.deepcopy(model)(x)
    small, summary = speedup(model, x, pruner, return_summary=True)
    assert summary.removed_channels >= 0.98 * summary.masked_channels
    assert max_rel_error(ref, small(x)) < 1e-4
    naive = L1FilterPruner(copy.deepcopy(torchvision.models.resnet18(weights=None)),
                           [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    naive.compress()
    assert speedup(naive.bound_model.eval(), x, naive, return_summary=True)[1] \
        .removed_channels < summary.removed_channels


def test_check_false_skips_running_the_result_and_stays_exact():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    masks = l1_masks(model)
    small, summary = speedup(model, X, masks, return_summary=True, check=False)
    assert summary.flops_after is None and 'not run' in str(summary)
    assert summary.removed_channels > 0
    assert max_rel_error(masked_copy(model, masks)(X), small(X)) < 1e-4


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # the TorchScript exporter
def test_result_exports_to_onnx_with_the_same_outputs(tmp_path):
    onnx = pytest.importorskip('onnx')
    from onnx.reference import ReferenceEvaluator  # noqa: PLC0415
    model = randomize_norms(SEGate().eval())
    small = speedup(model, X, l1_masks(model))
    path = tmp_path / 'small.onnx'
    torch.onnx.export(small, (X,), str(path), dynamo=False, input_names=['x'])
    onnx.checker.check_model(onnx.load(str(path)))
    out = ReferenceEvaluator(str(path)).run(None, {'x': X.numpy()})[0]
    assert max_rel_error(small(X), torch.from_numpy(out)) < 1e-5
