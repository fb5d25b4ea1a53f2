"""000 (Intel Neural Compressor 1.x pruning API): the launcher and the hooks of its BERT
loop, with ``from neural_compressor import pruning`` replaced by
``from prunus.compression.torch import pruning``."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from .conftest import zeros_fraction

YAML = '''
version: 1.0
model:
  name: tiny_classifier
  framework: pytorch
pruning:
  approach:
    weight_compression:
      initial_sparsity: 0.0
      target_sparsity: 0.7
      start_step: 2
      end_step: 14
      update_frequency_on_step: 4
      pruners:
        - !Pruner
            pattern: "4x1"
            prune_type: magnitude
            sparsity_decay_type: linear
            prune_domain: local
'''


class TinyBert(nn.Module):
    """A model called as model(**batch) returning an object with .loss, like transformers'."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(16, 32)
        self.head = nn.Linear(32, 3)  # 3 outputs: not divisible by 4, so 4x1 skips it

    def forward(self, input_ids, labels):
        logits = self.head(torch.relu(self.encoder(input_ids)))
        return type('Output', (), {'loss': nn.functional.cross_entropy(logits, labels), 'logits': logits})()


@pytest.fixture
def batches():
    g = torch.Generator().manual_seed(0)
    return [{'input_ids': torch.randn(8, 16, generator=g), 'labels': torch.randint(0, 3, (8,), generator=g)}
            for _ in range(6)]


def test_launcher_runs_the_training_function_with_the_hooks(tmp_path, batches):
    from prunus.compression.torch import pruning
    path = tmp_path / 'pruning.yaml'
    path.write_text(YAML)
    model = TinyBert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    num_train_epochs, gradient_accumulation_steps = 3, 2
    train_dataloader = batches
    seen = []

    def pruning_func(model):
        for epoch in range(num_train_epochs):
            model.train()
            prune.on_epoch_begin(epoch)
            for step, batch in enumerate(train_dataloader):
                prune.on_step_begin(step)
                outputs = model(**batch)
                loss = outputs.loss / gradient_accumulation_steps
                loss.backward()
                if (step + 1) % gradient_accumulation_steps == 0:
                    prune.on_before_optimizer_step()
                    optimizer.step()
                    scheduler.step()  # Update learning rate schedule
                    model.zero_grad()
                prune.on_step_end()
                seen.append(zeros_fraction(model.encoder.weight))

    with pytest.warns(UserWarning, match=r"pattern '4x1' does not fit layer\(s\) 'head' \(3x32\)"):
        prune = pruning(str(path))
        prune.model = model
    prune.train_func = pruning_func
    model = prune.fit()
    assert isinstance(model, TinyBert)
    # The step index restarts every epoch; the schedule keeps counting: 18 steps in all.
    # Updates at steps 2, 6, 10 and 14 to 0, 0.7/3, 1.4/3 and 0.7 of the 4x1 blocks.
    expected = [0.0] * 6 + [0.7 / 3] * 4 + [1.4 / 3] * 4 + [0.7] * 4
    assert seen == pytest.approx(expected, abs=1 / 64)
    assert zeros_fraction(model.head.weight) == 0  # skipped, as the warning said


def test_launcher_rejects_unknown_attributes(tmp_path):
    from prunus.compression.torch import pruning
    path = tmp_path / 'pruning.yaml'
    path.write_text(YAML)
    prune = pruning(str(path))
    with pytest.raises(AttributeError, match="Pruning has no attribute 'trian_func'; did you mean 'train_func'"):
        prune.trian_func = lambda model: None
    with pytest.raises(TypeError, match='Pruning.train_func must be callable'):
        prune.train_func = 3
    with pytest.raises(RuntimeError, match='Pruning has no model'):
        prune.fit()


def test_training_that_ends_before_the_target_warns(tmp_path, batches):
    from prunus.compression.torch import pruning
    path = tmp_path / 'pruning.yaml'
    path.write_text(YAML)
    prune = pruning(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        prune.model = TinyBert()

    def short(model):
        for step, batch in enumerate(batches[:4]):
            prune.on_step_begin(step)
            model(**batch).loss.backward()
            prune.on_step_end()
    prune.train_func = short
    with pytest.warns(UserWarning, match=r'pruners\[0\]: training ended at step 3 with sparsity 0, short of its '
                                         r'target 0.7'):
        prune.fit()
