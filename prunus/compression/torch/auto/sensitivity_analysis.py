"""Per-layer sensitivity: the score of the model with one layer pruned at a time.

Example::

    analysis = SensitivityAnalysis(model, val_func=evaluate, sparsities=[0.25, 0.5, 0.75])
    table = analysis.analysis(val_args=[model])   # {layer: {sparsity: score}}
    print(analysis.table())
    analysis.plot('sensitivity.png')              # score vs sparsity, one line per layer
    analysis.export('sensitivity.csv')
"""
from __future__ import annotations

import copy
import csv
import os
from concurrent.futures import Executor
from typing import Any, Callable, Mapping, Sequence

from torch import nn
from tqdm.auto import tqdm

from prunus._optional import require

from ...registry import get_pruner
from prunus.layers.torch.masking import apply_masks
from ..forksafe import guard_forked_workers
from .base import check_base_algo
from .candidates import as_score

guard_forked_workers()  # sweeps may run in a default (forked) process pool

EARLY_STOP_MODES = (None, 'minimize', 'maximize', 'dropped', 'raised')


def substitute(args: Sequence[Any], kwargs: Mapping[str, Any], model: nn.Module,
                candidate: nn.Module) -> tuple[list[Any], dict[str, Any]]:
    """``args``/``kwargs`` with ``model`` replaced by ``candidate`` (appended if absent)."""
    swapped = [candidate if a is model else a for a in args]
    swapped_kw = {k: candidate if v is model else v for k, v in kwargs.items()}
    if not any(a is model for a in args) and not any(v is model for v in kwargs.values()):
        swapped.append(candidate)
    return swapped, swapped_kw


def _stops(mode: str | None, value: float | None, baseline: float, score: float) -> bool:
    if mode is None:
        return False
    return {'minimize': score < value, 'maximize': score > value,
            'dropped': baseline - score > value, 'raised': score - baseline > value}[mode]


def sweep_layer(model: nn.Module, layer: str, sparsities: Sequence[float], prune_type: str,
                val_func: Callable, args: Sequence[Any], kwargs: Mapping[str, Any], baseline: float,
                early_stop: tuple[str | None, float | None] = (None, None),
                base_kwargs: Mapping[str, Any] | None = None, head: bool = False) -> dict[float, float]:
    """Scores of ``model`` with ``layer`` alone pruned at each sparsity (module-level, so
    executors can pickle it); stops early when ``early_stop`` says so. With ``head``,
    ``layer`` is an attention and the sparsity the fraction of its heads removed."""
    found: dict[float, float] = {}
    cls = get_pruner(prune_type)
    extra = {'granularity': 'head'} if head else {}
    for sparsity in sparsities:
        candidate = copy.deepcopy(model)
        masks = cls(candidate, [{'sparsity': sparsity, 'op_names': [layer], **extra}],
                    **(base_kwargs or {})).calc_masks()
        apply_masks(candidate, masks)
        call_args, call_kwargs = substitute(args, kwargs, model, candidate)
        found[float(sparsity)] = as_score(val_func(*call_args, **call_kwargs), 'SensitivityAnalysis')
        if _stops(*early_stop, baseline, found[float(sparsity)]):
            break
    return found


