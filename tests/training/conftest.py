"""Fixtures of the training-aware pruning tests."""
from __future__ import annotations

import pytest
import torch

from prunus.testing.digits import Digits, accuracy, make_model, train_epoch


@pytest.fixture(scope='session')
def digits() -> Digits:
    return Digits(seed=0)


@pytest.fixture(scope='session')
def dense_accuracy(digits):
    """Accuracy of the dense CNN after DENSE_EPOCHS epochs, by seed (cached)."""
    cache = {}

    def get(seed: int, epochs: int) -> float:
        if (seed, epochs) not in cache:
            model = make_model(seed)
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
            for epoch in range(epochs):
                train_epoch(model, optimizer, digits, epoch)
            cache[seed, epochs] = accuracy(model, digits)
        return cache[seed, epochs]
    return get
