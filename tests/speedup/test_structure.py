"""The meta-device structure trace gives exactly the real trace's channel groups, and
falls back to a real run where meta tensors cannot go."""
import pytest
import torch
import torchvision
from torch import nn

from prunus.speedup import dependency_groups
from prunus.speedup.copying import shared_copy
from prunus.speedup.structure import meta_copy, trace_structure
from prunus.speedup.trace import trace_model
from tests.speedup.zoo import ZOO, ControlFlow, randomize_norms


def _real(model, x):
    return trace_model(shared_copy(model).eval(), x, constants=False)


def _same_structure(a, b):
    assert list(a.sites) == list(b.sites)
    roots = lambda t, ids: t.uf.roots(ids).tolist()  # noqa: E731
    for name in a.sites:
        sa, sb = a.sites[name], b.sites[name]
        assert (sa.out_ids is None) == (sb.out_ids is None)
        if sa.out_ids is not None:
            assert roots(a, sa.out_ids) == roots(b, sb.out_ids)
        assert [c.in_shape for c in sa.calls] == [c.in_shape for c in sb.calls]
    assert {a.uf.find(i) for i in a.blocked} == {b.uf.find(i) for i in b.blocked}


@pytest.mark.parametrize('name', sorted(ZOO))
def test_zoo_structure_matches_real_trace(name):
    torch.manual_seed(0)
    cls, make_input = ZOO[name]
    model, x = randomize_norms(cls().eval()), make_input()
    _same_structure(trace_structure(model, x), _real(model, x))


@pytest.mark.parametrize('arch', ['resnet18', 'mobilenet_v3_large', 'shufflenet_v2_x1_0',
                                  'densenet121'])
def test_torchvision_structure_on_meta_matches_real_trace(arch):
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    fast = trace_structure(model, x)
    assert fast.output.device.type == 'meta'  # these need no real run
    _same_structure(fast, _real(model, x))
    assert [g.names for g in dependency_groups(model, x)]


def test_value_dependent_model_falls_back_to_a_real_run():
    model = ControlFlow().eval()  # float(x.mean()) cannot run on meta tensors
    x = {'x': torch.randn(1, 3, 12, 12), 'scale': 2.0}
    trace = trace_structure(model, x)
    assert trace.output.device.type == 'cpu'
    _same_structure(trace, _real(model, x))


def test_meta_copy_leaves_model_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    weight, mean = model[0].weight, model[1].running_mean
    copy = meta_copy(model)
    assert copy[0].weight.is_meta and copy[1].running_mean.is_meta
    assert model[0].weight is weight and not weight.is_meta
    assert model[1].running_mean is mean and not mean.is_meta
