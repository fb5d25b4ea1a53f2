"""Group Taylor importance: the units chosen are the ones whose removal changes the loss
least, checked against a brute-force loss change where first order is exact."""
import pytest
import torch
from torch import nn

from prunus.compression.torch import (RandomProjectionLoss, TaylorFOWeightFilterPruner,
                                      TransformerHeadPruner, get_masks)

from .models import HEAD_DIM, HEADS, WIDTH, build, first_tensor


class LinearLoss:
    """sum(R_b * output) with a fixed R per call index: linear in the output, so removing a
    ReLU neuron (or an attention head) changes it by exactly its first-order estimate."""

    def __init__(self, shape, batches):
        gen = torch.Generator().manual_seed(3)
        self.r = [torch.randn(shape, generator=gen) for _ in range(batches)]
        self.calls = 0

    def reset(self):
        self.calls = 0

    def __call__(self, out, target=None):
        r = self.r[self.calls % len(self.r)]
        self.calls += 1
        return (first_tensor(out) * r).sum()


def _brute_force(model, batches, loss, remove):
    """Per unit u: sum over batches of (L_b(u removed) - L_b)^2, exactly."""
    def losses():
        loss.reset()
        with torch.no_grad():
            return torch.stack([loss(model(x)) for x in batches])
    base = losses()
    out = []
    for u, undo in remove():
        out.append(float(((losses() - base) ** 2).sum()))
        undo()
    return torch.tensor(out, dtype=torch.float64)


def test_ffn_neurons_ranked_by_their_exact_loss_change():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    batches = [torch.randn(5, 6) for _ in range(3)]
    loss = LinearLoss((5, 3), len(batches))

    def remove():
        w = model[2].weight
        for u in range(12):
            saved = w[:, u].clone()
            with torch.no_grad():
                w[:, u] = 0
            yield u, lambda s=saved, u=u: w.data.__setitem__((slice(None), u), s)
    exact = _brute_force(model, batches, loss, remove)
    loss.reset()
    pruner = TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}], data=batches,
                                        criterion=loss, importance='group', dependency_aware=True,
                                        dummy_input=batches[0])
    scores = pruner.compute_scores(pruner.collect())['0']
    # the up row + bias and the down column each estimate the removal (ReLU: z * relu'(z) = h)
    torch.testing.assert_close(scores, 4 * exact, rtol=1e-5, atol=1e-8)
    loss.reset()
    pruner.compress()
    kept = get_masks(model)['0']['weight'].any(1)
    assert set(torch.nonzero(~kept).flatten().tolist()) == set(torch.argsort(exact)[:6].tolist())


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_heads_ranked_by_their_exact_loss_change():
    torch.manual_seed(0)
    model = Attention().eval()
    batches = [torch.randn(2, 5, WIDTH) for _ in range(3)]
    loss = LinearLoss((2, 5, WIDTH), len(batches))

    def remove():
        w = model.attn.out_proj.weight
        for h in range(HEADS):
            cols = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
            saved = w[:, cols].clone()
            with torch.no_grad():
                w[:, cols] = 0
            yield h, lambda s=saved, c=cols: w.data.__setitem__((slice(None), c), s)
    exact = _brute_force(model, batches, loss, remove)

    def runner(m):
        loss.reset()
        for x in batches:
            loss(m(x)).backward()
    pruner = TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['MultiheadAttention']}],
                                   HEAD_DIM, dummy_input=(batches[0],), ranking_criterion='taylorfo_group',
                                   forward_runner=runner)
    scores = pruner.compute_scores(pruner.collect())
    # V rows (attention is linear in V) and output columns each give the exact change
    torch.testing.assert_close(next(iter(scores.values())), 4 * exact, rtol=1e-5, atol=1e-8)
    pruner.compress()
    pruned = next(iter(pruner.get_pruned_heads().values()))
    assert pruned == sorted(torch.argsort(exact)[:HEADS // 2].tolist())


def test_group_taylor_on_a_bert_ffn_prunes_and_speeds_up_exactly():
    from prunus.speedup import speedup
    model, x = build('bert')
    model.eval()
    loss = RandomProjectionLoss(select=lambda out: out.last_hidden_state)
    names = [f'encoder.layer.{i}.intermediate.dense' for i in range(2)]
    TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': names}], data=[x] * 4,
                               criterion=loss, importance='group', dependency_aware=True,
                               dummy_input=x).compress()
    TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], HEAD_DIM, dummy_input=x,
                          ranking_criterion='taylorfo_group',
                          forward_runner=lambda m: loss(m(*x)).backward()).compress()
    with torch.no_grad():
        expected = model(*x).last_hidden_state
    small = speedup(model, x)
    assert small.encoder.layer[0].intermediate.dense.out_features == WIDTH
    assert small.encoder.layer[0].attention.self.num_attention_heads == HEADS // 2
    with torch.no_grad():
        torch.testing.assert_close(small(*x).last_hidden_state, expected, rtol=1e-5, atol=1e-5)


def test_random_projection_loss_is_label_free_and_reproducible():
    out = torch.randn(3, 4, requires_grad=True)
    a, b = RandomProjectionLoss(seed=1), RandomProjectionLoss(seed=1)
    first = a(out)
    assert float(first.detach()) == float(b(out).detach())
    assert float(a(out).detach()) != float(first.detach())  # a fresh r per call
    first.backward()
    assert out.grad.abs().sum() > 0
    with pytest.raises(TypeError, match='select'):
        RandomProjectionLoss(select=3)


def test_group_taylor_needs_the_dependency_trace():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match='dependency_aware'):
        TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}], data=[torch.randn(2, 4)],
                                   criterion=RandomProjectionLoss(), importance='group')
    with pytest.raises(ValueError, match="importance must be"):
        TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}], data=[torch.randn(2, 4)],
                                   criterion=RandomProjectionLoss(), importance='grouped')


def test_a_frozen_consumer_adds_nothing_and_a_target_without_gradient_is_named():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    model[2].requires_grad_(False)  # its columns cannot be scored; the rows still are
    x = [torch.randn(4, 6)]
    pruner = TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}], data=x,
                                        criterion=RandomProjectionLoss(), importance='group',
                                        dependency_aware=True, dummy_input=x[0])
    pruner.compress()
    assert int((~get_masks(model)['0']['weight'].any(1)).sum()) == 6
    model = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    model[0].requires_grad_(False)
    pruner = TaylorFOWeightFilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}], data=x,
                                        criterion=RandomProjectionLoss(), importance='group',
                                        dependency_aware=True, dummy_input=x[0])
    with pytest.raises(ValueError, match="'0'"):
        pruner.compress()
