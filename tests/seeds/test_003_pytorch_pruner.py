"""003 (INC's PyTorch Pruner): its YAML and coding template, with
``from neural_compressor.experimental.pytorch_pruner.pruning import Pruning`` replaced by
``from prunus.compression.torch import Pruning``.

The document: the hooks follow ``on_step_begin(local_step=ni)``; local settings override
global ones; ``not_to_prune_names`` / ``exclude_names`` are regular expressions; start step
equal to end step is one-shot, otherwise iterative.
"""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from .conftest import zeros_fraction

YAML = '''
version: 1.0

model:
  name: "yolov5s6"
  framework: "pytorch"

pruning:
  approach:
    weight_compression_pytorch:
      # Global settings
      start_step: 0
      end_step: 0
      not_to_prune_names: ["model.33.m.*"]
      prune_layer_type: ["Conv2d"]
      target_sparsity: 0.8
      max_sparsity_ratio_per_layer: 0.98

      pruners:
        - !Pruner
            exclude_names: ["model.*.cv1", "model.*.cv2", "model.*.cv3"]
            pattern: "oc_pattern_1x1"
            update_frequency_on_step: 1000
            prune_domain: "global"
            prune_type: "snip_momentum"
            sparsity_decay_type: "exp"
        - !Pruner
            exclude_names: []
            pattern: "oc_pattern_4x1"
            update_frequency_on_step: 1000
            prune_domain: "global"
            prune_type: "snip_momentum"
            sparsity_decay_type: "exp"
'''


class C3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cv1, self.cv2, self.cv3 = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 1)
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.relu(self.cv3(torch.relu(self.cv2(torch.relu(self.cv1(x)))))))


class Detect(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.m = nn.ModuleList([nn.Conv2d(c, 12, 1)])

    def forward(self, x):
        return self.m[0](x)


class TinyYolo(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.model = nn.Sequential(OrderedDict([('0', C3(c)), ('1', C3(c)), ('33', Detect(c))]))

    def forward(self, x):
        return self.model(torch.relu(self.stem(x)))


def _run_template(tmp_path, do_prune, epochs=2, nb=5, nw=2):
    from prunus.compression.torch import Pruning
    path = tmp_path / 'yolo.yaml'
    path.write_text(YAML)
    torch.manual_seed(0)
    model = TinyYolo()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 12, 8, 8, generator=g)) for _ in range(nb)]
    total_iterations = nb * epochs
    seen = []
    with pytest.warns(UserWarning, match=r"pruners\[0\] and pruners\[1\] both select 'stem', 'model.0.conv', "
                                         r"'model.1.conv' \(3 layer\(s\)\)"):
        pruner = Pruning(str(path))
        if do_prune:
            start, end = nw, int(total_iterations)
        else:
            start = nb * epochs + 1
            end = start
        pruner.update_items_for_all_pruners(start_step=start, end_step=end)
        pruner.model = model
    pruner.on_train_begin()
    for epoch in range(0, epochs):
        model.train()
        for i, (imgs, targets) in enumerate(data):
            ni = i + nb * epoch  # number integrated batches (since train start)
            pruner.on_step_begin(local_step=ni)
            pred = model(imgs)
            loss = nn.functional.mse_loss(pred, targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            pruner.on_before_optimizer_step()
            optimizer.step()
            pruner.on_after_optimizer_step()
            optimizer.zero_grad()
            seen.append(zeros_fraction(model.stem.weight))
    return model, seen, pruner


def test_template_prunes_at_the_step_it_is_given(tmp_path):
    model, seen, pruner = _run_template(tmp_path, do_prune=True)
    # frequency 1000 exceeds the schedule (steps 2..10): one update, at step 2, to the target
    assert seen[:2] == [0.0, 0.0] and seen[2] > 0 and seen[2:] == [seen[2]] * 8
    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    # not_to_prune_names (regex) keeps the detection head dense
    assert zeros_fraction(convs['model.33.m.0'].weight) == 0
    # cv1/cv2/cv3 are only in the second (4x1) pruner: whole 4x1 blocks go
    for name in ('model.0.cv1', 'model.1.cv2'):
        rows = convs[name].weight.detach().reshape(16, -1)
        assert (rows.reshape(4, 4, -1) == 0).all(1).sum() == (rows == 0).sum() // 4
    # both pruners prune the overlap: its mask is the product of theirs
    first, second_group = pruner.groups
    for name in ('stem', 'model.0.conv', 'model.1.conv'):
        product = first.masks[name]['weight'] * second_group.masks[name]['weight']
        assert torch.equal(convs[name].weight_mask, product)
        assert zeros_fraction(product) > max(zeros_fraction(first.masks[name]['weight']),
                                             zeros_fraction(second_group.masks[name]['weight'])) - 1e-9
    second = [convs[n].weight for n in convs if n != 'model.33.m.0']
    total = sum(w.numel() for w in second)
    pruned = sum(int((w == 0).sum()) for w in second)
    assert pruned / total >= 0.8 - 1e-3  # the 4x1 pruner's global target over its layers


def test_template_without_do_prune_never_prunes(tmp_path):
    model, seen, _ = _run_template(tmp_path, do_prune=False)
    assert seen == [0.0] * 10  # start = end = nb * epochs + 1: after the last step


def test_yaml_two_four_pattern_loads_as_written():
    from prunus.compression.torch import load_pruning_yaml
    config = load_pruning_yaml('pruning:\n  approach:\n    weight_compression_pytorch:\n      pruners:\n'
                               '        - !Pruner\n            pattern: 2:4\n')
    assert config.resolved()[0]['pattern'] == '2:4'
