"""What every automatic pruner shares: budget, base criterion, candidate evaluation.

An automatic pruner searches a per-layer *allocation* (layer name -> fraction of its
output channels, or weights for ``base_algo='level'``, to prune) that meets one budget:

* ``budget='sparsity'`` (the legacy-NNI meaning of ``config_list``'s ``'sparsity'``):
  the fraction of the selected layers' weights that the masks remove;
* ``budget='flops'`` (needs ``dummy_input``): the fraction of the whole model's FLOPs
  removed once a speedup drops the pruned channels (see :class:`CostModel`);
* ``budget='params'`` (needs ``dummy_input``): likewise, the fraction of the whole model's
  parameters (embeddings included) the speedup removes.

Under these two, layers whose channels are tied (a residual stream) are searched as one variable, a
  :class:`~prunus.compression.torch.auto.units.SearchUnit` keyed by its first member:
  its value prunes the same channels from every member.

The base criterion (``base_algo``, any registered one-shot pruner) scores channels once;
an allocation then becomes masks without recomputing scores. Candidates are evaluated
on copies of the model, inline or through any ``concurrent.futures.Executor`` (a
process pool, a ``dask.distributed`` client's ``get_executor()``); results are recorded
in ``experiment_data_dir`` in submission order, so a search is deterministic given its
seed whatever the executor.
"""
from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ...allocation import keep_mask, prune_count
from ...config import ConfigSpec
from ...fingerprint import callable_digest, config_digest
from ...history import SearchHistory
from ...registry import get_pruner
from ...search import Allocation, better, check_optimize_mode, refine_to_budget, scale_to_budget
from prunus.layers.torch import specs
from ..base import Pruner, Scores, to_numpy
from ..head_entries import HeadTarget, is_head_entry
from ..pruners import FilterPruner
from prunus.layers.torch.files import save_atomic
from prunus.layers.torch.masking import Masks, apply_masks
from ..forksafe import guard_forked_workers
from .candidates import score_candidate
from .cost import CostModel
from .fingerprint import model_digest
from .head_units import add_head_scores, capped, head_masks, in_model_order, masked_weights, search_heads
from .units import SearchUnit

logger = logging.getLogger('prunus.search')
guard_forked_workers()  # candidates may run in a default (forked) process pool

BUDGETS = ('sparsity', 'flops', 'params')
#: Budgets counted on the model the speedup leaves (through the cost model).
SPEEDUP_BUDGETS = ('flops', 'params')


