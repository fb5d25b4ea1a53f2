"""Training events -> prunus calls, shared by the framework callbacks.

Two kinds of prunus objects prune during training: a gradual pruner driven by epochs
(``AGPPruner``: ``compress()`` once, then ``update_epoch(epoch)``), and the training API
(``Pruning``: ``on_train_begin``, ``on_step_begin``, ``on_before_optimizer_step``, ...).
:class:`PruningDriver` gives both the same seven events, which the Hugging Face and
Lightning callbacks forward. It knows no framework: it only calls the objects' methods.
"""
from __future__ import annotations

from typing import Any


class PruningDriver:
    """Forward training events to an epoch-driven pruner or to a ``Pruning`` object.

    Args:
        target: an ``AGPPruner`` (anything with ``update_epoch``) that has not been
            compressed yet, or a ``Pruning`` (anything with the ``on_step_end`` hooks).

    Raises:
        TypeError: ``target`` has neither interface.

    Example::

        driver = PruningDriver(AGPPruner(model, config_list, optimizer))
        driver.train_begin(model)
        for epoch in range(epochs):
            driver.epoch_begin(epoch)
            ...
    """

    def __init__(self, target: Any) -> None:
        if callable(getattr(target, 'on_step_end', None)):
            self.kind = 'hooks'
        elif callable(getattr(target, 'update_epoch', None)):
            self.kind = 'epochs'
        else:
            raise TypeError('the callback needs an AGPPruner (update_epoch) or a '
                            f'prunus.compression.torch.Pruning (on_step_end); got {type(target).__name__}.')
        self.target = target
        self.started = False
        self._begun: int | None = None  # the step index last passed to on_step_begin

    def train_begin(self, model: Any) -> None:
        """Bind to ``model`` (``Pruning`` without a model) or check it is the pruner's,
        then start: ``compress()`` for a pruner, ``on_train_begin()`` for ``Pruning``."""
        if self.kind == 'hooks':
            if getattr(self.target, 'model', None) is None:
                self.target.model = model
            self._check(model, self.target.model)
            self.target.on_train_begin()
        else:
            self._check(model, getattr(self.target, 'bound_model', model))
            if not self.started:
                self.target.compress()
        self.started = True

    @staticmethod
    def _check(model: Any, bound: Any) -> None:
        inner = getattr(model, 'module', model)  # DataParallel-style wrappers
        if model is not bound and inner is not bound:
            raise ValueError('the trainer trains another model than the one the pruner is bound '
                             'to; build the pruner on the model you give the trainer.')

    def epoch_begin(self, epoch: int) -> None:
        """Start epoch ``epoch`` (0-based): the pruner's schedule moves there."""
        if self.kind == 'epochs':
            self.target.update_epoch(int(epoch))
        else:
            self.target.on_epoch_begin(int(epoch))

    def step_begin(self, step: int) -> None:
        """Before a training step's forward pass; ``step`` is the index of the optimizer
        step it leads to (the trainer's ``global_step``).

        ``Pruning`` follows the caller's step index and ends the open step at the next
        ``on_step_begin``, so a repeated index (the micro-batches of one accumulated optimizer
        step) is begun once only: the step ends after its optimizer step, not before.
        """
        if self.kind == 'hooks':
            step = int(step)
            if step != self._begun:
                self._begun = step
                self.target.on_step_begin(local_step=step)

    def before_optimizer_step(self) -> None:
        """Gradients are ready; the optimizer has not stepped yet."""
        if self.kind == 'hooks':
            self.target.on_before_optimizer_step()

    def after_optimizer_step(self) -> None:
        """The optimizer stepped; the step ends and the masks are updated where the schedule
        says so. ``on_after_optimizer_step`` alone ends the step: calling ``on_step_end`` too
        would count a second step, because a step end without a begun step counts one."""
        if self.kind == 'hooks':
            self.target.on_after_optimizer_step()

    def epoch_end(self) -> None:
        """The epoch is over."""
        if self.kind == 'hooks':
            self.target.on_epoch_end()

    def train_end(self) -> None:
        """Training is over."""
        if self.kind == 'hooks':
            self.target.on_train_end()
