"""The ``transformers.TrainerCallback`` that prunes while a ``Trainer`` trains."""
from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ...training_events import PruningDriver


class PruningCallback(TrainerCallback):
    """Drive an ``AGPPruner`` or a ``Pruning`` from ``Trainer`` events.

    ``AGPPruner``: compressed when training begins, ``update_epoch(epoch)`` at the start of
    every epoch. ``Pruning``: bound to the Trainer's model if it has none, then each hook at
    the matching event: ``on_step_begin`` with the Trainer's ``global_step`` (the index of
    the optimizer step to come, begun once per optimizer step, so a schedule counts
    optimizer steps under gradient accumulation) and ``on_after_optimizer_step``, which ends
    the step, after every optimizer step. Masked weights stay zero through the Trainer's
    optimizer (prunus re-zeroes them after every ``torch.optim`` step).

    The same class is ``prunus.integrations.huggingface.PruningCallback`` and, for code
    written for Intel Extension for Transformers, ``prunus.compression.torch.hf.PruningCallback``.

    Args:
        pruner: an ``AGPPruner`` that has not been compressed, or a ``Pruning``.

    Raises:
        TypeError: ``pruner`` is neither.
        ValueError: (at ``train()``) the Trainer's model is not the pruner's.

    Example::

        pruning = Pruning(config, model)
        trainer = Trainer(model=model, args=args, train_dataset=data,
                          callbacks=[PruningCallback(pruning)])
        trainer.train()
    """

    def __init__(self, pruner: Any) -> None:
        self.driver = PruningDriver(pruner)

    @property
    def pruning(self) -> Any:
        """The ``AGPPruner`` or ``Pruning`` this callback drives."""
        return self.driver.target

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
        """The optimizer stepped: update the masks where the schedule says so (this ends
        the step; the Trainer's ``on_step_end`` is not used, it would end it twice)."""
        self.driver.after_optimizer_step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close the epoch."""
        self.driver.epoch_end()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Close training (detaches the training API's hooks)."""
        self.driver.train_end()
