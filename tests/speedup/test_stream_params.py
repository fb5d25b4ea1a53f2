"""A parameter added to a labelled stream (a position embedding) follows its channels;
``as_strided`` passes labels only when it is a memory-format fix-up."""
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, apply_masks, get_masks
from prunus.speedup import speedup


class PositionAdded(nn.Module):
    def __init__(self, restride=None):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.pos = nn.Parameter(torch.randn(1, 5, 8))
        self.b = nn.Linear(8, 3)
        self.restride = restride

    def forward(self, x):
        h = self.a(x) + self.pos
        if self.restride == 'same':  # the layout it already has: nothing moves
            h = h.contiguous().as_strided(h.shape, (40, 8, 1))
        elif self.restride == 'transpose':  # reads the channels in another order
            h = h.contiguous().as_strided((h.shape[0], 5, 8), (40, 1, 5))
        return self.b(h)


def _prune(restride=None, mask_param=True):
    torch.manual_seed(0)
    model = PositionAdded(restride).eval()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['a']}]).compress()
    if mask_param:
        keep = get_masks(model)['a']['bias']
        apply_masks(model, {'': {'pos': keep.view(1, 1, -1).expand(1, 5, 8).clone()}})
    x = torch.randn(2, 5, 6)
    expected = model(x)
    small = speedup(model, (x,))
    torch.testing.assert_close(small(x), expected)
    return small


def test_a_masked_position_embedding_is_cut_along_its_channel_dim():
    small = _prune()
    assert small.a.out_features == 4 and small.b.in_features == 4
    assert small.pos.shape == (1, 5, 4)


def test_unmasked_position_channels_are_kept_not_folded_wrongly():
    small = _prune(mask_param=False)  # a removed channel would still carry pos values
    assert small.a.out_features == 8 and small.pos.shape == (1, 5, 8)


class PooledChannelsLast(nn.Module):
    """Channels-last features pooled to 1x1 (Swin's head): the pooling kernel restrides its
    output in place."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.b = nn.Linear(8, 3)

    def forward(self, x):
        return self.b(self.pool(self.a(x).permute(0, 3, 1, 2)).flatten(1))


def test_pooling_to_one_by_one_from_channels_last_lets_channels_go():
    torch.manual_seed(0)
    model = PooledChannelsLast().eval()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['a']}]).compress()
    x = torch.randn(2, 4, 4, 6)
    expected = model(x)
    small = speedup(model, (x,))
    torch.testing.assert_close(small(x), expected)
    assert small.a.out_features == 4 and small.b.in_features == 4


def test_a_user_as_strided_keeps_the_channels():
    small = _prune('same')  # the strides are the user's constants: they would not follow
    assert small.a.out_features == 8 and small.b.in_features == 8
    small = _prune('transpose')
    assert small.a.out_features == 8 and small.b.in_features == 8
