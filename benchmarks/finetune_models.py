"""The digits CNNs, data split and training loop of ``finetune_quality.py``."""
from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn


def _cbr(cin: int, cout: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class PlainCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*_cbr(1, 16), *_cbr(16, 32), *_cbr(32, 32, 2),
                                      *_cbr(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x))


class ResidualCNN(nn.Module):
    """Four conv+BatchNorm layers; the last two's output is added to the second's."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Sequential(*_cbr(1, 16))
        self.c2 = nn.Sequential(*_cbr(16, 32, 2))
        self.c3 = nn.Sequential(*_cbr(32, 32))
        self.c4 = nn.Sequential(*_cbr(32, 32)[:2])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.c2(self.c1(x))
        x = torch.relu(x + self.c4(self.c3(x)))
        return self.fc(self.pool(x).flatten(1))


class SeparableCNN(nn.Module):
    """A stem, then depthwise 3x3 + pointwise 1x1 blocks (MobileNet style)."""

    def __init__(self) -> None:
        super().__init__()
        layers = _cbr(1, 32)
        for cin, cout, stride in ((32, 64, 1), (64, 64, 2), (64, 128, 1)):
            layers += _cbr(cin, cin, stride, groups=cin)
            layers += [nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.features(x))


class VGGStyle(nn.Module):
    """Conv + ReLU without BatchNorm, a max-pool, and a hidden Linear before the classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 3, padding=1), nn.ReLU(), nn.Conv2d(24, 48, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten())
        self.hidden = nn.Linear(192, 64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.hidden(self.features(x))))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(*_cbr(cin, cout, stride), *_cbr(cout, cout)[:2])
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetStyle(nn.Module):
    """A stem and three basic blocks, the second with a strided 1x1 projection shortcut."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_cbr(1, 24))
        self.blocks = nn.Sequential(_Basic(24, 24), _Basic(24, 48, 2), _Basic(48, 48))
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


MODELS = {'plain': PlainCNN, 'residual': ResidualCNN, 'separable': SeparableCNN,
          'vgg': VGGStyle, 'resnet': ResNetStyle}


def digits(seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, test): a seeded split of the 1,797 digits, 450 test images."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    return (x[450:], y[450:]), (x[:450], y[:450])


def train(model: nn.Module, data: tuple, epochs: int, lr: float, seed: int,
          schedule: str = 'constant') -> nn.Module:
    """Adam, batch 32, cross-entropy; the same call for every flow. ``schedule``:
    ``'constant'`` learning rate, or ``'cosine'`` decay to zero over the run (per step)."""
    x, y = data
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(y) // 32)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if schedule == 'cosine' else None
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(32):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
            if decay is not None:
                decay.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: tuple) -> float:
    model.eval()
    return float((model(data[0]).argmax(1) == data[1]).float().mean()) * 100
