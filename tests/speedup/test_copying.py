"""The speedup shares tensors with the user's model while it works, never afterwards, and
never writes into them: the model, its masks and their optimizer hook stay intact."""
import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup
from prunus.speedup.copying import shared_copy, unshare
from prunus.layers.torch.handlers import LinearHandler
from tests.speedup.zoo import ResidualAdd, l1_masks, randomize_norms

X = torch.randn(1, 3, 12, 12)


def _tensors(model):
    return list(model.parameters()) + list(model.buffers())


def test_result_shares_no_storage_and_model_keeps_its_masks():
    model = randomize_norms(ResidualAdd().eval())
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    pruner.compress()
    before = {k: (v, v.clone()) for k, v in model.state_dict(keep_vars=True).items()}
    small = speedup(model, X, pruner)
    theirs = {t.untyped_storage().data_ptr() for t in _tensors(model)}
    assert not any(t.untyped_storage().data_ptr() in theirs for t in _tensors(small))
    for key, (obj, value) in before.items():
        now = model.state_dict(keep_vars=True)[key]
        assert now is obj and torch.equal(now, value)
    # the masks on the user's model still hold through an optimizer step
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    model.train()
    model(X).sum().backward()
    opt.step()
    for name, masks in pruner.get_masks().items():
        weight = model.get_submodule(name).weight
        assert not bool((weight * (1 - masks['weight'])).any())


def test_dict_masks_are_not_written_into_the_model():
    model = randomize_norms(ResidualAdd().eval())
    masks = l1_masks(model)
    weights = {n: p.clone() for n, p in model.named_parameters()}
    speedup(model, X, masks)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())


class _InPlaceLinear(LinearHandler):
    """A careless user handler that writes into the weight before pruning."""

    calls = 0

    def prune_in(self, module, keep):
        type(self).calls += 1
        module.weight.data.mul_(2.0)
        module.bias.data.add_(1.0)
        super().prune_in(module, keep)


def test_custom_handler_writing_in_place_cannot_reach_the_model():
    torch.manual_seed(0)
    model = randomize_norms(ResidualAdd().eval())
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    weight, bias = head.weight.clone(), head.bias.clone()
    speedup(model, X, l1_masks(model), custom_handlers={nn.Linear: _InPlaceLinear()},
            tolerance=float('inf'))  # the careless handler changes the result, not the model
    assert _InPlaceLinear.calls >= 1
    assert torch.equal(head.weight, weight) and torch.equal(head.bias, bias)


def test_shared_copy_then_unshare():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    work = shared_copy(model)
    assert work[0].weight is model[0].weight and work is not model
    work[0].weight = nn.Parameter(torch.zeros(4, 3))  # replacing never reaches the model
    assert model[0].weight.abs().sum() > 0
    unshare(work, model)
    ours = {id(t) for t in _tensors(work)}
    assert not ours & {id(t) for t in _tensors(model)}
    assert torch.equal(work[1].running_var, model[1].running_var)


class _Listed(nn.Module):
    """Keeps its layers in a plain list too: only deepcopy maps those references."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)
        self.order = [self.a, self.b]

    def forward(self, x):
        for layer in self.order:
            x = layer(x)
        return x


@pytest.mark.parametrize('model', [nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)),
                                   _Listed()], ids=['plain', 'module_in_a_list'])
def test_shared_copy_owns_every_module_it_reaches(model):
    work = shared_copy(model)
    mine = set(map(id, model.modules()))
    assert not any(id(m) in mine for m in work.modules())
    if isinstance(work, _Listed):
        assert work.order[0] is work.a and work.order[1] is work.b
    assert work.a.weight is model.a.weight if isinstance(work, _Listed) else \
        work[0].weight is model[0].weight
    work_out = work(torch.ones(1, 4))
    assert torch.equal(work_out, model(torch.ones(1, 4)))
