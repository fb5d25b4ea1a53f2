"""Evaluating one candidate allocation: mask a copy, optionally fine-tune, score."""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from prunus.layers.torch.masking import Masks, apply_masks


def score_candidate(model: nn.Module, masks: Masks, evaluator: Callable, fine_tuner: Callable | None = None,
                    seed: int = 0, evaluator_args: Sequence[Any] = (), owner: str = 'search'
                    ) -> tuple[float, dict | None]:
    """Masks a copy of ``model``, optionally fine-tunes it, and evaluates it.

    Module-level so process pools and dask can pickle it. Returns the score and, when a
    fine-tuner ran, the copy's state dict (the caller keeps the winner's weights).
    """
    torch.manual_seed(seed)
    candidate = apply_masks(copy.deepcopy(model), masks)
    if fine_tuner is not None:
        fine_tuner(candidate)
    score = as_score(evaluator(*evaluator_args, candidate), owner)
    state = {k: v.detach().clone() for k, v in candidate.state_dict().items()} if fine_tuner else None
    return score, state


def as_score(value: Any, owner: str) -> float:
    """The evaluator's result as a float; a non-number or NaN would make every later
    comparison of the search meaningless, so it stops the search with a clear error."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise TypeError(f'{owner}: the evaluator must return a number (the score); '
                        f'got {type(value).__name__} {str(value)[:40]!r}.') from None
    if math.isnan(score):
        raise ValueError(f'{owner}: the evaluator returned NaN for a candidate; return a number.')
    return score
