"""The shortcuts that keep the pruner and the speedup fast answer as the slow ways did:
the mask value test and one reduction for all probe samples."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner
from prunus.layers.torch import masking
from prunus.speedup.observe import channel_constants

TINY = 2.0 ** -149  # the smallest float32 (a subnormal)


def _exact(values: torch.Tensor) -> tuple[bool, bool]:
    """The element-wise tests: (finite, only 0 and 1)."""
    finite = not values.is_floating_point() or bool(torch.isfinite(values).all())
    return finite, finite and bool(((values == 0) | (values == 1)).all())


CASES = [[0.0, 1.0], [-0.0, 1.0], [], [1.0], [0.0], [0.5], [1e-30], [TINY], [1.0 - 2 ** -24],
         [1.0 + 2 ** -23], [-TINY], [2.0], [-1.0], [float('nan')], [float('inf')],
         [-float('inf')], [0.0, 1.0, float('nan')]]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('values', CASES, ids=str)
def test_the_fast_float_test_agrees_with_the_element_wise_one(values, dtype):
    mask = torch.tensor(values, dtype=torch.float64).to(dtype)
    facts = masking.mask_facts('m', mask)
    assert (facts.finite, facts.binary) == _exact(mask)


@pytest.mark.parametrize('dtype', [torch.int64, torch.int8, torch.uint8])
@pytest.mark.parametrize('values', [[0, 1], [1], [2], [0, 1, 3], []], ids=str)
def test_the_fast_integer_test_agrees_with_the_element_wise_one(values, dtype):
    mask = torch.tensor(values, dtype=torch.int64).to(dtype)
    facts = masking.mask_facts('m', mask)
    assert (facts.finite, facts.binary) == _exact(mask)


DEVICES = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


@pytest.mark.parametrize('device', DEVICES)
def test_a_non_binary_value_past_the_first_chunk_is_found(device):
    mask = torch.ones(5 * masking._CHUNK + 3, device=device)
    assert masking.mask_facts('m', mask).binary
    mask[-1] = 0.75
    assert not masking.mask_facts('m', mask).binary


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3))


def test_a_pruner_mask_written_through_data_is_refused():
    """``.data`` writes bypass version counters: the values themselves are what is checked."""
    pruner = L1FilterPruner(_net(), [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    mask = pruner.calc_masks()['0']['weight']
    mask.data[0] = 0.5
    with pytest.raises(ValueError, match='other than 0 and 1'):
        masking.apply_masks(pruner.bound_model, {'0': {'weight': mask}})


class _HalvingPruner(L1FilterPruner):
    """Writes into its own masks after making them, as a careless subclass might."""

    def generate_masks(self, scores):
        masks = super().generate_masks(scores)
        masks['0']['weight'].mul_(0.5)
        return masks


def test_a_pruner_that_writes_into_its_masks_is_still_refused():
    model = _net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match='other than 0 and 1'):
        _HalvingPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}]).compress()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize('dim', [1, 2, 3])
def test_per_sample_channel_constants_are_each_samples_own(dim):
    x = torch.randn(5, 4, 3, 6)
    x[:, :, :, 2] = 7.0  # constant along the last dim's index 2 in every sample
    x[1] = 3.0  # sample 1 constant everywhere
    x[3, 1] = -2.0
    got = channel_constants(x, dim, per_sample=True)
    want = torch.stack([channel_constants(s, dim - 1) for s in x])
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
