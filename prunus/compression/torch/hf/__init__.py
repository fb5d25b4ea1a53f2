"""Pruning inside a Hugging Face ``transformers.Trainer``, as Intel Extension for
Transformers' ``NLPTrainer.prune`` offered it.

``from intel_extension_for_transformers.transformers import metrics`` becomes
``from prunus.compression.torch.hf import metrics``, and
``...transformers.trainer import NLPTrainer`` becomes
``from prunus.compression.torch.hf.trainer import NLPTrainer``::

    trainer = NLPTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev)
    trainer.metrics = metrics.Metric(name='eval_accuracy')
    config = WeightPruningConfig([{'start_step': 0, 'end_step': 2}], target_sparsity=0.9,
                                 pruning_scope='local', pruning_type='magnitude')
    model = trainer.prune(pruning_config=config)

:class:`PruningCallback` is the piece that does it: add it to any ``Trainer`` to drive a
:class:`~prunus.compression.torch.Pruning` from the trainer's steps.
"""
from . import metrics
from .callback import PruningCallback
from .trainer import NLPTrainer
