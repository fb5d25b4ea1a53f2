"""Every dependency pattern: exact, smaller, same shapes, saves, loads and still trains."""
import io

import pytest
import torch
from torch.utils._pytree import tree_flatten

from prunus.speedup import speedup
from tests.speedup.zoo import ZOO, l1_masks, masked_copy, max_rel_error, randomize_norms, run


@pytest.fixture(params=sorted(ZOO), name='case')
def fixture_case(request):
    torch.manual_seed(0)
    cls, make_input = ZOO[request.param]
    model = randomize_norms(cls().eval())
    return request.param, model, make_input()


def test_exact_and_smaller(case):
    name, model, x = case
    masks = l1_masks(model)
    with torch.no_grad():
        ref = run(masked_copy(model, masks), x)
    small, summary = speedup(model, x, masks, return_summary=True)
    with torch.no_grad():
        out = run(small.eval(), x)
    assert max_rel_error(ref, out) < 1e-4
    assert summary.params_after < summary.params_before
    assert sum(p.numel() for p in small.parameters()) == summary.params_after
    assert summary.flops_after <= summary.flops_before


def test_user_model_untouched(case):
    name, model, x = case
    before = {k: v.clone() for k, v in model.state_dict().items()}
    speedup(model, x, l1_masks(model))
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_save_load_and_train(case):
    name, model, x = case
    small = speedup(model, x, l1_masks(model))
    buffer = io.BytesIO()
    torch.save(small, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    with torch.no_grad():
        assert max_rel_error(run(small.eval(), x), run(loaded.eval(), x)) == 0.0
    loaded.train()
    opt = torch.optim.SGD(loaded.parameters(), lr=0.1)
    before = [p.detach().clone() for p in loaded.parameters()]
    loss = sum(t.float().pow(2).mean() for t in tree_flatten(run(loaded, x))[0])
    loss.backward()
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, loaded.parameters()))
