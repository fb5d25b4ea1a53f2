"""A PyTorch Lightning callback that prunes while ``Trainer.fit`` trains.

Example::

    from prunus.compression.torch import AGPPruner
    from prunus.integrations.lightning import PruningCallback

    pruner = AGPPruner(module, [{'final_sparsity': 0.8, 'start_epoch': 0, 'end_epoch': 3,
                                 'frequency': 1, 'op_types': ['Conv2d']}])
    lightning.Trainer(max_epochs=4, callbacks=[PruningCallback(pruner)]).fit(module, loader)

Works with ``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning`` package.
"""
from __future__ import annotations

import importlib
from typing import Any

from prunus.compression.training_events import PruningDriver

__all__ = ['PruningCallback']


def _callback_base() -> type:
    for name in ('lightning.pytorch', 'pytorch_lightning'):
        try:
            return importlib.import_module(name).Callback
        except ModuleNotFoundError:
            continue
    raise ImportError("prunus.integrations.lightning needs lightning, which is not installed; "
                      "install it with pip install 'prunus[lightning]'.")


class PruningCallback(_callback_base()):  # type: ignore[misc]
    """Drive an ``AGPPruner`` or a ``Pruning`` from Lightning ``Trainer`` events.

    ``AGPPruner``: compressed when fitting starts, ``update_epoch(trainer.current_epoch)``
    at the start of every training epoch. ``Pruning``: bound to the LightningModule if it
    has none; ``on_step_begin`` with ``trainer.global_step`` (the index of the optimizer
    step to come; begun once per optimizer step under gradient accumulation),
    ``on_before_optimizer_step`` before and ``on_after_optimizer_step`` (which ends the
    step) after every optimizer step.

    Args:
        pruner: an ``AGPPruner`` that has not been compressed, or a ``Pruning``, built on the
            LightningModule (or a submodule of it) that is fitted.

    Raises:
        TypeError: ``pruner`` is neither.

    Example::

        trainer = lightning.Trainer(max_epochs=4, callbacks=[PruningCallback(pruner)])
    """

    def __init__(self, pruner: Any) -> None:
        super().__init__()
        self.driver = PruningDriver(pruner)
        self._stepped = False

    def _bound(self, pl_module: Any) -> Any:
        bound = getattr(self.driver.target, 'bound_model', None) or getattr(self.driver.target, 'model', None)
        if bound is not None and bound is not pl_module and any(m is bound for m in pl_module.modules()):
            return bound  # the pruner was built on a submodule of the LightningModule
        return pl_module

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Compress the pruner, or bind and start the ``Pruning``."""
        self.driver.train_begin(self._bound(pl_module))

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Move the schedule to ``trainer.current_epoch``."""
        self.driver.epoch_begin(trainer.current_epoch)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        """Record the global step."""
        self.driver.step_begin(trainer.global_step)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Gradients are ready: read them for the criteria."""
        self.driver.before_optimizer_step()
        self._stepped = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """After the batch's optimizer step (if it stepped): update the masks."""
        if self._stepped:  # with gradient accumulation not every batch steps the optimizer
            self.driver.after_optimizer_step()
            self._stepped = False

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Close the epoch."""
        self.driver.epoch_end()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Close training (detaches the training API's hooks)."""
        self.driver.train_end()
