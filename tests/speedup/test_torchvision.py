"""The acceptance architectures: exact speedup with random BatchNorm statistics."""
import pytest
import torch
import torchvision

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup
from tests.speedup.zoo import l1_masks, masked_copy, max_rel_error, randomize_norms

ARCHS = ['resnet18', 'resnet50', 'resnext50_32x4d', 'vgg16_bn', 'alexnet', 'squeezenet1_1',
         'densenet121', 'googlenet', 'inception_v3', 'mobilenet_v2', 'mobilenet_v3_large',
         'mnasnet1_0', 'shufflenet_v2_x1_0', 'efficientnet_b0', 'regnet_y_400mf',
         'convnext_tiny', 'fcn_resnet50']


def build(name: str) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == 'fcn_resnet50':
        model = torchvision.models.segmentation.fcn_resnet50(
            weights=None, weights_backbone=None, aux_loss=False)
    elif name in ('googlenet', 'inception_v3'):
        model = getattr(torchvision.models, name)(weights=None, aux_logits=False,
                                                  init_weights=True)
    else:
        model = getattr(torchvision.models, name)(weights=None)
    side = 75 if name == 'inception_v3' else 64
    return randomize_norms(model.eval()), torch.randn(1, 3, side, side)


@pytest.mark.parametrize('name', ARCHS)
def test_exact_smaller_same_shape(name):
    model, x = build(name)
    masks = l1_masks(model)
    with torch.no_grad():
        ref = masked_copy(model, masks)(x)
    small, summary = speedup(model, x, masks, return_summary=True)
    with torch.no_grad():
        out = small(x)
    assert max_rel_error(ref, out) < 1e-4
    assert summary.params_after < summary.params_before
    assert summary.removed_channels > 0


# Dependency-aware masks with real BatchNorm statistics: a removed filter leaves a non-zero
# constant (the BatchNorm shift) that zero-padded convs cannot fold; carriers keep one per
# consumer group, so nearly all masked channels still go; a ShuffleNet chunk loses as many
# channels in each half (the pruner gives back the excess), so all of them go.
DEPENDENCY_AWARE = {'resnet18': 0.99, 'resnet50': 0.99, 'resnext50_32x4d': 0.95,
                    'vgg16_bn': 0.99, 'densenet121': 0.98, 'mobilenet_v2': 0.99,
                    'efficientnet_b0': 0.99, 'regnet_y_400mf': 0.9, 'shufflenet_v2_x1_0': 1.0}


@pytest.mark.parametrize('name', sorted(DEPENDENCY_AWARE))
def test_dependency_aware_masks_are_removed(name):
    model, x = build(name)
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    with torch.no_grad():
        ref = model(x)
    small, summary = speedup(model, x, pruner, return_summary=True)
    with torch.no_grad():
        assert max_rel_error(ref, small(x)) < 1e-4
    assert summary.removed_channels >= DEPENDENCY_AWARE[name] * summary.masked_channels
