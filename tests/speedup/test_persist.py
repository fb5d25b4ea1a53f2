"""Saving and reloading sped-up models: weights_only files rebuilt on a fresh instance."""
import pytest
import torch
import torchvision
from torch import nn

from prunus.speedup import load, save, speedup
from tests.speedup.zoo import ZOO, l1_masks, max_rel_error, randomize_norms, run


def _shrink(factory, inputs, seed=0):
    torch.manual_seed(seed)
    model = randomize_norms(factory().eval())
    small = speedup(model, inputs, l1_masks(model))
    return model, small


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_round_trip_same_outputs(name, tmp_path):
    factory, make_inputs = ZOO[name]
    inputs = make_inputs()
    _, small = _shrink(factory, inputs)
    path = tmp_path / 'small.pt'
    save(small, path)
    torch.manual_seed(123)  # the fresh instance gets other random weights
    again = load(path, factory()).eval()
    with torch.no_grad():
        assert max_rel_error(run(small, inputs), run(again, inputs)) == 0.0
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in small.parameters())


def test_resnet_with_folded_biases_loads_with_weights_only(tmp_path):
    x = torch.randn(2, 3, 64, 64)
    model, small = _shrink(lambda: torchvision.models.resnet18(weights=None), x)
    added = [n for n, _ in small.named_parameters() if n not in dict(model.named_parameters())]
    # constant paths on convs that had none: the case a plain state_dict can't hold; their
    # constants learn from one vector of removed shifts, shared by every layer reading it
    assert any(n.endswith('source_weights') for n in added)
    shifts = {id(m.removed_shifts) for m in small.modules() if 'removed_shifts' in m._parameters}
    assert len(shifts) == 1
    path = tmp_path / 'small.pt'
    save(small, path)
    blob = torch.load(path, weights_only=True)
    assert set(blob['state_dict']) == set(small.state_dict())
    again = load(path, torchvision.models.resnet18(weights=None)).eval()
    with torch.no_grad():
        assert torch.equal(small(x), again(x))
    assert again.layer1[0].conv1.out_channels == small.layer1[0].conv1.out_channels
    assert again.layer1[0].bn1.num_features == small.layer1[0].bn1.num_features
    assert again.training is False
    params = dict(again.named_parameters())  # the paths still learn after a reload
    assert all(params[n].requires_grad for n in added)
    assert len({id(m.removed_shifts) for m in again.modules()
                if 'removed_shifts' in m._parameters}) == 1  # still one vector, still shared


def test_reloaded_model_trains_and_keeps_tied_weights(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.mid = nn.Linear(6, 6)
            self.out = nn.Linear(6, 10, bias=False)
            self.out.weight = self.emb.weight
            self.register_buffer('scale', torch.ones(1), persistent=False)

        def forward(self, t):
            return self.out(torch.relu(self.mid(self.emb(t)))) * self.scale

    t = torch.randint(0, 10, (3, 4))
    model = Tied().eval()
    small = speedup(model, t, {'mid': {'weight': torch.ones(6, 6)}})
    small.scale.fill_(2.0)
    save(small, tmp_path / 'tied.pt')
    again = load(tmp_path / 'tied.pt', Tied())
    assert again.out.weight is again.emb.weight
    assert float(again.scale) == 2.0 and 'scale' not in again.state_dict()
    assert torch.equal(small(t), again(t))
    opt = torch.optim.SGD(again.parameters(), lr=0.1)
    again(t).sum().backward()
    opt.step()
    assert again.out.weight is again.emb.weight


def test_wrong_architecture_or_file_is_rejected_and_model_untouched(tmp_path):
    x = torch.randn(1, 3, 12, 12)
    factory = ZOO['residual_add'][0]
    _, small = _shrink(factory, x)
    save(small, tmp_path / 'small.pt')
    other = ZOO['concat'][0]()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match='saved from another architecture'):
        load(tmp_path / 'small.pt', other)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    torch.save({'a': torch.ones(1)}, tmp_path / 'plain.pt')
    with pytest.raises(ValueError, match='is not a file written by prunus.speedup.save'):
        load(tmp_path / 'plain.pt', factory())
    with pytest.raises(FileNotFoundError, match='No saved model at'):
        load(tmp_path / 'missing.pt', factory())
    with pytest.raises(TypeError, match='needs a torch.nn.Module'):
        save('model', tmp_path / 'x.pt')


def test_masked_model_must_be_stripped_first(tmp_path):
    from prunus.compression.torch import L1FilterPruner
    model = ZOO['residual_add'][0]()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}]).compress()
    with pytest.raises(ValueError, match='still has prunus masks attached'):
        save(model, tmp_path / 'm.pt')


def test_shrunken_model_exports_with_torch_export():
    x = torch.randn(2, 3, 12, 12)
    _, small = _shrink(ZOO['se_gate'][0], x)
    program = torch.export.export(small, (x,))
    with torch.no_grad():
        assert max_rel_error(small(x), program.module()(x)) < 1e-6
