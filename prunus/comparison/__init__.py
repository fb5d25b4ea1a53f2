"""Comparing pruners: ``compare(model, pruners, ...)`` returns a DataFrame with ``.plot()``.

Example::

    from prunus.comparison import compare
    table = compare(model, ['level', 'l1', 'fpgm'], data=batches, budgets=[0.3, 0.6],
                    evaluator=accuracy, finetune=finetune)
    print(table[['pruner', 'budget', 'accuracy_finetuned', 'flops_small', 'latency_ms']])
    table.plot('comparison.png')

Importing this package imports neither torch nor TensorFlow; the framework of ``model``
decides which one is used.
"""
from prunus._optional import require

require('pandas', 'compare', 'prunus.compare')

from .frame import Comparison, pareto_front  # noqa: E402
from .runner import compare  # noqa: E402

__all__ = ['compare', 'Comparison', 'pareto_front']
