"""The training API: a ``Pruning`` object driven by hooks placed in the user's own loop.

Example (the hooks in a plain loop)::

    config = WeightPruningConfig([{'op_names': ['fc'], 'pattern': '2:4', 'target_sparsity': 0.5}],
                                 pruning_type='snip_momentum', start_step=10, end_step=200,
                                 pruning_frequency=10, sparsity_decay_type='cube')
    pruning = Pruning(config, model)
    pruning.on_train_begin()
    for epoch in range(epochs):
        pruning.on_epoch_begin(epoch)
        for step, (x, y) in enumerate(loader):
            pruning.on_step_begin(step)
            loss = criterion(model(x), y)
            loss.backward()
            pruning.on_before_optimizer_step()
            optimizer.step()
            pruning.on_after_optimizer_step()
            optimizer.zero_grad()
            pruning.on_step_end()
        pruning.on_epoch_end()
    pruning.on_train_end()

or, with :func:`prepare_pruning`, hooks attached to the optimizer so the loop is unchanged.

Steps are counted by the object itself: every ``on_step_end()`` completes one step, and
masks are recomputed at the end of each update step of each local entry's schedule, so
after step ``end_step`` every entry is exactly at its ``target_sparsity``. Masked
weights stay zero after every optimizer step. Under ``torch.distributed`` scores are
averaged over ranks and masks broadcast from rank 0, so all ranks hold identical masks.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

from torch import nn
from torch.optim import Optimizer

from ..pruning_config import WeightPruningConfig, normalize_settings
from ..pruning_yaml import config_from_mapping, load_pruning_yaml
from prunus.layers.torch.masking import get_masks
from .pruning_group import PruningGroup, select_modules, steps_schedule


def _as_config(config: Any) -> WeightPruningConfig:
    if isinstance(config, WeightPruningConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_pruning_yaml(config)
    if isinstance(config, Mapping):
        return config_from_mapping(config)
    raise TypeError('Pruning needs a WeightPruningConfig, a YAML path or a mapping; got '
                    f'{type(config).__name__}.')


class Pruning:
    """Prunes a model while it trains, as one or more local pruners configure.

    Args:
        config: a :class:`WeightPruningConfig`, a YAML file path, or a parsed mapping.
        model: the model (may also be set later through ``pruning.model = model``).
        steps_per_epoch: needed only when a schedule is given in epochs.

    Attributes:
        groups: the bound local pruners, one per config entry.
        step: the number of completed steps.

    Example::

        pruning = Pruning(WeightPruningConfig(target_sparsity=0.8, start_step=0, end_step=100), model)
        pruning.on_train_begin()
        for step, (x, y) in enumerate(loader):
            pruning.on_step_begin(step)
            loss_fn(model(x), y).backward()
            pruning.on_before_optimizer_step()
            optimizer.step()
            pruning.on_after_optimizer_step()
            pruning.on_step_end()
        pruning.on_train_end()
    """

    def __init__(self, config: Any, model: nn.Module | None = None, steps_per_epoch: int | None = None):
        self.config = _as_config(config)
        if steps_per_epoch is not None and (not isinstance(steps_per_epoch, int) or steps_per_epoch < 1):
            raise ValueError(f'steps_per_epoch must be an integer >= 1; got {steps_per_epoch!r}.')
        self.steps_per_epoch = steps_per_epoch
        self.groups: list[PruningGroup] = []
        self.step = 0
        self.epoch = 0
        self.local_step = 0
        self._model: nn.Module | None = None
        self._handles: list[Any] = []
        if model is not None:
            self.model = model

    @property
    def model(self) -> nn.Module | None:
        """The bound model; setting it binds the config's entries to its layers."""
        return self._model

    @model.setter
    def model(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f'Pruning.model must be a torch.nn.Module; got {type(model).__name__}.')
        self.groups = self._bind(model)
        self._model = model

    def _bind(self, model: nn.Module) -> list[PruningGroup]:
        """Resolves entries to layers; the last entry that selects a layer wins."""
        settings = self.config.resolved()
        owner: dict[str, int] = {}
        for index, entry in enumerate(settings):
            names = select_modules(model, entry, f'pruners[{index}]')
            if not names:
                raise ValueError(f'pruners[{index}] selects no layer; check its op_names, '
                                 'excluded_op_names and pruning_op_types.')
            owner.update({name: index for name in names})
        groups = []
        for index, entry in enumerate(settings):
            names = [n for n, i in owner.items() if i == index]
            if names:
                where = f'pruners[{index}]'
                schedule = steps_schedule(entry, self.steps_per_epoch, where)
                groups.append(PruningGroup(model, names, entry, schedule, where))
        return groups

    def _bound(self) -> list[PruningGroup]:
        if self._model is None:
            raise RuntimeError('Pruning has no model; pass model= or set pruning.model first.')
        return self.groups

    # -- hooks ------------------------------------------------------------------------
    def on_train_begin(self) -> None:
        """Fixes pattern_lock masks; call once before training."""
        for group in self._bound():
            if group.locked:
                group.lock_current_zeros()

    def on_epoch_begin(self, epoch: int) -> None:
        """Record the epoch that starts (schedules count steps)."""
        self.epoch = epoch

    def on_step_begin(self, step: int = 0, local_step: int | None = None) -> None:
        """Records the caller's step index (the schedule counts steps itself)."""
        self.local_step = step if local_step is None else local_step

    def on_before_optimizer_step(self) -> None:
        """Reads gradients for the criteria and adds group-lasso gradients."""
        for group in self._bound():
            group.before_optimizer_step()

    def on_after_optimizer_step(self) -> None:
        """Nothing to do: masked weights are re-zeroed by every optimizer step already."""
        self._bound()

    def on_step_end(self) -> None:
        """Completes a step; updates the masks of every entry whose schedule says so."""
        for group in self._bound():
            group.maybe_update(self.step, type(self).__name__)
        self.step += 1

    def on_epoch_end(self) -> None:
        """Close an epoch; checks that a model is bound."""
        self._bound()

    def on_train_end(self) -> None:
        """Detaches optimizer hooks installed by :func:`prepare_pruning`."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # Names used by older releases.
    on_batch_begin = on_step_begin
    on_batch_end = on_step_end

    def update_items_for_all_pruners(self, **settings: Any) -> None:
        """Overrides settings of every local entry (e.g. start_step/end_step) and rebinds."""
        overrides = normalize_settings(settings, 'update_items_for_all_pruners')
        self.config.pruning_configs = [{**local, **overrides} for local in self.config.pruning_configs]
        self.config.resolved()
        if self._model is not None:
            self.model = self._model

    def get_masks(self):
        """``{module_name: {'weight': mask}}`` as attached to the model."""
        self._bound()
        return get_masks(self._model)

    def current_sparsity(self) -> dict[str, float]:
        """The target sparsity of each entry's last update, by entry."""
        return {group.where: group.current_sparsity for group in self.groups}

    def attach(self, optimizer: Optimizer) -> None:
        """Calls the optimizer-step hooks (and ``on_step_end``) from ``optimizer.step()``."""
        self._handles.append(optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.on_before_optimizer_step()))

        def after(opt, args, kwargs):
            self.on_after_optimizer_step()
            self.on_step_end()
        self._handles.append(optimizer.register_step_post_hook(after))


def prepare_pruning(model: nn.Module, config: Any, optimizer: Optimizer | None = None,
                    steps_per_epoch: int | None = None) -> Pruning:
    """Binds ``config`` to ``model`` and starts training-time pruning.

    With ``optimizer``, the step hooks run from ``optimizer.step()`` itself, so the user's
    loop needs no change (one optimizer step = one schedule step); call
    ``pruning.on_train_end()`` to detach them. Without it, call the hooks yourself.

    Args:
        model: the model to prune.
        config: a :class:`WeightPruningConfig`, a YAML path or a mapping.
        optimizer: the training optimizer, to run the hooks from its ``step()``.
        steps_per_epoch: needed only for schedules given in epochs.

    Returns:
        The started :class:`Pruning`.

    Example::

        pruning = prepare_pruning(model, config, optimizer)
        train(model, optimizer)          # your loop, unchanged
        pruning.on_train_end()
    """
    pruning = Pruning(config, model, steps_per_epoch)
    pruning.on_train_begin()
    if optimizer is not None:
        pruning.attach(optimizer)
    return pruning
