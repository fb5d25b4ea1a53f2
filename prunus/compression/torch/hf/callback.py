"""A ``transformers.TrainerCallback`` that drives the training-API hooks."""
from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from ..training import Pruning


class PruningCallback(TrainerCallback):
    """Calls ``pruning``'s hooks from the Trainer's events; the schedule follows the
    Trainer's ``global_step`` (one step per optimizer step, as with gradient accumulation).

    Example::

        pruning = Pruning(config, model)
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[PruningCallback(pruning)])
        trainer.train()
    """

    def __init__(self, pruning: Pruning):
        if not isinstance(pruning, Pruning):
            raise TypeError(f'PruningCallback needs a prunus Pruning; got {type(pruning).__name__}.')
        self.pruning = pruning

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_train_begin()

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_epoch_begin(int(state.epoch or 0))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_step_begin(local_step=state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_before_optimizer_step()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # ends the step; the Trainer's on_step_end would end it a second time
        self.pruning.on_after_optimizer_step()

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_epoch_end()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.pruning.on_train_end()

