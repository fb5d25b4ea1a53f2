"""A Hugging Face ``transformers.Trainer`` callback that prunes while the Trainer trains.

Example::

    from prunus.compression.torch import AGPPruner
    from prunus.integrations.huggingface import PruningCallback

    pruner = AGPPruner(model, [{'final_sparsity': 0.8, 'start_epoch': 0, 'end_epoch': 3,
                                'frequency': 1, 'op_types': ['Linear']}])
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      callbacks=[PruningCallback(pruner)])
    trainer.train()

A ``prunus.compression.torch.Pruning`` (the step-scheduled training API) works the same way;
its ``on_step_begin(local_step=global_step)``, ``on_before_optimizer_step`` and
``on_after_optimizer_step`` run around every optimizer step. This is the same class as
``prunus.compression.torch.hf.PruningCallback`` (the Intel Extension for Transformers import
path); importing it from here gives a clear message when transformers is missing.
"""
from __future__ import annotations

from prunus._optional import require

require('transformers', 'hf', 'prunus.integrations.huggingface')

from prunus.compression.torch.hf.callback import PruningCallback  # noqa: E402  (after the check)

__all__ = ['PruningCallback']
