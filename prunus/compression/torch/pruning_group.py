"""One local pruner of the training API bound to its layers: which layers, which pattern,
criterion and schedule, and how its masks are computed at an update."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ..allocation import global_keep_masks, keep_mask
from ..patterns import Pattern, parse_pattern
from ..pruning_config import DEFAULT_REG_COEFF
from ..schedules import EpochSchedule, StepSchedule
from ..selection import LayerRef, select_by_settings
from .criteria import CRITERIA, Criterion, add_group_lasso_grad, from_matrix, matrix_view
from .distributed import average_scores, broadcast_masks
from .fisher_masks import RetrainFree, is_channel_pattern
from prunus.layers.torch import specs
from prunus.layers.torch.masking import Masks, reapply_masks

#: The training API's criteria by ``pruning_type``.
TRAINING_CRITERIA: dict[str, type[Criterion]] = {**CRITERIA, 'retrain_free': RetrainFree}

#: Layer types the training API prunes; ``pruning_op_types`` entries match by prefix.
PRUNABLE = specs.PATTERNED


def select_modules(model: nn.Module, settings: dict[str, Any], where: str) -> list[str]:
    """Names of the prunable modules ``settings`` selects (see
    :func:`prunus.compression.selection.select_by_settings`)."""
    layers = [LayerRef(n, type(m).__name__) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    return select_by_settings(settings, layers, prunable_types=specs.names(PRUNABLE), where=where)


def steps_schedule(settings: dict[str, Any], steps_per_epoch: int | None,
                   where: str) -> StepSchedule | EpochSchedule:
    """The entry's schedule in steps; an epoch schedule without ``steps_per_epoch`` is
    followed epoch by epoch, as LPOT did, through ``on_epoch_begin(epoch)``."""
    if 'start_epoch' in settings:
        if steps_per_epoch is None:
            return EpochSchedule(settings['start_epoch'], settings['end_epoch'],
                                 settings.get('update_frequency', 1), settings['target_sparsity'],
                                 settings['initial_sparsity'], settings['sparsity_decay_type'])
        start, end = settings['start_epoch'] * steps_per_epoch, settings['end_epoch'] * steps_per_epoch
        frequency = max(1, round(settings.get('update_frequency', 1) * steps_per_epoch))
    else:
        start, end, frequency = settings['start_step'], settings['end_step'], settings['pruning_frequency']
    return StepSchedule(start, end, frequency, settings['target_sparsity'], settings['initial_sparsity'],
                        settings['sparsity_decay_type'])


class PruningGroup:
    """The layers of one local entry, with its pattern, criterion and schedule."""

    def __init__(self, model: nn.Module, names: list[str], settings: dict[str, Any],
                 schedule: StepSchedule | EpochSchedule, where: str):
        modules = dict(model.named_modules())
        self.model, self.where, self.settings, self.schedule = model, where, settings, schedule
        self.pattern: Pattern = parse_pattern(settings['pattern'])
        self.modules = {n: modules[n] for n in names}
        self.skipped = self._skip_unfit()
        kind = settings['pruning_type']
        if kind == 'retrain_free' and not is_channel_pattern(self.pattern):
            raise ValueError(f"{where}['pattern'] is '{self.pattern.name}'; pruning_type 'retrain_free' "
                             "prunes whole channels: use 'channelx1' (input channels), '1xchannel' "
                             "(output channels) or 'channelxN' / 'Nxchannel'.")
        self.criterion: Criterion = TRAINING_CRITERIA[kind](self.modules, settings['momentum'])
        self.criterion.use_pattern(self.pattern)
        # retrain_free scores fixed weights: they are put back after every optimizer step
        self.fixed = {n: {k: p.detach().clone() for k, p in m.named_parameters(recurse=False)}
                      for n, m in self.modules.items()} if self.criterion.fixes_weights else {}
        self.masks: Masks = {}
        self.updates = 0
        self._warned: set[str] = set()
        self.locked = settings['pruning_type'] == 'pattern_lock'
        coeff = settings['reg_coeff']
        self.reg_coeff = (DEFAULT_REG_COEFF if coeff is None else coeff) if self._regularized() else 0.0
        self.current_sparsity = 0.0

    def _skip_unfit(self) -> list[str]:
        """Drops the layers the pattern cannot tile (INC skips them too), with a warning
        naming every one, so a default ``4x1`` never fails on a 10-class head."""
        unfit = []
        for name, module in list(self.modules.items()):
            shape = tuple(matrix_view(module.weight).shape)
            try:
                self.pattern.check(shape, name)
            except ValueError:
                unfit.append(f"'{name}' ({shape[0]}x{shape[1]})")
                del self.modules[name]
        if unfit:
            warnings.warn(f"{self.where}: pattern '{self.pattern.name}' does not fit layer(s) "
                          f"{', '.join(unfit)}; they are skipped and stay dense.", UserWarning, stacklevel=4)
        return unfit

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f'{self.where}: {message}', UserWarning, stacklevel=4)

    def _regularized(self) -> bool:
        return settings_reg(self.settings) == 'group_lasso'

    def lock_current_zeros(self) -> Masks:
        """pattern_lock: the zeros the weights have now become fixed masks."""
        self.masks = {n: {'weight': (m.weight.detach() != 0).to(m.weight.dtype)}
                      for n, m in self.modules.items()}
        return self.masks

    def before_optimizer_step(self) -> None:
        if self.locked:
            return
        for module in self.modules.values():
            add_group_lasso_grad(module, self.pattern, self.reg_coeff)
        self.criterion.accumulate()

    @torch.no_grad()
    def restore_weights(self) -> None:
        """Puts back the fixed weights of a retrain-free entry (masked entries stay zero)."""
        for name, params in self.fixed.items():
            module = self.modules[name]
            for key, value in params.items():
                getattr(module, key).copy_(value)
            reapply_masks(module)

    def due(self, first: int, last: int) -> int | None:
        """The latest update point of the schedule in ``[first, last]``, if any: steps the
        caller skipped are caught up with one update at the latest of them."""
        if self.locked or not self.modules or last < first:
            return None
        check = getattr(self.schedule, 'is_update_step', None) or self.schedule.is_update_epoch
        for point in range(last, first - 1, -1):
            if check(point):
                return point
        return None

    def update(self, sparsity: float, owner: str) -> Masks:
        """Masks of exactly ``sparsity`` (counted in the pattern's items) from current
        scores; returned, the caller attaches them (combined with overlapping entries')."""
        scores = average_scores(self.criterion.scores(owner))
        matrices = {n: s.cpu().numpy() for n, s in scores.items()}
        keeps = self.criterion.refine_keeps(self.item_keeps(matrices, sparsity), owner)
        masks: Masks = {}
        for name, module in self.modules.items():
            keep = torch.from_numpy(self.pattern.expand(matrices[name], keeps[name]))
            weight = module.weight
            mask = from_matrix(keep.to(device=weight.device, dtype=weight.dtype), weight.shape)
            masks[name] = {'weight': mask.contiguous()}
        self.masks = broadcast_masks(masks)
        self.criterion.after_update()
        self.current_sparsity = sparsity
        self.updates += 1
        return self.masks

    def item_keeps(self, matrices: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
        items = {n: self.pattern.reduce(m) for n, m in matrices.items()}
        item_sparsity = self.pattern.item_sparsity(sparsity)
        reach = self.pattern.item_density_loss
        if sparsity > reach:
            self.warn_once('nm', f"sparsity {sparsity:g} is above what pattern '{self.pattern.name}' "
                                 f'can reach; capped at {reach:g}.')
        # The cap is on element sparsity, like the target; N:M items lose only N/M of theirs.
        limit = self.settings['max_sparsity_ratio_per_op']
        cap = self.pattern.item_sparsity(limit)
        if self.settings['pruning_scope'] == 'global':
            return global_keep_masks(items, item_sparsity, cap, self.where)
        if item_sparsity > cap:
            self.warn_once('cap', f'sparsity {sparsity:g} is above max_sparsity_ratio_per_layer '
                                  f'{limit:g}; each layer is capped at {limit:g}.')
        return {n: keep_mask(s, min(item_sparsity, cap)) for n, s in items.items()}


def settings_reg(settings: dict[str, Any]) -> str | None:
    """'group_lasso' when the entry regularizes (pruning_type or reg_type says so)."""
    if settings['pruning_type'] == 'group_lasso':
        return 'group_lasso'
    return settings['reg_type']
