"""A sped-up model fine-tunes as well as the masked model it equals: the constants that
removed channels leave behind ride on small paths fed by ones (never a channel with
inflated weights), which learn as the masked model's weights on removed inputs and its
removed BatchNorm shifts do."""
import copy

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup
from prunus.layers.torch.constants import OFFSET, PATH, SHIFTS, SOURCE_WEIGHTS


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32),
                                  nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(32, 10))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.a(x)))


@pytest.fixture(scope='module')
def digits():
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def train(model, data, epochs, seed, lr=3e-3):
    x, y = data
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model, data):
    with torch.no_grad():
        return float((model.eval()(data[0]).argmax(1) == data[1]).float().mean()) * 100


def max_weights(model):
    return {n: float(p.detach().abs().max()) for n, p in model.named_parameters() if p.dim() > 1}


FINE_TUNE_SEEDS = (1, 2, 3)


@pytest.mark.parametrize('sparsity', [0.5, 0.75])
def test_sped_up_model_fine_tunes_like_the_masked_model(digits, sparsity):
    train_set, test_set = digits
    torch.manual_seed(0)
    dense = train(Residual(), train_set, 6, seed=0)
    masked = copy.deepcopy(dense)
    x = train_set[0][:8]
    pruner = L1FilterPruner(masked, [{'sparsity': sparsity, 'op_types': ['Conv2d']}],
                            dependency_aware=True, dummy_input=x)
    pruner.compress()
    small = speedup(masked, x, pruner)
    with torch.no_grad():
        assert torch.allclose(small.eval()(test_set[0]), masked.eval()(test_set[0]), atol=1e-4)
    masked_max = max_weights(masked)
    for name, value in max_weights(small).items():  # no weight grows (the paths: K/sum|c|)
        layer = name.removesuffix('.' + PATH).removesuffix('.' + SOURCE_WEIGHTS)
        layer = layer.removesuffix('.weight')
        assert value <= masked_max[layer + '.weight'] + 1e-6, name
    paths = {n: p.detach().clone() for n, p in small.named_parameters()
             if n.endswith((PATH, SOURCE_WEIGHTS, SHIFTS))}
    offsets = {n: b.clone() for n, b in small.named_buffers() if n.endswith(OFFSET)}
    assert any(p.dim() == 4 for p in paths.values()), 'meant to leave paths for padded convs'
    # in train mode too it computes what the masked model computes (BatchNorm batch stats)
    batch = train_set[0][:32]
    with torch.no_grad():
        assert torch.allclose(small.train()(batch), masked.train()(batch), atol=1e-4)
    removal = accuracy(small, test_set)

    # one fine-tune of a 75%-pruned net swings by several points with the data order, so
    # the two are compared on the mean of a few fine-tunes, each from the same start
    tuned = {'masked': [], 'small': []}
    for seed in FINE_TUNE_SEEDS:
        for key, start in (('masked', masked), ('small', small)):
            model = train(copy.deepcopy(start), train_set, 4, seed=seed)
            tuned[key].append((model, accuracy(model, test_set)))
    small = tuned['small'][0][0]
    for name, before in paths.items():  # fed by ones: it learns a bias, not a channel
        after = dict(small.named_parameters())[name]
        assert not torch.equal(after, before)
        if name.endswith(PATH):  # K / sum|c|; the kept weights on removed inputs train freely
            assert float(after.detach().abs().max()) <= max(masked_max.values())
    for name, before in offsets.items():  # stale eval statistics are forgotten
        after = dict(small.named_buffers())[name]
        assert float(after.abs().max()) <= 0.01 * float(before.abs().max())
    acc_small = sum(a for _, a in tuned['small']) / len(FINE_TUNE_SEEDS)
    acc_masked = sum(a for _, a in tuned['masked']) / len(FINE_TUNE_SEEDS)
    assert acc_small >= acc_masked - 0.5, {k: [a for _, a in v] for k, v in tuned.items()}
    assert acc_small > removal + 20.0
