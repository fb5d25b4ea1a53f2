"""The digits CNN of the demo, and a plain training loop the pruning tests share."""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for the 8x8 digits images."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Digits:
    """Train/test tensors of sklearn's digits, split with a fixed seed."""

    def __init__(self, seed: int = 0):
        data = load_digits()
        x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.tensor(data.target, dtype=torch.long)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
        self.x_train, self.y_train, self.x_test, self.y_test = x_tr, y_tr, x_te, y_te

    def batches(self, epoch: int, batch_size: int = 64):
        order = torch.randperm(len(self.x_train), generator=torch.Generator().manual_seed(epoch))
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            yield self.x_train[index], self.y_train[index]

    def steps_per_epoch(self, batch_size: int = 64) -> int:
        return -(-len(self.x_train) // batch_size)


@torch.no_grad()
def accuracy(model: nn.Module, digits: Digits) -> float:
    model.eval()
    correct = (model(digits.x_test).argmax(1) == digits.y_test).float().mean().item()
    model.train()
    return 100.0 * correct


def train_epoch(model, optimizer, digits: Digits, epoch: int, hooks=None, check=None) -> None:
    """One epoch of Adam/SGD training; ``hooks`` is a Pruning object (or None)."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    if hooks is not None:
        hooks.on_epoch_begin(epoch)
    for step, (x, y) in enumerate(digits.batches(epoch)):
        if hooks is not None:
            hooks.on_step_begin(step)
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        if hooks is not None:
            hooks.on_before_optimizer_step()
        optimizer.step()
        if hooks is not None:
            hooks.on_after_optimizer_step()
        if check is not None:
            check(model)
        if hooks is not None:
            hooks.on_step_end()
    if hooks is not None:
        hooks.on_epoch_end()


def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return DigitsCNN()
