"""A tiny CNN, data and picklable evaluators/fine-tuners shared by the search tests."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


class TinyCNN(nn.Module):
    """conv-bn-relu x3 and a classifier; every conv can lose channels on its own."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.conv3, self.bn3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.fc = nn.Linear(2 * width, 4)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_model(seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN().eval()


def example_input() -> torch.Tensor:
    return torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))


class Fidelity:
    """Score = minus the mean squared difference to the dense model's outputs (picklable)."""

    def __init__(self, model: nn.Module, n: int = 16, shape: tuple[int, ...] = (3, 8, 8)):
        self.x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            self.reference = model.eval()(self.x)
        self.calls = 0

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        self.calls += 1
        return -float(F.mse_loss(model.eval()(self.x), self.reference))


class FineTune:
    """A few SGD steps pulling the model towards the reference outputs (picklable)."""

    def __init__(self, fidelity: Fidelity, steps: int = 2):
        self.fidelity, self.steps = fidelity, steps

    def __call__(self, model: nn.Module) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        for _ in range(self.steps):
            optimizer.zero_grad()
            F.mse_loss(model(self.fidelity.x), self.fidelity.reference).backward()
            optimizer.step()
        model.eval()


class ResidualCNN(nn.Module):
    """Two residual stages joined by a 3x3 transition conv. The stem, ``b1`` (stage 1)
    and ``transition``, ``b2`` (stage 2) are tied through the residual adds; only
    ``a1`` and ``a2`` can lose channels alone, and ``transition`` shrinks only when both
    streams do."""

    def __init__(self, width: int = 16):
        super().__init__()
        def conv_bn(cin: int, cout: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
            return nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout)
        self.stem, self.bn0 = conv_bn(3, width)
        self.a1, self.bn_a1 = conv_bn(width, width)
        self.b1, self.bn_b1 = conv_bn(width, width)
        self.transition, self.bn_t = conv_bn(width, width)
        self.a2, self.bn_a2 = conv_bn(width, width)
        self.b2, self.bn_b2 = conv_bn(width, width)
        self.fc = nn.Linear(width, 4)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = F.relu(x + self.bn_b1(self.b1(F.relu(self.bn_a1(self.a1(x))))))
        x = F.relu(self.bn_t(self.transition(x)))
        x = F.relu(x + self.bn_b2(self.b2(F.relu(self.bn_a2(self.a2(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def residual_model(seed: int = 0) -> ResidualCNN:
    torch.manual_seed(seed)
    model = ResidualCNN().eval()
    # BatchNorm statistics and shifts as after training, so a pruned channel's bias is
    # not zero by accident and the followers' masks matter
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model
