"""Exact prune counts and deterministic tie-breaking, per layer and globally."""
from __future__ import annotations

import numpy as np
import pytest

from prunus.compression import global_keep_masks, keep_mask, prune_count


@pytest.mark.parametrize('count,sparsity,expected', [(10, 0.5, 5), (7, 0.5, 4), (5, 0.5, 2), (3, 0.3, 1),
                                                     (64, 0.9, 58), (1, 0.4, 0), (10, 0.0, 0)])
def test_prune_count_is_round_of_the_product(count, sparsity, expected):
    assert prune_count(count, sparsity) == expected == round(sparsity * count)


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('sparsity', [0.1, 0.37, 0.5, 0.93])
def test_keep_mask_prunes_exactly_the_lowest(seed, sparsity):
    scores = np.random.default_rng(seed).integers(0, 4, size=101).astype(float)  # many ties
    keep = keep_mask(scores, sparsity)
    pruned = ~keep
    assert pruned.sum() == round(sparsity * 101)
    assert scores[pruned].max(initial=-1) <= scores[keep].min()
    assert np.array_equal(keep, keep_mask(scores, sparsity))


def test_ties_go_to_the_lower_index():
    assert keep_mask(np.ones(6), 0.5).tolist() == [False, False, False, True, True, True]


def test_global_ranking_is_exact_and_ties_prefer_earlier_layers():
    keeps = global_keep_masks({'a': np.array([1.0, 5.0, 3.0]), 'b': np.array([1.0, 2.0, 9.0])}, 0.5)
    assert keeps['a'].tolist() == [False, True, True]
    assert keeps['b'].tolist() == [False, False, True]


def test_global_cap_limits_each_layer():
    scores = {'a': np.array([0.1, 0.2, 0.3, 0.4]), 'b': np.array([5.0, 6.0, 7.0, 8.0])}
    keeps = global_keep_masks(scores, 0.5, max_sparsity_per_layer=0.5)
    assert (~keeps['a']).sum() == 2 and (~keeps['b']).sum() == 2
    assert keeps['b'].tolist() == [False, False, True, True]


def test_unreachable_total_is_an_error_naming_the_entry():
    with pytest.raises(ValueError, match=r"config_list\[1\]: 'total_sparsity' 0.9 asks for 7 of 8"):
        global_keep_masks({'a': np.zeros(4), 'b': np.zeros(4)}, 0.9, 0.5, where='config_list[1]')