class SensitivityAnalysis:
    """How much the score drops when each layer alone is pruned to each sparsity.

    Args:
        model: the model (left unchanged: every trial prunes a copy).
        val_func: the scoring function; it is called with ``val_args``/``val_kwargs`` in
            which the model is replaced by the pruned copy (or with the copy alone).
        sparsities: the sparsities to try (default 0.1, 0.2, ..., 0.9).
        prune_type: the registered one-shot criterion ('l1', 'l2', 'fpgm', 'level', ...).
        early_stop_mode: None, 'minimize'/'maximize' (stop a layer once the score falls
            below/rises above ``early_stop_value``), 'dropped'/'raised' (once it dropped/rose
            by more than ``early_stop_value`` from the unpruned score).
        early_stop_value: the threshold of ``early_stop_mode``.
        executor: sweeps layers in parallel (a process pool, a dask client's executor).
        progress: show a tqdm bar.
        base_kwargs: keyword arguments of the criterion's pruner (``dummy_input``, ...).
        heads: names of attention modules swept by heads (``'granularity': 'head'``: the
            sparsity is the fraction of heads removed; ``base_kwargs`` then needs the
            ``dummy_input`` when the output projection lies outside the attention).

    Example::

        analysis = SensitivityAnalysis(model, val_func=lambda m: accuracy(m, x_val, y_val),
                                       sparsities=[0.25, 0.5, 0.75])
        sensitivities = analysis.analysis()      # {layer: {sparsity: score}}
        analysis.plot('sensitivity.png')
    """

    def __init__(self, model: nn.Module, val_func: Callable, sparsities: Sequence[float] | None = None,
                 prune_type: str = 'l1', early_stop_mode: str | None = None,
                 early_stop_value: float | None = None, *, executor: Executor | None = None,
                 progress: bool = True, base_kwargs: Mapping[str, Any] | None = None,
                 heads: Sequence[str] = ()):
        owner = type(self).__name__
        if not callable(val_func):
            raise TypeError(f'{owner}: val_func must be callable; got {type(val_func).__name__}.')
        if early_stop_mode not in EARLY_STOP_MODES:
            raise ValueError(f'{owner}: early_stop_mode must be one of {EARLY_STOP_MODES}; got {early_stop_mode!r}.')
        if early_stop_mode is not None and not isinstance(early_stop_value, (int, float)):
            raise ValueError(f"{owner}: early_stop_mode={early_stop_mode!r} needs a numeric early_stop_value.")
        sparsities = [round(0.1 * i, 2) for i in range(1, 10)] if sparsities is None else list(sparsities)
        bad = [s for s in sparsities if not isinstance(s, (int, float)) or not 0 < s < 1]
        if bad or not sparsities:
            raise ValueError(f'{owner}: sparsities must be numbers in (0, 1); got {bad or sparsities}.')
        self.cls = check_base_algo(owner, prune_type)
        self.model, self.val_func, self.sparsities = model, val_func, sorted(sparsities)
        self.prune_type, self.early_stop = prune_type, (early_stop_mode, early_stop_value)
        self.executor, self.progress, self.base_kwargs = executor, progress, dict(base_kwargs or {})
        self.heads = set(heads)
        self.sensitivities: dict[str, dict[float, float]] = {}
        self.baseline: float | None = None

    def layers(self, specified_layers: Sequence[str] | None = None) -> list[str]:
        """The layers analysed: those given, or every layer the criterion can prune."""
        modules = dict(self.model.named_modules())
        if specified_layers is not None:
            missing = [n for n in specified_layers if n not in modules]
            if missing:
                raise ValueError(f"{type(self).__name__}: specified_layers names '{missing[0]}', "
                                 'which the model does not have.')
            return list(specified_layers)
        return [n for n, m in modules.items() if isinstance(m, self.cls.default_types)]

    def analysis(self, val_args: Sequence[Any] | None = None, val_kwargs: Mapping[str, Any] | None = None,
                 specified_layers: Sequence[str] | None = None,
                 sparsities: Mapping[str, Sequence[float]] | None = None) -> dict[str, dict[float, float]]:
        """Runs the sweep; returns ``{layer: {sparsity: score}}`` (also in ``self.sensitivities``).

        ``sparsities`` optionally gives each layer its own list (used by SensitivityPruner
        to look only above a layer's current sparsity).
        """
        args, kwargs = list(val_args or []), dict(val_kwargs or {})
        call_args, call_kwargs = substitute(args, kwargs, self.model, self.model)
        self.baseline = as_score(self.val_func(*call_args, **call_kwargs), type(self).__name__)
        names = self.layers(specified_layers)
        jobs = {}
        for name in names:
            grid = list((sparsities or {}).get(name, self.sparsities))
            job = (self.model, name, grid, self.prune_type, self.val_func, args, kwargs, self.baseline,
                   self.early_stop, self.base_kwargs, name in self.heads)
            jobs[name] = self.executor.submit(sweep_layer, *job) if self.executor else job
        for name in tqdm(names, desc='sensitivity', disable=not self.progress, leave=False):
            job = jobs[name]
            self.sensitivities[name] = job.result() if self.executor else sweep_layer(*job)
        return self.sensitivities

    def table(self) -> str:
        """The sensitivities as a text table: one row per layer, one column per sparsity."""
        columns = sorted({s for row in self.sensitivities.values() for s in row})
        width = max([len('layer')] + [len(n) for n in self.sensitivities]) + 2
        lines = [f"{'layer':<{width}}" + ''.join(f'{s:>8.2f}' for s in columns),
                 f"{'(unpruned)':<{width}}" + f'{self.baseline:>8.4f}' if self.baseline is not None else '']
        for name, row in self.sensitivities.items():
            lines.append(f'{name:<{width}}' + ''.join(f'{row[s]:>8.4f}' if s in row else f"{'-':>8}"
                                                     for s in columns))
        return '\n'.join(line for line in lines if line)

    def plot(self, path: str | os.PathLike | None = None, ax: Any = None) -> Any:
        """Score vs sparsity, one line per layer; saved to ``path`` if given. Returns the figure."""
        matplotlib = require('matplotlib', 'plot', 'SensitivityAnalysis.plot()')
        if ax is None and path is not None:
            matplotlib.use('Agg', force=False)
        plt = require('matplotlib.pyplot', 'plot', 'SensitivityAnalysis.plot()')
        figure, ax = (plt.subplots(figsize=(6, 4)) if ax is None else (ax.figure, ax))
        for name, row in self.sensitivities.items():
            points = sorted(row.items())
            ax.plot([0.0] + [s for s, _ in points], [self.baseline] + [v for _, v in points], marker='o', label=name)
        ax.set_xlabel('sparsity of the layer alone')
        ax.set_ylabel('score')
        ax.set_title(f'Per-layer sensitivity ({self.prune_type})')
        ax.legend(fontsize='small')
        if path is not None:
            figure.savefig(path, bbox_inches='tight')
        return figure

    def export(self, filepath: str | os.PathLike) -> None:
        """Writes the sensitivities as CSV: ``layername, s1, s2, ...`` then one row per layer."""
        columns = sorted({s for row in self.sensitivities.values() for s in row})
        with open(filepath, 'w', newline='') as handle:
            writer = csv.writer(handle)
            writer.writerow(['layername'] + [f'{s:g}' for s in columns])
            for name, row in self.sensitivities.items():
                writer.writerow([name] + [row.get(s, '') for s in columns])

    @staticmethod
    def load_csv(filepath: str | os.PathLike) -> dict[str, dict[float, float]]:
        """Reads a file written by :meth:`export`."""
        with open(filepath, newline='') as handle:
            rows = list(csv.reader(handle))
        columns = [float(c) for c in rows[0][1:]]
        return {r[0]: {s: float(v) for s, v in zip(columns, r[1:]) if v != ''} for r in rows[1:]}
