"""Tiny models named by topology, each with an example input."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class LinearLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, 5)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class ConvBnReluConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


class ResidualAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.relu(x + y).mean(dim=(2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 6, 1), nn.Conv2d(3, 10, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))).flatten(1)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.pw1 = nn.Conv2d(3, 8, 1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.pw2 = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        return self.pw2(F.relu6(self.bn(self.dw(self.pw1(x))))).mean(dim=(2, 3))


class GroupedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4)
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.grouped(F.relu(self.conv1(x))).mean(dim=(2, 3)))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 4, 10), nn.Linear(10, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(torch.flatten(F.relu(self.conv(x)), 1))))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 8, 3, padding=1), nn.Conv1d(8, 6, 3)
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        return self.c2(F.relu(self.bn(self.c1(x)))).mean(dim=2)


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.bn, self.c2 = nn.Conv3d(2, 6, 3, padding=1), nn.BatchNorm3d(6), nn.Conv3d(6, 4, 1)

    def forward(self, x):
        return self.c2(F.relu(self.bn(self.c1(x)))).mean(dim=(2, 3, 4))


class ConvTransposeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.up_grouped = nn.ConvTranspose2d(6, 4, 3, padding=1, groups=2)

    def forward(self, x):
        return self.up_grouped(F.relu(self.up(F.relu(self.down(x))))).mean(dim=(2, 3))


class EmbeddingLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, tokens):
        return self.fc(self.embed(tokens).mean(dim=1))


class SharedModule(nn.Module):
    """The same conv applied twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv(F.relu(self.conv(x))).mean(dim=(2, 3)))


ZOO = {
    'linear_linear': (LinearLinear, lambda: torch.randn(4, 12)),
    'conv_bn_relu_conv': (ConvBnReluConv, lambda: torch.randn(2, 3, 8, 8)),
    'residual_add': (ResidualAdd, lambda: torch.randn(2, 3, 8, 8)),
    'concat': (Concat, lambda: torch.randn(2, 3, 6, 6)),
    'depthwise': (Depthwise, lambda: torch.randn(2, 3, 6, 6)),
    'grouped_conv': (GroupedConv, lambda: torch.randn(2, 4, 6, 6)),
    'flatten_linear': (FlattenLinear, lambda: torch.randn(2, 3, 6, 6)),
    'conv1d': (Conv1dNet, lambda: torch.randn(3, 4, 10)),
    'conv3d': (Conv3dNet, lambda: torch.randn(2, 2, 4, 4, 4)),
    'conv_transpose': (ConvTransposeNet, lambda: torch.randn(2, 3, 8, 8)),
    'embedding_linear': (EmbeddingLinear, lambda: torch.randint(0, 20, (4, 5))),
    'shared_module': (SharedModule, lambda: torch.randn(2, 4, 6, 6)),
}


def build(name: str):
    cls, make_input = ZOO[name]
    return cls(), make_input()