def channel_masks(module: nn.Module, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weight and bias masks removing the output channels where ``keep`` is False."""
    masks = {'weight': specs.channel_mask_to_weight(module, keep, module.weight)}
    if getattr(module, 'bias', None) is not None:
        masks['bias'] = keep.to(device=module.bias.device, dtype=module.bias.dtype)
    return masks


def follow(keep: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """A follower's keep vector: ``keep[index[j]]``, and True where ``index[j] < 0``."""
    result = torch.ones(len(index), dtype=torch.bool)
    mine = index >= 0
    result[mine] = keep[index[mine]]
    return result


def check_base_algo(owner: str, base_algo: str) -> type:
    """The registered one-shot pruner class named ``base_algo``, or a clear error."""
    cls = get_pruner(base_algo)
    weighted = {t.__name__ for t in specs.FILTERED}
    how = ''
    if not getattr(cls, 'conformance', True):
        how = ' by a search'
    elif getattr(cls, 'schedules_itself', False):
        how = ' while training'
    if how or not weighted & set(specs.names(cls.supported_types)):
        raise ValueError(f"{owner}: base_algo must be a one-shot pruner of Conv/Linear layers; "
                         f"'{base_algo}' prunes {', '.join(specs.names(cls.supported_types))}{how}.")
    return cls


def allocation_key(counts: Mapping[str, int]) -> str:
    """A stable key for an allocation: pruned units per layer."""
    return ','.join(f'{name}={count}' for name, count in counts.items())


class AutoPruner(Pruner):
    """Base of the search-based pruners; subclasses implement :meth:`search`."""

    #: Excluded from the one-shot conformance suite; tests/auto covers these.
    conformance = False
    #: Whether a FLOPs-budgeted search treats tied layer groups as single variables;
    #: False where the search prunes layers one by one outside :meth:`masks_for`.
    search_tied_groups = True
    #: Whether attention heads can be search variables (``'granularity': 'head'``).
    searches_heads = True
    config_spec = ConfigSpec(targets=('sparsity',), extra=('granularity',))
    structured = True

    def select_targets(self, model: nn.Module, entries: list) -> None:
        """Channel entries select layers here; head entries are resolved in ``_setup``,
        once ``dummy_input`` is known (see :mod:`.head_units`)."""
        channel = [e for e in entries if not is_head_entry(e)]
        self.head_targets: list[HeadTarget] = []
        if any(not e.exclude for e in channel):
            super().select_targets(model, channel)
        else:
            self.selections, self.targets, self.entry_of = [], {}, {}

    def _setup(self, evaluator: Callable | None, base_algo: str, experiment_data_dir: str | os.PathLike,
               optimize_mode: str = 'maximize', *, seed: int = 0, executor: Executor | None = None,
               budget: str = 'sparsity', dummy_input: Any = None, max_sparsity_per_layer: float = 0.95,
               progress: bool = True, base_kwargs: Mapping[str, Any] | None = None) -> None:
        owner = type(self).__name__
        if evaluator is not None and not callable(evaluator):
            raise TypeError(f'{owner}: evaluator must be callable; got {type(evaluator).__name__}.')
        if budget not in BUDGETS:
            raise ValueError(f"{owner}: budget must be one of {BUDGETS}; got {budget!r}.")
        if budget in SPEEDUP_BUDGETS and dummy_input is None:
            raise ValueError(f"{owner}: budget='{budget}' needs dummy_input to count what the speedup removes.")
        if not 0 < max_sparsity_per_layer < 1:
            raise ValueError(f'{owner}: max_sparsity_per_layer must be in (0, 1); got {max_sparsity_per_layer}.')
        if executor is not None and not hasattr(executor, 'submit'):
            raise TypeError(f'{owner}: executor must be a concurrent.futures.Executor; got {type(executor).__name__}.')
        self.evaluator, self.maximize = evaluator, check_optimize_mode(owner, optimize_mode)
        self.base_algo, self.base_cls = base_algo, check_base_algo(owner, base_algo)
        self.base_kwargs = dict(base_kwargs or {})
        self.experiment_data_dir = Path(experiment_data_dir)
        self.seed, self.executor, self.progress = seed, executor, progress
        self.budget, self.dummy_input, self.max_sparsity = budget, dummy_input, max_sparsity_per_layer
        self.structured = bool(getattr(self.base_cls, 'structured', True))
        if budget in SPEEDUP_BUDGETS and not self.structured:
            raise ValueError(f"{owner}: budget='{budget}' needs a channel criterion as base_algo; "
                             f"'{base_algo}' prunes single weights, which a speedup cannot remove.")
        self._select_heads()
        self.target_sparsity = self._single_target()
        self._scores: Scores | None = None
        # The base criterion bound to the model: scores channels (and heads) and expands keeps.
        base_config = [{'sparsity': 0.0, 'op_names': sorted(self.targets)}] if self.targets else []
        if self.head_targets:
            base_config.append({'sparsity': 0.0, 'granularity': 'head',
                                'op_names': [t.group.name for t in self.head_targets]})
            if dummy_input is not None:
                self.base_kwargs.setdefault('dummy_input', dummy_input)
        self._base = self.base_cls(self.bound_model, base_config, **self.base_kwargs)
        self._cost: CostModel | None = None
        self.best_allocation: Allocation | None = None
        self.best_score: float | None = None
        # Taken before the search touches anything: a resume needs the same starting point.
        self.fingerprint = {'model': model_digest(self.bound_model), 'config': config_digest(self.config_list),
                            'evaluator': callable_digest(evaluator)}

    def _select_heads(self) -> None:
        """The attentions the head entries select become search variables."""
        self.head_targets = search_heads(self, self.searches_heads and issubclass(self.base_cls, FilterPruner))
        projections = {n for t in self.head_targets for n in t.projections}
        self.targets = {n: m for n, m in self.targets.items() if n not in projections}
        self.entry_of = {n: e for n, e in self.entry_of.items() if n not in projections}

    @property
    def head_units(self) -> dict[str, HeadTarget]:
        """Attentions searched by heads, by key (the attention module's name)."""
        return {t.group.name: t for t in self.head_targets}

    def _single_target(self) -> float:
        values = {e.index: e.get('sparsity') for e in self.entries if not e.exclude}
        if len(set(values.values())) > 1:
            listed = ', '.join(f'config_list[{i}] asks {v}' for i, v in values.items())
            raise ValueError(f'{type(self).__name__} searches one overall budget, but {listed}; '
                             "give every entry the same 'sparsity'.")
        if not self.targets and not self.head_targets:
            raise ValueError(f'{type(self).__name__}: config_list selects no prunable layer.')
        return float(next(iter(values.values()), 0.0))

    # -- scores, masks and budgets ----------------------------------------------------
    def base_scores(self, model: nn.Module | None = None) -> Scores:
        """Channel (or weight) scores of the base criterion on ``model`` (default: bound)."""
        if model is None and self._scores is not None:
            return self._scores
        base = self._base if model is None else self.base_cls(model, self._base.config_list, **self.base_kwargs)
        scores = add_head_scores(base.compute_scores(base.collect()), base, self.head_targets)
        if model is None:
            self._scores = scores
        return scores

    def units(self, name: str) -> int:
        """Prunable units of a layer: output channels, or weights when unstructured."""
        if name in self.tied:
            return self.tied[name].size
        scores = self.base_scores()
        return int(scores[name].numel())

    @property
    def tied(self) -> dict[str, SearchUnit]:
        """Tied layer groups searched as one variable (only under ``budget='flops'``,
        where an allocation holds one value per group, keyed by its first member)."""
        if self.budget not in SPEEDUP_BUDGETS or not self.search_tied_groups:
            return {}
        return self.cost.tied

    def members(self, name: str) -> list[str]:
        """The layers an allocation's value for ``name`` prunes."""
        if name in self.head_units:
            return self.head_units[name].group.members
        return list(self.tied[name].members) if name in self.tied else [name]

    def weights_of(self, name: str) -> int:
        """Weights of the layers an allocation's value for ``name`` prunes, on the
        producing side as for a channel layer (for an attention: its Q/K/V weights)."""
        if name in self.head_units:
            return masked_weights(self.bound_model, self.head_units[name], consumer=False)
        return sum(self.targets[n].weight.numel() for n in self.members(name))

    def pruned(self, name: str, sparsity: float) -> int:
        """Units of variable ``name`` that ``sparsity`` removes (an attention keeps a head)."""
        units = self.units(name)
        return prune_count(units, capped(units, sparsity) if name in self.head_units else sparsity)

    def counts(self, allocation: Mapping[str, float]) -> dict[str, int]:
        return {n: self.pruned(n, allocation.get(n, 0.0)) for n in [*self.targets, *self.head_units]}

    def masks_for(self, allocation: Mapping[str, float], scores: Scores | None = None) -> Masks:
        """Masks realizing ``allocation`` with the base criterion's ``scores`` (default:
        those of the bound model)."""
        scores = self.base_scores() if scores is None else scores
        masks: Masks = {}
        modules = dict(self.bound_model.named_modules())
        for name, sparsity in allocation.items():
            if sparsity <= 0 or name in self.head_units:
                continue
            if name in self.tied:
                masks.update(self._unit_masks(self.tied[name], scores, sparsity, modules))
                continue
            keep = torch.from_numpy(keep_mask(to_numpy(scores[name]), sparsity))
            masks[name] = self._base.expand_keep(name, keep)
            if self.structured:
                for follower, index in self.followers.get(name, {}).items():
                    masks[follower] = channel_masks(modules[follower], follow(keep, index))
        return head_masks(self.bound_model, self.head_targets, allocation, scores, masks)

    def _unit_masks(self, unit: SearchUnit, scores: Scores, sparsity: float,
                    modules: Mapping[str, nn.Module]) -> Masks:
        """Masks removing the same lowest-scored group channels from every member of
        ``unit`` and from its followers, so the speedup can drop them."""
        keep = unit.keep(scores, sparsity)
        masks: Masks = {n: self._base.expand_keep(n, follow(keep, unit.index[n])) for n in unit.members}
        masks.update({f: channel_masks(modules[f], follow(keep, i)) for f, i in unit.followers.items()})
        return masks

    @property
    def followers(self) -> dict[str, dict[str, torch.Tensor]]:
        """BatchNorm/depthwise layers tied to each searchable layer (needs dummy_input;
        without it only the searched layers are masked, as in legacy NNI)."""
        if self.dummy_input is None:
            return {}
        return self.cost.followers

    @property
    def cost(self) -> CostModel:
        if self._cost is None:
            dummy = self.dummy_input
            if dummy is None:
                raise ValueError(f'{type(self).__name__}: counting FLOPs needs dummy_input.')
            self._cost = CostModel(self.bound_model, dummy, list(self.targets),
                                   {k: t.group for k, t in self.head_units.items()})
        return self._cost

    def searchable(self) -> list[str]:
        """Layers the search may prune; under a FLOPs budget, only those whose channels a
        speedup can really remove (the rest would cost accuracy and save nothing)."""
        heads = list(self.head_units)
        if self.budget not in SPEEDUP_BUDGETS:
            return in_model_order(self.bound_model, [*self.targets, *heads])
        tied = self.tied
        useful = [n for n in self.targets if n in self.cost.followers or n in tied]
        if heads:
            return in_model_order(self.bound_model, [*useful, *heads])
        covered = {m for n in useful for m in self.members(n)}
        skipped = [n for n in self.targets if n not in covered]
        for key in useful:
            if key in tied:
                logger.info('%s: searching %s as one unit %r (tied channels)', type(self).__name__,
                            ', '.join(tied[key].members), key)
        if skipped:
            logger.info('%s: not searching %s (removing their channels frees no consumer)',
                        type(self).__name__, ', '.join(skipped))
        if not useful:
            raise ValueError(f'{type(self).__name__}: none of the selected layers can lose output channels '
                             '(a residual tie with unselected layers, grouped conv, shared module or model output); '
                             "select other layers or use budget='sparsity'.")
        return useful

    def fit_budget(self, raw: Mapping[str, float]) -> Allocation:
        """Scales ``raw`` onto the budget, then moves single channels to land nearest it."""
        scaled = scale_to_budget(raw, self.measure, self.target_sparsity, self.max_sparsity)
        units = {n: self.units(n) for n in scaled}
        fitted = refine_to_budget(scaled, units, self.measure, self.target_sparsity, self.max_sparsity)
        # an attention keeps a head whatever its value says; the value says so too
        return {n: capped(units[n], v) if n in self.head_units else v for n, v in fitted.items()}

    def weight_sparsity(self, allocation: Mapping[str, float]) -> float:
        """Fraction of the selected layers' weights the masks of ``allocation`` remove."""
        total = removed = 0.0
        for name in [*self.targets, *self.head_units]:
            weights = (self.targets[name].weight.numel() if name in self.targets
                       else masked_weights(self.bound_model, self.head_units[name]))
            total += weights
            removed += self.pruned(name, allocation.get(name, 0.0)) * weights / self.units(name)
        return removed / total

    def measure(self, allocation: Mapping[str, float]) -> float:
        """The budgeted fraction ``allocation`` removes (weights or FLOPs)."""
        if self.budget == 'flops':
            return self.cost.flops_reduction(allocation)
        if self.budget == 'params':
            return 1.0 - self.cost.params(allocation) / self.cost.total_params
        return self.weight_sparsity(allocation)

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, allocations: Sequence[Allocation], history: SearchHistory, *,
                 model: nn.Module | None = None, fine_tuner: Callable | None = None,
                 evaluator_args: Sequence[Any] = (), extra: Mapping[str, Any] | None = None,
                 keep_state: bool = False, scores: Scores | None = None) -> list[tuple[float, dict | None]]:
        """Scores allocations (through the executor when given); recorded trials are reused,
        except when ``keep_state`` asks for the fine-tuned weights of each candidate."""
        model = self.bound_model if model is None else model
        keys = [allocation_key(self.counts(a)) + (f"|{extra['round']}" if extra and 'round' in extra else '')
                for a in allocations]
        results: list[tuple[float, dict | None] | None] = []
        pending = {}
        for i, (alloc, key) in enumerate(zip(allocations, keys)):
            known = history.lookup(key)
            if known is not None and not (keep_state and fine_tuner is not None):
                results.append((known['score'], None))
                continue
            results.append(None)
            args = (model, self.masks_for(alloc, scores), self.evaluator, fine_tuner,
                    (self.seed + zlib.crc32(key.encode())) % 2 ** 31, tuple(evaluator_args), type(self).__name__)
            pending[i] = self.executor.submit(score_candidate, *args) if self.executor else args
        for i, job in pending.items():
            results[i] = job.result() if self.executor else score_candidate(*job)
            alloc = allocations[i]
            units = {n: self.members(n) for n in alloc if n in self.tied}
            history.record({'key': keys[i], 'score': results[i][0], 'budget': self.measure(alloc),
                            'allocation': {n: round(float(v), 6) for n, v in alloc.items()},
                            **({'units': units} if units else {}), **(extra or {})})
            logger.info('%s trial %d: score %.4f at %s %.4f', type(self).__name__, len(history.trials) - 1,
                        results[i][0], self.budget, self.measure(alloc))
        return results  # type: ignore[return-value]

    def progress_bar(self, total: int, desc: str) -> tqdm:
        return tqdm(total=total, desc=desc, disable=not self.progress, leave=False)

    def note_best(self, bar: tqdm, allocation: Allocation, score: float) -> None:
        if better(score, self.best_score, self.maximize):
            self.best_allocation, self.best_score = dict(allocation), score
        bar.set_postfix(best=f'{self.best_score:.4f}')

    # -- results ------------------------------------------------------------------------
    def best_config_list(self, allocation: Mapping[str, float]) -> list[dict[str, Any]]:
        """The allocation as a config_list a one-shot ``base_algo`` pruner reproduces (a
        tied unit's entry names all its members: ``dependency_aware=True`` prunes them alike)."""
        return [{'sparsity': round(float(capped(self.units(n), s)), 6), 'op_names': [n], 'granularity': 'head'}
                if n in self.head_units else {'sparsity': round(float(s), 6), 'op_names': self.members(n)}
                for n, s in allocation.items() if s > 0]

    def finish(self, history: SearchHistory, allocation: Allocation, score: float | None) -> nn.Module:
        """Attaches the best masks and writes best_config.json and best_masks.pth."""
        masks = self.masks_for(allocation)
        apply_masks(self.bound_model, masks)
        units = {n: self.members(n) for n in allocation if n in self.tied}
        history.save_best(self.best_config_list(allocation), score, budget=self.budget,
                          achieved=self.measure(allocation), target=self.target_sparsity,
                          **({'units': units} if units else {}))
        save_atomic(masks, self.experiment_data_dir / 'best_masks.pth')
        logger.info('%s: best score %s at %s %.4f (target %.4f)', type(self).__name__, score,
                    self.budget, self.measure(allocation), self.target_sparsity)
        return self.bound_model

    def search(self) -> tuple[Allocation, float | None]:
        raise NotImplementedError

    def calc_masks(self) -> Masks:
        allocation, _ = self.search()
        return self.masks_for(allocation)

    def settings(self) -> dict[str, Any]:
        """What determines the search path; a history is resumed only if these match."""
        return {'seed': self.seed, 'base_algo': self.base_algo, 'budget': self.budget,
                'target': self.target_sparsity, 'layers': sorted(self.targets),
                'max_sparsity_per_layer': self.max_sparsity, 'fingerprint': self.fingerprint}
