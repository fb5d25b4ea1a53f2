"""The result of :func:`prunus.compare`: a DataFrame that knows how to plot itself."""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from prunus._optional import require


COLUMNS = ['pruner', 'budget', 'accuracy_pruned', 'accuracy_finetuned', 'params', 'flops',
           'params_small', 'flops_small', 'latency_ms', 'latency_spread_ms', 'seconds',
           'layer_sparsity', 'note']


def pareto_front(flops: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (fewer or equal FLOPs and higher or
    equal accuracy, better in one), ordered by FLOPs.

    Args:
        flops: the cost of each point.
        accuracy: the score of each point (higher is better).

    Returns:
        The indices on the front, cheapest first.

    Example::

        >>> pareto_front([1, 2, 3], [0.5, 0.4, 0.9])
        [0, 2]
    """
    points = sorted(range(len(flops)), key=lambda i: (flops[i], -accuracy[i]))
    front, best = [], float('-inf')
    for i in points:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


class Comparison(pd.DataFrame):
    """One row per pruner and budget (plus the ``dense`` baseline), as a pandas DataFrame.

    Columns: ``pruner``, ``budget``, ``accuracy_pruned`` (right after pruning),
    ``accuracy_finetuned``, ``params`` (non-zero) and ``flops`` of the masked model,
    ``params_small`` and ``flops_small`` of the sped-up model, ``latency_ms`` (median) and
    ``latency_spread_ms`` (interquartile range) of the model that would ship, ``seconds``
    (pruning and fine-tuning), ``layer_sparsity`` (``{layer: sparsity}``) and ``note``.

    Example::

        table = prunus.compare(model, ['l1', 'fpgm'], data=batches, evaluator=accuracy)
        table.sort_values('accuracy_pruned')
        figure = table.plot()          # accuracy and latency against FLOPs, layer sparsity
    """

    @property
    def _constructor(self) -> type:
        return Comparison

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> Comparison:
        """Build the table from run rows (missing numbers become NaN)."""
        frame = cls(pd.DataFrame(rows, columns=COLUMNS))
        for column in COLUMNS[2:11]:
            frame[column] = pd.to_numeric(frame[column], errors='coerce').astype(float)
        return frame

    def plot(self, path: Any = None, *, budget: float | None = None) -> Any:  # type: ignore[override]
        """Draw accuracy vs FLOPs (with the Pareto front), latency vs FLOPs and the per-layer
        sparsity of each pruner at ``budget`` (default: the largest).

        Args:
            path: also save the figure there.
            budget: the budget whose per-layer sparsities are drawn.

        Returns:
            The matplotlib Figure.

        Raises:
            ImportError: matplotlib is missing (``pip install 'prunus[plot]'``).
        """
        matplotlib = require('matplotlib', 'plot', 'Comparison.plot()')
        if path is not None:
            matplotlib.use('Agg', force=False)
        plt = require('matplotlib.pyplot', 'plot', 'Comparison.plot()')
        figure, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        self._accuracy(axes[0])
        self._latency(axes[1])
        self._sparsity(axes[2], budget)
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, bbox_inches='tight')
        return figure

    def _score(self) -> pd.Series:
        tuned = self['accuracy_finetuned']
        return tuned.where(tuned.notna(), self['accuracy_pruned'])

    def _flops(self) -> pd.Series:
        small = self['flops_small']
        return small.where(small.notna(), self['flops'])

    def _accuracy(self, ax: Any) -> None:
        score, flops = self._score(), self._flops()
        for label, rows in self.groupby('pruner', sort=False):
            ax.plot(flops[rows.index], score[rows.index], marker='o', linestyle='-', label=label)
        valid = [i for i in self.index if pd.notna(score[i]) and pd.notna(flops[i])]
        front = [valid[j] for j in pareto_front([flops[i] for i in valid], [score[i] for i in valid])]
        if front:
            ax.step(flops[front], score[front], where='post', color='black', linewidth=1,
                    linestyle='--', label='Pareto front')
        ax.set_xlabel('FLOPs')
        ax.set_ylabel('accuracy (fine-tuned where done)')
        ax.set_title('Accuracy vs FLOPs')
        ax.legend(fontsize='small')

    def _latency(self, ax: Any) -> None:
        flops = self._flops()
        for label, rows in self.groupby('pruner', sort=False):
            ax.errorbar(flops[rows.index], rows['latency_ms'], yerr=rows['latency_spread_ms'] / 2,
                        marker='o', capsize=3, label=label)
        ax.set_xlabel('FLOPs')
        ax.set_ylabel('latency (ms, median; bars: IQR)')
        ax.set_title('Latency vs FLOPs')
        ax.legend(fontsize='small')

    def _sparsity(self, ax: Any, budget: float | None) -> None:
        pruned = self[self['pruner'] != 'dense']
        if budget is None and len(pruned):
            budget = float(pruned['budget'].max())
        chosen = pruned[pruned['budget'] == budget]
        layers: list[str] = []
        for table in chosen['layer_sparsity']:
            layers += [n for n in table if n not in layers]
        for _, row in chosen.iterrows():
            ax.plot(range(len(layers)), [row['layer_sparsity'].get(n, 0.0) for n in layers],
                    marker='o', label=row['pruner'])
        ax.set_xticks(range(len(layers)), layers, rotation=60, ha='right', fontsize='small')
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel('sparsity')
        ax.set_title(f'Per-layer sparsity at budget {budget:g}' if budget is not None
                     else 'Per-layer sparsity')
        if len(chosen):
            ax.legend(fontsize='small')
