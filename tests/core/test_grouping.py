"""The channel grouping both speedups and both dependency-aware pruners share."""
import numpy as np
import pytest

from prunus.compression.allocation import keep_mask
from prunus.compression.errors import PrunusError, SpeedupError
from prunus.compression.grouping import UnionFind, even_blocks, group_keep, group_scores


def test_union_find_ties_transitively_and_reserves_zero():
    uf = UnionFind()
    a, b, c = uf.fresh(3), uf.fresh(3), uf.fresh(2)
    assert a.tolist() == [1, 2, 3] and c.tolist() == [7, 8]
    uf.union_many(a, b)
    uf.union(int(b[0]), int(c[1]))
    uf.union(0, int(a[2]))  # 0 means "no channel": never tied
    roots = uf.roots(np.stack([a, b]))
    assert roots.shape == (2, 3) and (roots[0] == roots[1]).all()
    assert uf.find(int(c[1])) == uf.find(int(a[0])) == 1 and uf.find(int(c[0])) == 7
    assert uf.find(int(a[2])) == 3 and uf.roots(np.array([0]))[0] == 0


def test_vectorized_unions_agree_with_one_at_a_time():
    rng = np.random.default_rng(0)
    pairs = rng.integers(1, 200, size=(2, 300))
    bulk, single = UnionFind(), UnionFind()
    bulk.fresh(199), single.fresh(199)
    bulk.union_many(pairs[0], pairs[1])
    for x, y in pairs.T:
        single.union(int(x), int(y))
    ids = np.arange(1, 200)
    assert (bulk.roots(ids) == np.array([single.find(int(i)) for i in ids])).all()


def test_group_scores_sum_the_members_and_blocks_lose_the_same_share():
    channels = {'a': np.array([0, 1, 2, 3]), 'b': np.array([3, 2, 1, 0])}
    scores = {'a': np.array([1.0, 5.0, 2.0, 9.0]), 'b': np.array([1.0, 1.0, 1.0, 1.0])}
    total = group_scores(4, channels, scores)
    np.testing.assert_array_equal(total, [2.0, 6.0, 3.0, 10.0])
    blocks = even_blocks(4, 2)
    np.testing.assert_array_equal(blocks, [0, 0, 1, 1])
    keep = group_keep(total, 0.5, blocks)
    np.testing.assert_array_equal(keep, [False, True, False, True])
    np.testing.assert_array_equal(group_keep(total, 0.5, np.zeros(4)), keep_mask(total, 0.5))


def test_one_speedup_error_for_both_frameworks():
    assert issubclass(SpeedupError, PrunusError)
    for base in (RuntimeError, ValueError):
        with pytest.raises(base):
            raise SpeedupError('x')
