"""001 (LPOT pruning): its YAML and both of its usages, with
``from lpot.experimental import Pruning, common`` replaced by
``from prunus.compression.torch import Pruning, common``.

The document: basic_magnitude zeroes single weights of the named tensor, "we increase the
sparsity target linearly as the epochs", and the pruner's start/end epochs and update
frequency override the global ones.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from .conftest import zeros_fraction

# The document's pruning section, in a whole LPOT config (model, device, evaluation, tuning).
YAML = '''
model:
  name: resnet18
  framework: pytorch
device: cpu
evaluation:
  accuracy:
    metric:
      topk: 1
tuning:
  random_seed: 9527
pruning:                                             # mandotory only for pruning.
  train:
    start_epoch: 0
    end_epoch: 10
    iteration: 100
    frequency: 2

    dataloader:
      batch_size: 256
      dataset:
        ImageFolder:
          root: /path/to/imagenet/train
      transform:
        RandomResizedCrop:
          size: 224
        RandomHorizontalFlip:
        ToTensor:
        Normalize:
          mean: [0.485, 0.456, 0.406]
          std: [0.229, 0.224, 0.225]
    criterion:
      CrossEntropyLoss:
        reduction: None
    optimizer:
      SGD:
        learning_rate: 0.1
        momentum: 0.9
        weight_decay: 0.0004
        nesterov: False

  approach:
    weight_compression:
      initial_sparsity: 0.0
      target_sparsity: 0.3
      pruners:
        - !Pruner
            initial_sparsity: 0.0
            target_sparsity: 0.97
            prune_type: basic_magnitude              # currently only support basic_magnitude
            names: ['layer1.0.conv1.weight']         # tensor name to be pruned.
            start_epoch: 0
            end_epoch: 2
            update_frequency: 0.1
'''


@pytest.fixture
def config(tmp_path):
    path = tmp_path / 'conf.yaml'
    path.write_text(YAML)
    return str(path)


@pytest.fixture
def train_dataloader():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 32, 32, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)]


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10)


def _weights(model):
    return {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_user_training_function_with_the_hooks(config, train_dataloader):
    from prunus.compression.torch import Pruning, common
    model = _resnet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    per_epoch = []

    def train_func(model):
        for epoch in range(4):
            model.train()
            prune.on_epoch_begin(epoch)
            for step, batch in enumerate(train_dataloader):
                prune.on_batch_begin(step)
                inputs, labels = batch
                loss = nn.functional.cross_entropy(model(inputs), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                model.zero_grad()
                prune.on_batch_end()
            per_epoch.append({n: zeros_fraction(w) for n, w in _weights(model).items()})

    scores = []

    def eval_func(model):
        scores.append(model)
        return 0.5

    prune = Pruning(config)
    prune.model = wrapped = common.Model(model)
    prune.train_dataloader = train_dataloader
    prune.pruning_func = train_func
    prune.eval_dataloader = train_dataloader
    prune.eval_func = eval_func
    model = prune()
    # linear in the epochs: 0 at epoch 0, half way at epoch 1, 0.97 from epoch 2 on
    target = [e['layer1.0.conv1'] for e in per_epoch]
    assert target == pytest.approx([0.0, 0.485, 0.97, 0.97], abs=1 / 36864)
    # element-wise: single weights, not 4x1 blocks (the zeros of a filter row are scattered)
    weight = _weights(model.model)['layer1.0.conv1'].detach()
    assert 0 < int((weight.reshape(64, -1) == 0).sum(1).min()) < 576
    # only the named tensor is pruned
    assert all(v == 0 for n, v in per_epoch[-1].items() if n != 'layer1.0.conv1')
    assert model is wrapped and scores == [wrapped]  # LPOT gave back (and evaluated) its Model
    assert prune.score == 0.5


def test_yaml_training_when_no_training_function_is_given(config, train_dataloader):
    from prunus.compression.torch import Pruning, common
    model = _resnet()
    prune = Pruning(config)
    prune.model = common.Model(model)
    prune.train_dataloader = train_dataloader
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(zeros_fraction(m.layer1[0].conv1.weight)))
    pruned = prune()
    assert len(calls) == 20  # train.start_epoch 0 .. end_epoch 10, 2 batches each (iteration caps at 100)
    seen = calls[::2]  # at the first batch of each epoch
    assert seen[:3] == pytest.approx([0.0, 0.485, 0.97], abs=1 / 36864) and seen[-1] == pytest.approx(0.97, abs=1e-4)
    assert pruned.model is model


def test_unknown_launcher_attribute_is_an_error(config):
    from prunus.compression.torch import Pruning
    prune = Pruning(config)
    with pytest.raises(AttributeError, match="did you mean 'pruning_func'"):
        prune.prunning_func = lambda model: None
