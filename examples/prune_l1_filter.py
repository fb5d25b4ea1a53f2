"""Prune a torchvision ResNet-18 to half its filters with L1FilterPruner and export it."""
import torch
import torchvision

from prunus.compression.torch import L1FilterPruner

model = torchvision.models.resnet18(weights=None, num_classes=10)
config_list = [{'sparsity': 0.5, 'op_types': ['Conv2d']}, {'exclude': True, 'op_names': ['conv1']}]
pruner = L1FilterPruner(model, config_list)
model = pruner.compress()
print(pruner.sparsity_report(torch.randn(1, 3, 64, 64)))
pruner.export_model('resnet18_pruned.pth', 'resnet18_mask.pth')
