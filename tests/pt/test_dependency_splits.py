"""Dependency-aware pruning keeps an evenly chunked tensor even (ShuffleNet's x.chunk(2, 1)):
the speedup can then remove every masked channel."""
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup

X = torch.randn(2, 3, 8, 8)


class ChunkedCat(nn.Module):
    """Two convs concatenated, then chunked in halves: each half must lose as many."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)
        self.left, self.right = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x1, x2 = torch.cat([self.a(x), self.b(x)], 1).chunk(2, 1)
        return self.left(x1) + self.right(x2)


def test_dependency_aware_gives_back_channels_until_chunks_are_even():
    model = ChunkedCat().eval()
    config = [{'sparsity': 0.5, 'op_names': ['a']}, {'sparsity': 0.25, 'op_names': ['b']}]
    pruner = L1FilterPruner(model, config, dependency_aware=True, dummy_input=X)
    pruner.compress()
    kept = {n: int(m['weight'].flatten(1).any(1).sum()) for n, m in pruner.get_masks().items()}
    assert kept == {'a': 6, 'b': 6}  # 'a' gets its two best pruned channels back
    ref = model(X)
    small, summary = speedup(model, X, pruner, return_summary=True)
    assert summary.removed_channels == summary.masked_channels == 4
    assert (small(X) - ref).abs().max() < 1e-5
