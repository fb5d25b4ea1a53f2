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
``on_after_optimizer_step`` run around every optimizer step. (Not to be confused with
``prunus.compression.torch.hf.PruningCallback``, the INC/ITREX-style callback for a ``Pruning``
only; this one also drives an ``AGPPruner``.)
"""
from __future__ import annotations

from typing import Any

from prunus._optional import require

from .driver import PruningDriver

_transformers = require('transformers', 'hf', 'prunus.integrations.huggingface')
TrainerCallback = _transformers.TrainerCallback

__all__ = ['PruningCallback']


class PruningCallback(TrainerCallback):  # type: ignore[misc, valid-type]
    """Drive an ``AGPPruner`` or a ``Pruning`` from ``Trainer`` events.

    ``AGPPruner``: compressed when training begins, ``update_epoch(epoch)`` at the start of
    every epoch. ``Pruning``: bound to the Trainer's model if it has none, then each hook at
    the matching event: ``on_step_begin`` with the Trainer's ``global_step`` (the index of
    the optimizer step to come, so a schedule counts optimizer steps, as with gradient
    accumulation it should) and ``on_after_optimizer_step``, which ends the step, after
    every optimizer step. Masked weights stay zero
    through the Trainer's optimizer (prunus re-zeroes them after every ``torch.optim`` step).

    Args:
        pruner: an ``AGPPruner`` that has not been compressed, or a ``Pruning``.

    Raises:
        TypeError: ``pruner`` is neither.
        ValueError: (at ``train()``) the Trainer's model is not the pruner's.

    Example::

        trainer = Trainer(model=model, args=args, train_dataset=data,
                          callbacks=[PruningCallback(AGPPruner(model, config_list))])
    """

    def __init__(self, pruner: Any) -> None:
        self.driver = PruningDriver(pruner)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        """Compress the pruner, or bind and start the ``Pruning``."""
        self.driver.train_begin(model)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Move the schedule to the epoch that starts."""
        self.driver.epoch_begin(int(round(state.epoch or 0)))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record the global step."""
        self.driver.step_begin(state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Gradients are ready: read them for the criteria."""
        self.driver.before_optimizer_step()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The optimizer stepped: update the masks where the schedule says so."""
        self.driver.after_optimizer_step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the epoch."""
        self.driver.epoch_end()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close training (detaches the training API's hooks)."""
        self.driver.train_end()
