"""One local pruner of the training API bound to its layers: which layers, which pattern,
criterion and schedule, and how its masks are computed at an update."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..allocation import global_keep_masks, keep_mask
from ..patterns import Pattern, parse_pattern
from ..pruning_config import DEFAULT_REG_COEFF
from ..schedules import StepSchedule
from ..selection import LayerRef, select_by_settings
from .criteria import CRITERIA, Criterion, add_group_lasso_grad, from_matrix, matrix_view
from .distributed import average_scores, broadcast_masks
from prunus.layers.torch import specs
from prunus.layers.torch.masking import Masks, apply_masks

#: Layer types the training API prunes; ``pruning_op_types`` entries match by prefix.
PRUNABLE = specs.PATTERNED


def select_modules(model: nn.Module, settings: dict[str, Any], where: str) -> list[str]:
    """Names of the prunable modules ``settings`` selects (see
    :func:`prunus.compression.selection.select_by_settings`)."""
    layers = [LayerRef(n, type(m).__name__) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]
    return select_by_settings(settings, layers, prunable_types=specs.names(PRUNABLE), where=where)


def steps_schedule(settings: dict[str, Any], steps_per_epoch: int | None, where: str) -> StepSchedule:
    """The entry's schedule in steps; epoch settings need ``steps_per_epoch``."""
    if 'start_epoch' in settings:
        if steps_per_epoch is None:
            raise ValueError(f"{where} schedules in epochs ('start_epoch'/'end_epoch'); pass "
                             'steps_per_epoch= to Pruning so epochs can be turned into steps.')
        start, end = settings['start_epoch'] * steps_per_epoch, settings['end_epoch'] * steps_per_epoch
        frequency = max(1, round(settings.get('update_frequency', 1) * steps_per_epoch))
    else:
        start, end, frequency = settings['start_step'], settings['end_step'], settings['pruning_frequency']
    return StepSchedule(start, end, frequency, settings['target_sparsity'], settings['initial_sparsity'],
                        settings['sparsity_decay_type'])


class PruningGroup:
    """The layers of one local entry, with its pattern, criterion and schedule."""

    def __init__(self, model: nn.Module, names: list[str], settings: dict[str, Any],
                 schedule: StepSchedule, where: str):
        modules = dict(model.named_modules())
        self.model, self.where, self.settings, self.schedule = model, where, settings, schedule
        self.modules = {n: modules[n] for n in names}
        self.pattern: Pattern = parse_pattern(settings['pattern'])
        for name, module in self.modules.items():
            self.pattern.check(tuple(matrix_view(module.weight).shape), name)
        self.criterion: Criterion = CRITERIA[settings['pruning_type']](self.modules, settings['momentum'])
        self.locked = settings['pruning_type'] == 'pattern_lock'
        coeff = settings['reg_coeff']
        self.reg_coeff = (DEFAULT_REG_COEFF if coeff is None else coeff) if self._regularized() else 0.0
        self.current_sparsity = 0.0

    def _regularized(self) -> bool:
        return settings_reg(self.settings) == 'group_lasso'

    def lock_current_zeros(self) -> None:
        """pattern_lock: the zeros the weights have now become fixed masks."""
        apply_masks(self.model, {n: {'weight': (m.weight.detach() != 0).to(m.weight.dtype)}
                                 for n, m in self.modules.items()})

    def before_optimizer_step(self) -> None:
        if self.locked:
            return
        for module in self.modules.values():
            add_group_lasso_grad(module, self.pattern, self.reg_coeff)
        self.criterion.accumulate()

    def maybe_update(self, step: int, owner: str) -> bool:
        """Recomputes masks if ``step`` is an update step of the schedule."""
        if self.locked or not self.schedule.is_update_step(step):
            return False
        self.update(self.schedule.sparsity_at(step), owner)
        return True

    def update(self, sparsity: float, owner: str) -> None:
        """Masks of exactly ``sparsity`` (counted in the pattern's items) from current scores."""
        scores = average_scores(self.criterion.scores(owner))
        matrices = {n: s.cpu().numpy() for n, s in scores.items()}
        keeps = self.item_keeps(matrices, sparsity)
        masks: Masks = {}
        for name, module in self.modules.items():
            keep = torch.from_numpy(self.pattern.expand(matrices[name], keeps[name]))
            weight = module.weight
            mask = from_matrix(keep.to(device=weight.device, dtype=weight.dtype), weight.shape)
            masks[name] = {'weight': mask.contiguous()}
        apply_masks(self.model, broadcast_masks(masks))
        self.criterion.after_update()
        self.current_sparsity = sparsity

    def item_keeps(self, matrices: dict[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
        items = {n: self.pattern.reduce(m) for n, m in matrices.items()}
        item_sparsity = self.pattern.item_sparsity(sparsity)
        # The cap is on element sparsity, like the target; N:M items lose only N/M of theirs.
        cap = self.pattern.item_sparsity(self.settings['max_sparsity_ratio_per_op'])
        if self.settings['pruning_scope'] == 'global':
            return global_keep_masks(items, item_sparsity, cap, self.where)
        return {n: keep_mask(s, min(item_sparsity, cap)) for n, s in items.items()}


def settings_reg(settings: dict[str, Any]) -> str | None:
    """'group_lasso' when the entry regularizes (pruning_type or reg_type says so)."""
    if settings['pruning_type'] == 'group_lasso':
        return 'group_lasso'
    return settings['reg_type']
