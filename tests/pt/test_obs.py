"""The matrix algorithms of Wanda and SparseGPT, and the layer-as-matrix views they read."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.compression import prune_count
from prunus.compression.patterns import NMPattern
from prunus.compression.torch import obs
from prunus.compression.torch.layer_inputs import InputStats, input_columns, to_weight, weight_matrices


def _correlated_inputs(n=512, cols=32, seed=0):
    """Inputs with a few large-magnitude features and correlated columns, as LLM
    activations have: where magnitude pruning goes wrong."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, cols // 2, generator=g)
    x = torch.cat([base, base + 0.1 * torch.randn(n, cols // 2, generator=g)], dim=1)
    x[:, :3] *= 20
    return x


@pytest.mark.parametrize('sizes,sparsity', [([5, 5, 5], 0.3), ([1] * 7, 0.5), ([13, 2, 9], 0.77), ([4], 0.0)])
def test_shares_add_up_exactly(sizes, sparsity):
    counts = obs.shares(sizes, sparsity)
    assert sum(counts) == prune_count(sum(sizes), sparsity)
    assert all(0 <= c <= s for c, s in zip(counts, sizes))


@pytest.mark.parametrize('rows,cols,sparsity', [(7, 13, 0.3), (16, 12, 0.5), (3, 5, 0.9), (8, 8, 0.0)])
@pytest.mark.parametrize('group', ['row', 'layer'])
def test_wanda_counts_are_exact(rows, cols, sparsity, group):
    weight, norms = torch.randn(rows, cols), torch.rand(cols)
    keep = obs.wanda_keep(weight, norms, sparsity, None, group)
    assert int((~keep).sum()) == prune_count(rows * cols, sparsity)
    if group == 'row':
        per_row = (~keep).sum(dim=1)
        assert int(per_row.max() - per_row.min()) <= 1


def test_wanda_drops_the_lowest_weight_times_input_norm_per_row():
    weight, norms = torch.randn(6, 10), torch.rand(10) + 0.1
    keep = obs.wanda_keep(weight, norms, 0.4, None, 'row')
    scores = weight.abs() * norms
    for r in range(6):
        dropped = set(torch.argsort(scores[r])[:4].tolist())
        assert dropped == set((~keep[r]).nonzero().flatten().tolist())


@pytest.mark.parametrize('n,m', [(2, 4), (1, 4), (4, 8)])
def test_nm_keeps_exactly_m_minus_n_of_every_group(n, m):
    weight = torch.randn(5, 4 * m)
    keep = obs.wanda_keep(weight, torch.rand(4 * m), n / m, NMPattern(n, m), 'row')
    assert bool((keep.reshape(5, -1, m).sum(dim=2) == m - n).all())
    new, keep = obs.sparsegpt(weight, torch.eye(4 * m), n / m, NMPattern(n, m), 'layer', block_size=2 * m)
    assert bool((keep.reshape(5, -1, m).sum(dim=2) == m - n).all())
    assert bool((new[~keep] == 0).all())


@pytest.mark.parametrize('rows,cols,block,sparsity', [(7, 13, 5, 0.3), (16, 32, 8, 0.5), (4, 9, 128, 0.6)])
@pytest.mark.parametrize('group', ['row', 'layer'])
def test_sparsegpt_counts_are_exact(rows, cols, block, sparsity, group):
    x = torch.randn(64, cols)
    new, keep = obs.sparsegpt(torch.randn(rows, cols), x.t() @ x / 64, sparsity, None, group, block_size=block)
    assert int((~keep).sum()) == prune_count(rows * cols, sparsity)
    assert bool((new[~keep] == 0).all())
    if group == 'row':
        per_row = (~keep).sum(dim=1)
        assert int(per_row.max() - per_row.min()) <= 1


def _output_error(x, weight, new):
    return float((x @ weight.t() - x @ new.t()).pow(2).mean() / (x @ weight.t()).pow(2).mean())


@pytest.mark.parametrize('pattern', [None, NMPattern(2, 4)])
def test_sparsegpt_and_wanda_reconstruct_better_than_magnitude(pattern):
    x = _correlated_inputs()
    weight = torch.randn(24, 32, generator=torch.Generator().manual_seed(1))
    hessian = x.t() @ x / x.shape[0]
    magnitude = obs.select(weight.abs(), 0.5, pattern, 'row')
    wanda = obs.wanda_keep(weight, x.pow(2).sum(0).sqrt(), 0.5, pattern, 'row')
    sparse, _ = obs.sparsegpt(weight, hessian, 0.5, pattern, 'layer', block_size=8)
    error_magnitude = _output_error(x, weight, weight * magnitude)
    error_wanda = _output_error(x, weight, weight * wanda)
    error_sparse = _output_error(x, weight, sparse)
    assert error_wanda < 0.7 * error_magnitude
    assert error_sparse < 0.7 * error_wanda


def test_sparsegpt_without_update_only_zeroes_and_the_update_helps():
    x = _correlated_inputs(seed=3)
    weight = torch.randn(8, 32)
    hessian = x.t() @ x / x.shape[0]
    plain, keep = obs.sparsegpt(weight, hessian, 0.5, None, 'layer', update=False)
    torch.testing.assert_close(plain, weight * keep)
    updated, _ = obs.sparsegpt(weight, hessian, 0.5, None, 'layer')
    assert _output_error(x, weight, updated) < _output_error(x, weight, plain)


def test_sparsegpt_reconstructs_around_a_fixed_mask():
    x = _correlated_inputs(seed=4)
    weight = torch.randn(8, 32)
    keep = obs.wanda_keep(weight, x.pow(2).sum(0).sqrt(), 0.5, None, 'row')
    new, out_keep = obs.sparsegpt(weight, x.t() @ x / x.shape[0], 0.5, None, 'row', keep=keep)
    assert torch.equal(out_keep, keep)
    assert _output_error(x, weight, new) < _output_error(x, weight, weight * keep)


def test_singular_hessians_are_damped_not_fatal():
    hessian = torch.zeros(6, 6)
    hessian[0, 0] = 1.0  # five inputs never fire
    new, keep = obs.sparsegpt(torch.randn(3, 6), hessian, 0.5, None, 'row')
    assert torch.isfinite(new).all() and int((~keep).sum()) == 9


@pytest.mark.parametrize('layer,shape', [
    (nn.Conv2d(4, 6, 3, padding=1), (2, 4, 7, 7)),
    (nn.Conv2d(4, 6, (3, 2), stride=2, dilation=(1, 2), padding=(1, 0)), (2, 4, 9, 8)),
    (nn.Conv2d(4, 6, 3, groups=2, padding='same', padding_mode='reflect'), (2, 4, 6, 6)),
    (nn.Conv1d(3, 5, 3, padding=2, dilation=2, padding_mode='circular'), (2, 3, 11)),
    (nn.Conv3d(2, 4, 2, stride=(1, 2, 1)), (1, 2, 4, 4, 3)),
    (nn.Linear(5, 3), (2, 4, 5)),
])
def test_input_columns_times_the_weight_matrix_is_the_layer(layer, shape):
    x = torch.randn(*shape)
    columns = input_columns(layer, x)
    matrices = weight_matrices(layer)
    out = layer(x) - (layer.bias.reshape(-1, *([1] * (x.dim() - 2))) if not isinstance(layer, nn.Linear)
                      else layer.bias)
    if isinstance(layer, nn.Linear):
        expected = out.reshape(-1, out.shape[-1])
    else:
        expected = out.movedim(1, -1).reshape(-1, out.shape[1])
    got = torch.cat([c @ w.t() for c, w in zip(columns, matrices)], dim=1)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(to_weight(layer, matrices), layer.weight.detach())


def test_input_stats_accumulate_the_hessian_and_norms():
    layer = nn.Linear(4, 2)
    stats = InputStats(layer, hessian=True)
    handle = stats.attach()
    xs = [torch.randn(3, 4), torch.randn(5, 4)]
    for x in xs:
        layer(x)
    handle.remove()
    x = torch.cat(xs)
    torch.testing.assert_close(stats.mean_hessians()[0], x.t() @ x / 8)
    torch.testing.assert_close(stats.norms()[0], x.pow(2).sum(0).sqrt())


def _stable_sort_keep(scores, counts):
    """The reference: drop the lowest by a stable sort (ties to the lower index)."""
    rows, cols = scores.shape
    if isinstance(counts, int):
        keep = torch.ones(rows * cols, dtype=torch.bool)
        keep[torch.sort(scores.reshape(-1), stable=True).indices[:counts]] = False
        return keep.reshape(rows, cols)
    keep = torch.ones(rows, cols, dtype=torch.bool)
    order = torch.sort(scores, dim=1, stable=True).indices
    for r in range(rows):
        keep[r, order[r, :int(counts[r])]] = False
    return keep


def test_threshold_selection_equals_a_stable_sort_with_many_ties():
    g = torch.Generator().manual_seed(3)
    for _ in range(100):
        rows, cols = torch.randint(1, 12, (2,), generator=g).tolist()
        scores = torch.randint(0, 3, (rows, cols), generator=g).float()  # mostly ties
        count = int(torch.randint(0, rows * cols + 1, (1,), generator=g))
        assert torch.equal(obs.prune_lowest(scores, count), _stable_sort_keep(scores, count))
        counts = torch.randint(0, cols + 1, (rows,), generator=g)
        assert torch.equal(obs.prune_lowest(scores, counts), _stable_sort_keep(scores, counts))


@pytest.mark.parametrize('n,m', [(2, 4), (1, 4), (4, 8), (6, 8), (5, 16)])
def test_nm_selection_drops_the_n_lowest_of_each_group_ties_first_come(n, m):
    g = torch.Generator().manual_seed(n * m)
    scores = torch.randint(0, 3, (7, 4 * m), generator=g).float()
    scores[0, :m] = float('inf')
    keep = obs.nm_keep(scores, NMPattern(n, m))
    expected = torch.cat([_stable_sort_keep(scores[:, i:i + m], torch.full((7,), n)) for i in range(0, 4 * m, m)], 1)
    assert torch.equal(keep, expected)
    assert torch.equal(obs.nm_keep(scores.t().contiguous(), NMPattern(n, m), dim=0), expected.t())


def test_inverse_hessian_factor_is_the_upper_cholesky_factor_of_the_damped_inverse():
    x = _correlated_inputs()
    hessian = (x.t() @ x / x.shape[0]).double()
    upper = obs.inverse_hessian_factor(hessian, 0.01)
    damped = hessian + 0.01 * hessian.diagonal().mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
    assert torch.equal(upper, upper.triu()) and bool((upper.diagonal() > 0).all())
    torch.testing.assert_close(upper.t() @ upper, torch.linalg.inv(damped))


def test_layers_reading_the_same_input_share_its_products_and_get_the_same_statistics():
    from prunus.compression.torch.layer_inputs import SharedInputs
    q, k = nn.Linear(6, 3), nn.Linear(6, 5)
    shared = SharedInputs()
    alone, with_q, with_k = (InputStats(q, True), InputStats(q, True, shared=shared),
                             InputStats(k, True, shared=shared))
    for x in [torch.randn(4, 6), torch.randn(2, 6)]:
        for stats in (alone, with_q, with_k):
            stats.add(x)
        x.mul_(2)  # changed in place: the next reader must not reuse the old products
        later = InputStats(k, True, shared=shared)
        later.add(x)
        torch.testing.assert_close(later.mean_hessians()[0], x.t() @ x / x.shape[0])
    for stats in (with_q, with_k):
        assert stats.samples == alone.samples == 6
        torch.testing.assert_close(stats.mean_hessians()[0], alone.mean_hessians()[0])
        torch.testing.assert_close(stats.norms()[0], alone.norms()[0])
