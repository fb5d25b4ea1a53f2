"""The launchers of Intel Neural Compressor and LPOT on top of the hooks API.

INC 1.x (``from neural_compressor import pruning``)::

    prune = pruning('conf.yaml')
    prune.model = model
    prune.train_func = train_func          # train_func(model) calls prune.on_*() hooks
    model = prune.fit()

LPOT (``from lpot.experimental import Pruning, common``)::

    prune = Pruning('conf.yaml')
    prune.model = common.Model(model)
    prune.train_dataloader = loader
    prune.pruning_func = train_func        # or none: the YAML 'train' section is run
    prune.eval_dataloader = loader
    prune.eval_func = eval_func
    model = prune()                        # a common.Model, as LPOT returned

Both run the user's training function between ``on_train_begin()`` and
``on_train_end()``, so a schedule that never reaches its target says so, then call
``eval_func(model)`` when one is set (its result is ``prune.score``). Setting an attribute
the launcher does not know is an error naming it (``prune.trian_func = f`` would otherwise
be silently ignored and nothing would train).
"""
from __future__ import annotations

import difflib
import logging
from typing import Any, Callable

from torch import nn

from . import common
from .training import Pruning as HookPruning
from .yaml_training import yaml_train_func

logger = logging.getLogger('prunus.pruning')

_PUBLIC = ('model', 'train_func', 'pruning_func', 'train_dataloader', 'eval_dataloader',
           'eval_func', 'score', 'config', 'steps_per_epoch', 'groups', 'step', 'epoch', 'local_step')


def _callable(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f'Pruning.{name} must be callable as {name}(model); got {type(value).__name__}.')
    return value


class Pruning(HookPruning):
    """The training-API ``Pruning`` with the INC / LPOT launcher attributes (see module doc).

    ``pruning(conf)`` is the same class under INC 1.x's lower-case name.

    Example::

        prune = Pruning(config)            # a WeightPruningConfig or an INC YAML path
        prune.model = model
        prune.train_func = train           # train(model) runs the training loop
        pruned = prune.fit()
    """

    def __init__(self, config: Any, model: Any = None, steps_per_epoch: int | None = None):
        object.__setattr__(self, '_given', None)
        self.train_func: Callable | None = None
        self.train_dataloader: Any = None
        self.eval_dataloader: Any = None
        self.eval_func: Callable | None = None
        self.score: Any = None
        super().__init__(config, model, steps_per_epoch)

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith('_') and name not in _PUBLIC:
            close = difflib.get_close_matches(name, _PUBLIC, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(_PUBLIC)}."
            raise AttributeError(f"Pruning has no attribute '{name}'{hint}")
        if name in ('train_func', 'eval_func'):
            value = _callable(name, value)
        super().__setattr__(name, value)

    @property
    def model(self) -> nn.Module | None:
        """The ``nn.Module`` being pruned (a ``common.Model`` given is unwrapped)."""
        return self._model

    @model.setter
    def model(self, model: Any) -> None:
        HookPruning.model.fset(self, model.model if isinstance(model, common.Model) else model)
        object.__setattr__(self, '_given', model)  # what fit() gives back

    @property
    def pruning_func(self) -> Callable | None:
        """LPOT's name for ``train_func``."""
        return self.train_func

    @pruning_func.setter
    def pruning_func(self, func: Callable | None) -> None:
        self.train_func = func

    def fit(self) -> Any:
        """Runs the training function with the pruning hooks active; returns the model
        (a ``common.Model`` if one was given)."""
        if self._model is None:
            raise RuntimeError('Pruning has no model; set prune.model first.')
        model = self._model
        func = self.train_func or yaml_train_func(self.config.train, self.train_dataloader, self)
        given = self._given if self._given is not None else model
        self.on_train_begin()
        func(model)
        self.on_train_end()
        if self.eval_func is not None:
            self.score = self.eval_func(given)
            logger.info('pruned model score: %s', self.score)
        return given

    def __call__(self) -> Any:
        """LPOT's entry point: the same as :meth:`fit`."""
        return self.fit()


pruning = Pruning
