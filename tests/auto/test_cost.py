"""CostModel: its closed-form FLOPs agree with the sped-up model's."""
import pytest
import torch
from torch import nn

from prunus.compression.torch.auto import CostModel, pruned_flops
from prunus.compression.torch.auto.base import channel_masks, follow
from prunus.compression.torch.auto.cost import removable_alone

from .models import example_input, tiny_model


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        return self.fc((x + self.b(torch.relu(self.a(x)))).mean(dim=(2, 3)))


def _masks(model, allocation, followers):
    masks, modules = {}, dict(model.named_modules())
    for name, sparsity in allocation.items():
        count = modules[name].out_channels
        keep = torch.ones(count, dtype=torch.bool)
        keep[:round(sparsity * count)] = False
        masks[name] = channel_masks(modules[name], keep)
        masks.update({f: channel_masks(modules[f], follow(keep, i)) for f, i in followers[name].items()})
    return masks


@pytest.mark.parametrize('allocation', [{'conv1': 0.5}, {'conv2': 0.25, 'conv3': 0.75},
                                        {'conv1': 0.125, 'conv2': 0.5, 'conv3': 0.5}])
def test_estimate_equals_the_speedup(allocation):
    model, x = tiny_model(), example_input()
    cost = CostModel(model, x, ['conv1', 'conv2', 'conv3', 'fc'])
    assert cost.useful == ['conv1', 'conv2', 'conv3']
    assert cost.followers['conv1'].keys() == {'bn1'}
    assert cost.flops(allocation) == pruned_flops(model, x, _masks(model, allocation, cost.followers))


def test_residual_tied_layers_and_the_output_are_not_removable_alone():
    model = Residual()
    assert list(removable_alone(model, torch.randn(1, 3, 6, 6), ['stem', 'a', 'b', 'fc'])) == ['a']


def test_a_dummy_input_it_cannot_batch_is_rejected():
    with pytest.raises(TypeError, match='needs dummy_input as a batched tensor'):
        CostModel(tiny_model(), 'pixels', ['conv1'])


def test_concat_followers_keep_the_other_inputs_channels():
    from tests.pt.zoo import build
    model, x = build('concat')
    cost = CostModel(model, x, ['a', 'b'])
    index = cost.followers['a']['bn']
    assert (index[:6] == torch.arange(6)).all() and (index[6:] == -1).all()
    keep = torch.tensor([False, True, True, True, True, False])
    assert follow(keep, index).tolist() == keep.tolist() + [True] * 10
    assert cost.flops({'a': 0.5}) == pruned_flops(model, x, _masks(model, {'a': 0.5}, cost.followers))


def test_a_shared_module_is_not_removable_alone():
    from tests.pt.zoo import build
    model, x = build('shared_module')
    assert 'conv' not in removable_alone(model, x, ['conv'])


def test_integer_inputs_are_probed_with_random_ids():
    from tests.pt.zoo import build
    model, x = build('embedding_linear')
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert CostModel(model, x, names).total_flops > 0
