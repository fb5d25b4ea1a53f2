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

Steps follow the caller: ``on_step_begin(local_step)`` (or ``step``) gives the step index
(an index that restarts each epoch, as in ``enumerate(loader)``, keeps counting across
epochs); without it every step begun or ended counts one. A step's updates happen when it
ends (``on_after_optimizer_step``, ``on_step_end`` or the next ``on_step_begin``, whichever
comes first), and steps skipped by the caller are caught up with one update, so after
step ``end_step`` every entry is exactly at its ``target_sparsity`` (INC's grid: updates at
``start_step + k * frequency``, the last one at the target). Entries scheduled in
epochs without ``steps_per_epoch`` are updated in ``on_epoch_begin(epoch)``, as LPOT did.
Entries whose layers overlap each prune them, as in Intel Neural Compressor: a layer's mask
is the product of its entries' masks (a warning names the overlap). Masked weights stay
zero after every optimizer step. Under ``torch.distributed`` scores are averaged over ranks
and masks broadcast from rank 0, so all ranks hold identical masks.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Mapping

from torch import nn
from torch.optim import Optimizer

from ..pruning_config import POST_TRAINING_TYPES, WeightPruningConfig, normalize_settings
from ..pruning_yaml import config_from_mapping, load_pruning_yaml
from ..schedules import EpochSchedule, StepSchedule
from prunus.layers.torch.masking import Masks, apply_masks, get_masks
from .post_training_api import is_post_training, post_training_prune
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
        steps_per_epoch: turns epoch schedules into step schedules; without it they are
            followed at ``on_epoch_begin``.

    Attributes:
        groups: the bound local pruners, one per config entry that selects a layer.
        step: the current step index.

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
        self._closed = -1          # last step whose updates ran
        self._open = False         # a step has begun and not ended
        self._offset = 0           # added to a caller's step index that restarts each epoch
        self._last_local: int | None = None
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
        """Each entry selects its layers on its own; overlaps are pruned by every entry."""
        settings = self.config.resolved()
        for index, entry in enumerate(settings):
            if entry['pruning_type'] in POST_TRAINING_TYPES:
                raise ValueError(f"pruners[{index}]['pruning_type'] is '{entry['pruning_type']}', which prunes "
                                 'after training from calibration data: call prepare_pruning(model, config, '
                                 'dataloader=...) instead of Pruning.')
        selected = []
        for index, entry in enumerate(settings):
            names = select_modules(model, entry, f'pruners[{index}]')
            if not names:
                raise ValueError(f'pruners[{index}] selects no layer; check its op_names, '
                                 'excluded_op_names and pruning_op_types.')
            selected.append(names)
        warn_overlaps(selected)
        groups = []
        for index, (entry, names) in enumerate(zip(settings, selected)):
            where = f'pruners[{index}]'
            schedule = steps_schedule(entry, self.steps_per_epoch, where)
            group = PruningGroup(model, names, entry, schedule, where)
            if group.modules:
                groups.append(group)
        return groups

    def _bound(self) -> list[PruningGroup]:
        if self._model is None:
            raise RuntimeError('Pruning has no model; pass model= or set pruning.model first.')
        return self.groups

    def _attach(self, updated: list[PruningGroup]) -> None:
        """Attaches, for every layer an update touched, the product of its entries' masks."""
        touched = {name for group in updated for name in group.masks}
        combined: Masks = {}
        for group in self.groups:
            for name, masks in group.masks.items():
                if name in touched:
                    mask = masks['weight']
                    combined[name] = {'weight': combined[name]['weight'] * mask if name in combined else mask}
        if combined:
            apply_masks(self._model, combined)

    def _close_step(self) -> None:
        """Runs the updates due from the last closed step up to the current one."""
        groups = self._bound()
        if self.step <= self._closed:
            return
        updated = []
        for group in groups:
            if isinstance(group.schedule, StepSchedule):
                point = group.due(self._closed + 1, self.step)
                if point is not None:
                    group.update(group.schedule.sparsity_at(point), type(self).__name__)
                    updated.append(group)
        self._attach(updated)
        self._closed, self._open = self.step, False

    # -- hooks ------------------------------------------------------------------------
    def on_train_begin(self, dataloader: Any = None) -> None:
        """Fixes pattern_lock masks; call once before training."""
        locked = [g for g in self._bound() if g.locked]
        for group in locked:
            group.lock_current_zeros()
        self._attach(locked)

    def on_epoch_begin(self, epoch: int) -> None:
        """Starts an epoch; entries scheduled in epochs update their masks here."""
        self.epoch = epoch
        updated = []
        for group in self._bound():
            if isinstance(group.schedule, EpochSchedule) and group.due(epoch, epoch) is not None:
                group.update(group.schedule.sparsity_at(epoch), type(self).__name__)
                updated.append(group)
        self._attach(updated)

    def on_step_begin(self, step: int | None = None, local_step: int | None = None) -> None:
        """Begins a step; ``local_step`` (or ``step``) is the caller's step index."""
        given = local_step if local_step is not None else step
        if self._open:
            self._close_step()
        if given is None:
            step = self._closed + 1
        else:
            if self._last_local is not None and given < self._last_local:
                self._offset = self._closed + 1 - given  # the index restarted: keep counting
            self._last_local = given
            self.local_step = given
            step = given + self._offset
        if step - 1 > self._closed:  # steps the caller skipped are over: their updates are due
            self.step = step - 1
            self._close_step()
        self.step, self._open = step, True

    def on_before_optimizer_step(self) -> None:
        """Reads gradients for the criteria and adds group-lasso gradients."""
        for group in self._bound():
            group.before_optimizer_step()

    def on_after_optimizer_step(self) -> None:
        """Ends the step (masked weights are re-zeroed by the optimizer step already)."""
        self._end_step()

    def on_step_end(self) -> None:
        """Ends the step; updates the masks of every entry whose schedule says so."""
        self._end_step()

    def _end_step(self) -> None:
        for group in self._bound():
            group.restore_weights()
        if not self._open:  # no on_step_begin: each step end counts one step
            self.step = self._closed + 1
        self._close_step()

    def on_epoch_end(self) -> None:
        """Close an epoch; checks that a model is bound."""
        self._bound()
        if self._open:
            self._close_step()

    def on_train_end(self) -> None:
        """Ends training: detaches optimizer hooks and warns of entries short of their target."""
        if self._model is not None and self._open:
            self._close_step()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for group in self.groups:
            if not group.locked and group.current_sparsity < group.schedule.final:
                where = f'epoch {self.epoch}' if isinstance(group.schedule, EpochSchedule) else f'step {self.step}'
                warnings.warn(f'{group.where}: training ended at {where} with sparsity '
                              f'{group.current_sparsity:g}, short of its target {group.schedule.final:g} '
                              f'(schedule {group.schedule.start} -> {group.schedule.end}; '
                              f'{group.updates} mask update(s) ran).', UserWarning, stacklevel=2)

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
        """Calls the optimizer-step hooks (and ends the step) from ``optimizer.step()``."""
        self._handles.append(optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.on_before_optimizer_step()))
        self._handles.append(optimizer.register_step_post_hook(
            lambda opt, args, kwargs: self.on_after_optimizer_step()))


