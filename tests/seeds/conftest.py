"""Models and data for the seed-document tests: sklearn's real digits and a small CNN."""
from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn


class SeedCNN(nn.Module):
    """conv1-bn1-conv2-bn2-pool-fc: the shape of the NNI examples, small enough for CPUs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1))


@pytest.fixture(scope='session')
def digits():
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    return x[:1400], y[:1400], x[1400:], y[1400:]


@pytest.fixture
def loader(digits):
    x, y = digits[0], digits[1]
    return [(x[i:i + 100], y[i:i + 100]) for i in range(0, len(x), 100)]


def train(model, loader, optimizer, epochs=1, hook=None):
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
            if hook is not None:
                hook()


@torch.no_grad()
def accuracy(model, digits):
    model.eval()
    return (model(digits[2]).argmax(1) == digits[3]).float().mean().item()


def trained_cnn(loader, seed=0, epochs=3):
    torch.manual_seed(seed)
    model = SeedCNN()
    train(model, loader, torch.optim.Adam(model.parameters(), lr=1e-2), epochs)
    return model


def zeros_fraction(tensor):
    return float((tensor == 0).float().mean())


def pruned_filters(module):
    """Fraction of output channels whose whole filter is zero."""
    w = module.weight.detach().reshape(module.weight.shape[0], -1)
    return float((w.abs().sum(1) == 0).float().mean())


@pytest.fixture(autouse=True)
def _in_a_scratch_directory(tmp_path, monkeypatch):
    """The snippets write to the working directory as NNI's defaults do (search histories,
    best configs, sensitivity CSVs); keep that out of the checkout."""
    monkeypatch.chdir(tmp_path)
