"""Tiny models, one per channel-dependency pattern, and helpers shared by speedup tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunus.testing.speedup import (PRODUCERS, l1_masks, masked_copy, max_rel_error,  # noqa: F401
                                    randomize_norms, run)


def conv_bn(cin, cout, k=3, **kw):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False, **kw),
                         nn.BatchNorm2d(cout), nn.ReLU())


class Head(nn.Module):
    def __init__(self, c, n=5):
        super().__init__()
        self.fc = nn.Linear(c, n)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class ResidualAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = Head(16)

    def forward(self, x):
        x = self.stem(x)
        return self.head(F.relu(torch.add(x, self.a(x))))


class SEGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.fc1, self.fc2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 1)
        self.out = nn.Conv2d(16, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        x = self.stem(x)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))
        return self.head(self.out(x * s))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 8), conv_bn(3, 12, 1)
        self.c = conv_bn(20, 16)
        self.head = Head(16)

    def forward(self, x):
        return self.head(self.c(torch.cat([self.a(x), self.b(x)], 1)))


class SplitChunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 1)
        self.a, self.b = conv_bn(8, 8), conv_bn(8, 8)
        self.c = conv_bn(16, 12)
        self.head = Head(6)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        y = self.c(torch.cat([self.a(a), self.b(b)], 1))
        p, q = torch.split(y, 6, dim=1)
        return self.head(p + q)


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.expand = conv_bn(3, 16, 1)
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False),
                                nn.BatchNorm2d(16), nn.ReLU6())
        self.project = conv_bn(16, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.project(self.dw(self.expand(x))))


class GroupedConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 1)
        self.g = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16),
                               nn.ReLU())
        self.out = conv_bn(16, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.out(self.g(self.stem(x))))


class FlattenLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.fc1, self.fc2 = nn.Linear(8 * 9, 16), nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(self.stem(x)).view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class Permute(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.mix = nn.Linear(8, 12)
        self.out = nn.Conv2d(12, 6, 1)
        self.head = Head(6)

    def forward(self, x):
        y = self.mix(self.stem(x).permute(0, 2, 3, 1)).transpose(1, 3).transpose(2, 3)
        return self.head(self.out(F.gelu(y)))


class Interpolate(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.mid = conv_bn(8, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        y = F.interpolate(F.max_pool2d(self.stem(x), 2), scale_factor=2, mode='bilinear')
        return self.head(self.mid(F.avg_pool2d(y, 2)))


class GroupNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(4, 16)
        self.out = nn.Conv2d(16, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.out(F.silu(self.gn(self.conv(x)))))


class LayerNormChannels(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ln = nn.LayerNorm(8)
        self.hidden = nn.Conv2d(8, 16, 1)
        self.out = nn.Conv2d(16, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        y = self.ln(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(self.out(F.relu(self.hidden(y))))


class PReLUNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.PReLU(8)
        self.out = nn.Conv2d(8, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.out(self.act(self.conv(x))))


class Activations(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.Hardswish(),
                               nn.SiLU(), nn.GELU(), nn.ELU(), nn.LeakyReLU(), nn.Mish(),
                               nn.Softplus(), nn.Tanh(), nn.Hardtanh())
        self.out = nn.Conv2d(8, 8, 1)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.out(self.a(x)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(3, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
                                  nn.Conv1d(8, 8, 1), nn.InstanceNorm1d(8, affine=True))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.body(x.flatten(2)).mean(-1))


class Conv3dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
                                  nn.Conv3d(8, 8, 1), nn.BatchNorm3d(8), nn.ReLU())
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.body(x.unsqueeze(1)).mean((2, 3, 4)))


class ConvTranspose(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(8, 8, 2, stride=2), nn.BatchNorm2d(8),
                                nn.ReLU())
        self.out = nn.ConvTranspose2d(8, 4, 3, padding=1)

    def forward(self, x):
        return self.out(self.up(self.down(x)))


class EmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 16)
        self.fc1, self.fc2 = nn.Linear(16, 12), nn.Linear(12, 4)

    def forward(self, tokens):
        return self.fc2(F.relu(self.fc1(self.emb(tokens))))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(6, 16)
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 16))
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.fc(h + self.mlp(h))


class DictOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv_bn(3, 8)
        self.seg = nn.Conv2d(8, 2, 1)
        self.cls = nn.Linear(8, 3)

    def forward(self, x):
        f = self.body(x)
        return {'seg': self.seg(f), 'logits': (self.cls(f.mean((2, 3))),)}


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = conv_bn(3, 8), conv_bn(3, 8)
        self.head = Head(8)

    def forward(self, x, y):
        return self.head(self.a(x) * 0.5 + self.b(y))


class SharedModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.block = conv_bn(8, 8)
        self.head = Head(8)

    def forward(self, x):
        return self.head(self.block(self.block(self.stem(x))))


class ControlFlow(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.pos, self.neg = conv_bn(8, 8), conv_bn(8, 8, 1)
        self.head = Head(8)

    def forward(self, x, scale: float = 1.0):
        y = self.stem(x) * scale
        for _ in range(int(x.shape[-1] > 4) + 1):
            y = self.pos(y) if float(x.mean()) > -1e9 else self.neg(y)
        return self.head(y)


IMG = (1, 3, 12, 12)
ZOO = {
    'residual_add': (ResidualAdd, lambda: torch.randn(IMG)),
    'se_gate': (SEGate, lambda: torch.randn(IMG)),
    'concat': (Concat, lambda: torch.randn(IMG)),
    'split_chunk': (SplitChunk, lambda: torch.randn(IMG)),
    'depthwise': (Depthwise, lambda: torch.randn(IMG)),
    'grouped_conv': (GroupedConv, lambda: torch.randn(IMG)),
    'flatten_linear': (FlattenLinear, lambda: torch.randn(IMG)),
    'permute': (Permute, lambda: torch.randn(IMG)),
    'interpolate': (Interpolate, lambda: torch.randn(IMG)),
    'groupnorm': (GroupNormNet, lambda: torch.randn(IMG)),
    'layernorm_channels': (LayerNormChannels, lambda: torch.randn(IMG)),
    'prelu': (PReLUNet, lambda: torch.randn(IMG)),
    'activations': (Activations, lambda: torch.randn(IMG)),
    'conv1d': (Conv1dNet, lambda: torch.randn(2, 3, 4, 4)),
    'conv3d': (Conv3dNet, lambda: torch.randn(2, 4, 5, 6)),
    'convtranspose': (ConvTranspose, lambda: torch.randn(IMG)),
    'embedding': (EmbeddingNet, lambda: torch.randint(0, 20, (2, 7))),
    'attention': (Attention, lambda: torch.randn(2, 5, 6)),
    'dict_output': (DictOutput, lambda: torch.randn(IMG)),
    'two_inputs': (TwoInputs, lambda: (torch.randn(IMG), torch.randn(IMG))),
    'module_used_twice': (SharedModule, lambda: torch.randn(IMG)),
    'control_flow': (ControlFlow, lambda: {'x': torch.randn(IMG), 'scale': 2.0}),
}
