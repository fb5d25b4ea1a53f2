"""004 (Intel Extension for Transformers' pruning): ``WeightPruningConfig`` with its
defaults and ``NLPTrainer.prune``, with ``intel_extension_for_transformers.transformers``
replaced by ``prunus.compression.torch.hf`` and ``neural_compressor.config`` by
``prunus.compression.torch``. The document writes ``target_sparsity=0,9`` (a typo for 0.9)
and ``trainer.metrics = tune_metric`` (for ``metric``).

The document's defaults: target sparsity 0.9, update frequency 1, pruning type
snip_momentum; INC's defaults beside them: pattern 4x1 on Conv and Linear layers, where a
layer the pattern cannot tile is skipped with a warning.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip('transformers')


def _tiny_bert():
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(1, 64, (n, 8), generator=g)
        self.labels = (self.ids[:, 0] > 32).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {'input_ids': self.ids[i], 'attention_mask': torch.ones(8, dtype=torch.long), 'labels': self.labels[i]}


def test_defaults_of_weight_pruning_config():
    from prunus.compression.torch import WeightPruningConfig
    (settings,) = WeightPruningConfig().resolved()
    assert (settings['target_sparsity'], settings['pruning_type'], settings['pattern'],
            settings['pruning_op_types'], settings['pruning_frequency']) == (0.9, 'snip_momentum', '4x1',
                                                                           ['Conv', 'Linear'], 1)


def test_defaults_on_a_linear_only_model_skip_untileable_layers_with_a_warning():
    from prunus.compression.torch import Pruning, WeightPruningConfig
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))  # no Conv, and a 10-wide head
    with pytest.warns(UserWarning, match=r"pattern '4x1' does not fit layer\(s\) '2' \(10x32\)"):
        pruning = Pruning(WeightPruningConfig(), model)
    assert [list(g.modules) for g in pruning.groups] == [['0']]


def test_nlp_trainer_prune(tmp_path):
    from prunus.compression.torch.hf import metrics
    from prunus.compression.torch import WeightPruningConfig
    from prunus.compression.torch.hf.trainer import NLPTrainer
    model = _tiny_bert()
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                                          learning_rate=1e-3, report_to=[], save_strategy='no', logging_strategy='no',
                                          use_cpu=True)

    def compute_metrics(prediction):
        return {'accuracy': float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}
    trainer = NLPTrainer(model=model, args=args, train_dataset=Pairs(), eval_dataset=Pairs(8),
                         compute_metrics=compute_metrics)
    metric = metrics.Metric(name="eval_accuracy")
    trainer.metrics = metric
    pruning_conf = WeightPruningConfig([{"start_step": 0, "end_step": 2}],
                                       target_sparsity=0.9,
                                       pruning_scope="local",
                                       pruning_type="magnitude")
    with pytest.warns(UserWarning, match=r"'classifier' \(2x32\)"):
        model = trainer.prune(pruning_config=pruning_conf)
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for name, module in linears.items():
        zeros = float((module.weight == 0).float().mean())
        if name == 'classifier':
            assert zeros == 0.0  # 2 outputs: 4x1 cannot tile it
        else:
            assert zeros == pytest.approx(0.9, abs=4 / module.weight.numel()), name  # local: every layer
    assert 0.0 <= trainer.pruned_score <= 1.0
