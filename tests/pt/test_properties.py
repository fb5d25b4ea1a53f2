"""Property tests (hypothesis) of what users hand in: any config_list and any mask dict
either works or raises one of the documented types (ValueError, TypeError) with a
one-line message, and a refused input leaves the model byte-identical."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from prunus.compression.config import KEY_RULES
from prunus.compression.torch import L1FilterPruner, LevelPruner, apply_compression_results, apply_masks
from prunus.speedup import SpeedupError, speedup

from .helpers import model_bytes

DOCUMENTED = (ValueError, TypeError)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 6, 3, padding=1), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))


X = torch.randn(2, 3, 4, 4)
NAMES = ['0', '1', '3', '5', '', 'conv', 'Conv2d']

values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8), st.lists(st.sampled_from(NAMES + ['Conv2d', 'conv2d', 'Linear', 'default', '[', '.*']),
                                  max_size=3),
    st.sampled_from([0.0, 0.25, 0.5, 0.99, 1.0, -0.1]))
keys = st.one_of(st.sampled_from(sorted(KEY_RULES)), st.text(max_size=6))
entries = st.dictionaries(keys, values, max_size=4)
configs = st.one_of(st.lists(entries, max_size=3), values, entries)


def _refused(run, model):
    before = model_bytes(model)
    try:
        run()
    except DOCUMENTED as exc:
        text = str(exc)
        assert text and '\n' not in text, text
        assert model_bytes(model) == before
        return True
    return False


@SETTINGS
@given(config=configs, pruner=st.sampled_from([L1FilterPruner, LevelPruner]))
def test_any_config_list_works_or_is_refused_cleanly(config, pruner):
    model = _net()
    _refused(lambda: pruner(model, config).compress(), model)


def _mask_arrays(shape):
    dtypes = st.sampled_from([torch.float32, torch.float64, torch.bool, torch.int64, torch.float16])
    fill = st.sampled_from([0.0, 1.0, 0.5, 2.0, -1.0, math.nan, math.inf])

    @st.composite
    def build(draw):
        dims = draw(st.sampled_from([shape, shape[:-1], (1,), shape[::-1]]))
        dtype = draw(dtypes)
        base = torch.randint(0, 2, dims).to(dtype)
        if draw(st.booleans()) and base.numel():
            flat = base.reshape(-1).to(torch.float64)
            flat[draw(st.integers(0, base.numel() - 1))] = draw(fill)
            base = flat.reshape(dims).to(dtype) if dtype.is_floating_point else flat.reshape(dims).to(torch.float64)
        return base
    return build()


params = {'0': {'weight': (4, 3, 3, 3), 'bias': (4,)}, '3': {'weight': (6, 4, 3, 3), 'bias': (6,)},
          '5': {'weight': (3, 96), 'bias': (3,)}}


@st.composite
def mask_dicts(draw):
    masks = {}
    for name in draw(st.lists(st.sampled_from(['0', '3', '5', '1', 'x']), max_size=3, unique=True)):
        shapes = params.get(name, {'weight': (2, 2)})
        chosen = draw(st.lists(st.sampled_from(sorted(shapes) + ['kernel']), min_size=1, max_size=2, unique=True))
        masks[name] = {p: draw(_mask_arrays(shapes.get(p, (2,)))) for p in chosen}
    return masks


def _valid(masks) -> bool:
    for name, entry in masks.items():
        for pname, mask in entry.items():
            if name not in params or pname not in params[name] or tuple(mask.shape) != params[name][pname]:
                return False
            values = mask.double()
            if not bool(((values == 0) | (values == 1)).all()):
                return False
    return True


@SETTINGS
@given(masks=mask_dicts(), entry=st.sampled_from(['apply_masks', 'apply_compression_results']))
def test_any_mask_dict_is_applied_exactly_or_refused_cleanly(masks, entry):
    model = _net()
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    run = {'apply_masks': lambda: apply_masks(model, masks),
           'apply_compression_results': lambda: apply_compression_results(model, masks)}[entry]
    refused = _refused(run, model)
    assert refused == (not _valid(masks))
    if not refused:
        for name, entry_masks in masks.items():
            for pname, mask in entry_masks.items():
                key = f'{name}.{pname}'
                expected = weights[key] * mask.to(weights[key].dtype)
                assert torch.equal(model.state_dict()[key], expected)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(masks=mask_dicts())
def test_speedup_with_any_masks_is_exact_or_refused(masks):
    model = _net().eval()
    before = model_bytes(model)
    try:
        small = speedup(model, X, masks)
    except DOCUMENTED + (SpeedupError,) as exc:
        assert str(exc) and '\n' not in str(exc)
        assert not _valid(masks) or isinstance(exc, SpeedupError)
    else:
        assert _valid(masks)
        masked = _net().eval()
        apply_masks(masked, masks)
        with torch.no_grad():
            ref, out = masked(X), small(X)
        assert torch.isfinite(out).all()
        assert (ref - out).abs().max() <= 1e-4 * max(1e-3, float(ref.abs().max()))
    assert model_bytes(model) == before


if __name__ == '__main__':  # pragma: no cover
    pytest.main([__file__])
