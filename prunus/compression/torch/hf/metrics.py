"""``metrics.Metric``: which evaluation result judges a pruned model."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Metric:
    """The evaluation key (``'eval_accuracy'``) and how to read it.

    Attributes:
        name: a key of ``Trainer.evaluate()``'s result.
        greater_is_better: whether a larger value is better.
        is_relative: whether ``criterion`` is a relative (True) or absolute tolerance.
        criterion: the tolerated loss against the dense model.
        weight_ratio: weight of this metric when several are combined.
    """

    name: str
    greater_is_better: bool = True
    is_relative: bool = True
    criterion: float = 0.01
    weight_ratio: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f'Metric.name must be a non-empty string; got {self.name!r}.')