def warn_overlaps(selected: list[list[str]]) -> None:
    """Warns where entries select the same layers (every one of them prunes those)."""
    for later in range(len(selected)):
        for earlier in range(later):
            shared = [n for n in selected[later] if n in set(selected[earlier])]
            if shared:
                warnings.warn(f"pruners[{earlier}] and pruners[{later}] both select "
                              f"{', '.join(repr(n) for n in shared[:8])}{' ...' if len(shared) > 8 else ''}"
                              f' ({len(shared)} layer(s)); as in Intel Neural Compressor both prune them '
                              "(the layer's mask is the product of the two).", UserWarning, stacklevel=4)


def prepare_pruning(model: nn.Module, config: Any, optimizer: Optimizer | None = None,
                    steps_per_epoch: int | None = None, *, dataloader: Any = None,
                    loss_func: Any = None, device: Any = None) -> Any:
    """Binds ``config`` to ``model`` and starts training-time pruning.

    With ``optimizer``, the step hooks run from ``optimizer.step()`` itself, so the user's
    loop needs no change (one optimizer step = one schedule step); call
    ``pruning.on_train_end()`` to detach them. Without it, call the hooks yourself.

    A config of post-training types (``'sparse_gpt'``, ``'wanda'``) prunes the model right
    away from ``dataloader`` (on ``device``) and returns a
    :class:`~prunus.compression.torch.post_training_api.PostTrainingPruning`, as INC did;
    ``loss_func`` is accepted for INC's signature and not needed.

    Args:
        model: the model to prune.
        config: a :class:`WeightPruningConfig`, a YAML path or a mapping.
        optimizer: the training optimizer, to run the hooks from its ``step()``.
        steps_per_epoch: needed only for schedules given in epochs.
        dataloader: calibration batches, for post-training types.
        loss_func: accepted for INC's signature; not used.
        device: where post-training pruning runs.

    Returns:
        The started :class:`Pruning`, or for post-training types the finished
        :class:`~prunus.compression.torch.post_training_api.PostTrainingPruning`.

    Example::

        pruning = prepare_pruning(model, config, optimizer)
        train(model, optimizer)          # your loop, unchanged
        pruning.on_train_end()
    """
    config = _as_config(config)
    if is_post_training(config):
        return post_training_prune(model, config, dataloader, device=device)
    pruning = Pruning(config, model, steps_per_epoch)
    pruning.on_train_begin()
    if optimizer is not None:
        pruning.attach(optimizer)
    return pruning
