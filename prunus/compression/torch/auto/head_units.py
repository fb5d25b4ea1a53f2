"""Attention heads as search variables of the automatic pruners.

A ``config_list`` entry with ``'granularity': 'head'`` (see
:mod:`prunus.compression.torch.head_entries`) makes every attention it selects one
variable of the search, keyed by the attention module's name: its value is the fraction
of the attention's heads removed (whole heads, one kept at least). Heads are ranked by
the base criterion on their Q/K/V rows; the masks zero a head's Q/K/V rows and its
output-projection columns, so the speedup removes it exactly. Costs:

* ``budget='sparsity'``: the weights a head's masks zero (its Q/K/V rows and biases and
  its output columns) count as removed;
* ``budget='flops'``: the Q/K/V outputs, the output projection's inputs and the attention
  module's own work (the attention kernel) shrink with the heads
  (:class:`~prunus.compression.torch.auto.cost.CostModel`).

Other entries' layers stay channel variables: a transformer's feed-forward up-projection
(``intermediate.dense``, ``linear1``, ``fc1``) is one, its width searched next to the heads.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...allocation import keep_mask
from ..head_entries import HeadTarget, check_data_scorable, head_scores, is_head_entry, masks_of_heads, select_heads
from prunus.layers.torch.masking import Masks


def search_heads(pruner: Any, supported: bool) -> list[HeadTarget]:
    """The attentions a search's head entries select (empty without head entries).

    Args:
        pruner: the automatic pruner (its entries, model, base criterion, dummy input).
        supported: whether this search and its base criterion can take heads.

    Raises:
        ValueError: naming the entry, when heads cannot be searched here.

    Example::

        pruner.head_targets = search_heads(pruner, True)
    """
    owner = type(pruner).__name__
    heads = [e for e in pruner.entries if is_head_entry(e)]
    if not heads:
        return []
    if not pruner.searches_heads:
        raise ValueError(f"{heads[0].where}['granularity'] is 'head', which {owner} does not search; "
                         'use SimulatedAnnealingPruner, NetAdaptPruner, AMCPruner or SensitivityPruner.')
    if not supported or not pruner.structured:
        raise ValueError(f"{heads[0].where}['granularity'] is 'head', which needs a filter criterion as "
                         f"base_algo (such as 'l1'); got '{pruner.base_algo}'.")
    targets = select_heads(pruner.bound_model, pruner.entries, pruner.dummy_input, owner)
    if getattr(pruner.base_cls, 'needs_data', False):
        check_data_scorable(targets, pruner.bound_model, owner)
    return targets


def masked_weights(model: nn.Module, target: HeadTarget, consumer: bool = True) -> int:
    """How many parameters the masks of all of an attention's heads zero (Q/K/V rows
    and biases, and with ``consumer`` the output-projection columns).

    Args:
        model: the model.
        target: the attention's head target.
        consumer: count the output projection's columns too.

    Example::

        masked_weights(bert, pruner.head_targets[0])   # 4 * 768 * 768 + 3 * 768 for BERT-base
    """
    lay = target.group.layout
    total = 0
    for s in (lay.q, lay.k, lay.v, lay.out) if consumer else (lay.q, lay.k, lay.v):
        module = model.get_submodule(s.module)
        weight = getattr(module, s.weight)
        total += weight.numel() * (s.stop - s.start) // weight.shape[s.axis]
        if s.bias is not None and s is not lay.out:
            total += s.stop - s.start
    return total


def capped(heads: int, sparsity: float) -> float:
    """``sparsity`` lowered so that an attention of ``heads`` heads keeps one.

    Args:
        heads: the attention's head count.
        sparsity: the fraction asked for.

    Example::

        capped(4, 0.95)   # 0.75
    """
    return min(sparsity, (heads - 1) / heads)


def add_head_scores(scores: dict, base: Any, targets: Sequence[HeadTarget]) -> dict:
    """``scores`` with each attention's head scores under its key (the base criterion on
    the Q/K/V rows of ``base``'s model).

    Args:
        scores: the base criterion's channel scores (completed in place).
        base: the base pruner bound to the model scored.
        targets: the attentions searched by heads.

    Example::

        add_head_scores(base.compute_scores(base.collect()), base, targets)
    """
    criterion = getattr(type(base), 'filter_criterion', None)
    for target in targets:
        scores[target.group.name] = head_scores(base.bound_model, target.group, scores, criterion)
    return scores


def head_masks(model: nn.Module, targets: Sequence[HeadTarget], allocation: Mapping[str, float],
               scores: Mapping[str, torch.Tensor], masks: Masks) -> Masks:
    """``masks`` with the heads ``allocation`` removes (lowest ``scores`` first) masked.

    Args:
        model: the model the masks are for.
        targets: the attentions searched by heads.
        allocation: variable -> sparsity.
        scores: with each attention's head scores under its key.
        masks: the channel masks (not modified).

    Example::

        head_masks(model, targets, {'encoder.layer.0.attention.self': 0.5}, scores, {})
    """
    keeps = {}
    for target in targets:
        key = target.group.name
        sparsity = allocation.get(key, 0.0)
        if sparsity > 0:
            values = scores[key].detach().double().cpu().numpy()
            keeps[key] = keep_mask(values, capped(len(values), sparsity))
    if not keeps:
        return masks
    return masks_of_heads(model, targets, keeps, masks)


def in_model_order(model: nn.Module, names: Sequence[str]) -> list[str]:
    """``names`` (layer and attention names) in the order the model lists its modules.

    Args:
        model: the model.
        names: module names.

    Example::

        in_model_order(bert, ['encoder.layer.1.attention.self', 'encoder.layer.0.intermediate.dense'])
    """
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return sorted(names, key=lambda n: order.get(n, np.inf))
