"""``NLPTrainer``: a ``transformers.Trainer`` with Intel Extension for Transformers'
``prune(pruning_config=...)``."""
from __future__ import annotations

from typing import Any, Callable

from transformers import Trainer

from ..training import Pruning
from .callback import PruningCallback
from .metrics import Metric


class NLPTrainer(Trainer):
    """``Trainer`` plus ``prune()``; ``metrics`` names the evaluation result that judges
    the pruned model (``trainer.metrics = metrics.Metric(name='eval_accuracy')``)."""

    metrics: Metric | list[Metric] | None = None

    def prune(self, pruning_config: Any = None, provider: str = 'inc', eval_func: Callable | None = None,
              train_func: Callable | None = None) -> Any:
        """Trains the model with the pruning of ``pruning_config`` (a WeightPruningConfig,
        YAML path or mapping) and returns it, masked.

        ``train_func(model)`` replaces ``self.train()``; ``eval_func(model)`` (or, with
        ``metrics`` set and an eval dataset, ``self.evaluate()``) scores the result, kept in
        ``self.pruned_score``.
        """
        if provider != 'inc':
            raise ValueError(f"NLPTrainer.prune: provider must be 'inc'; got {provider!r}.")
        if pruning_config is None:
            raise ValueError('NLPTrainer.prune needs pruning_config (a WeightPruningConfig).')
        pruning = Pruning(pruning_config, self.model)
        callback = PruningCallback(pruning)
        self.add_callback(callback)
        try:
            if train_func is not None:
                pruning.on_train_begin()
                train_func(self.model)
                pruning.on_train_end()
            else:
                self.train()
        finally:
            self.remove_callback(callback)
        self.pruning = pruning
        self.pruned_score = self._score(eval_func)
        return self.model

    def _score(self, eval_func: Callable | None) -> Any:
        if eval_func is not None:
            return eval_func(self.model)
        metric = self.metrics[0] if isinstance(self.metrics, (list, tuple)) and self.metrics else self.metrics
        if isinstance(metric, Metric) and self.eval_dataset is not None:
            results = self.evaluate()
            if metric.name not in results:
                raise KeyError(f"NLPTrainer.metrics names '{metric.name}', which evaluate() did not return "
                               f"(it returned {sorted(results)}); set compute_metrics to produce it.")
            return results[metric.name]
        return None

