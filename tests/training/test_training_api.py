"""The hooks API on the digits CNN: exact targets at end_step, N:M, masks zero every step."""
from __future__ import annotations

import pytest
import torch

from prunus.compression import allocation
from prunus.compression.torch import (Pruning, WeightPruningConfig, apply_masks, get_masks, is_two_four,
                                      prepare_pruning, semi_structured, semi_structured_available,
                                      to_semi_structured)
from prunus.compression.torch.criteria import matrix_view

from prunus.testing.digits import make_model, train_epoch


def assert_masked_weights_zero(model):
    for name, module in model.named_modules():
        mask = getattr(module, 'weight_mask', None)
        if mask is not None:
            assert not module.weight.detach()[mask == 0].any(), name


def pruned(masks, names):
    return sum(int((masks[n]['weight'] == 0).sum()) for n in names)


@pytest.mark.parametrize('criterion', ['magnitude', 'gradient', 'snip', 'snip_momentum'])
@pytest.mark.parametrize('decay', ['linear', 'cos', 'exp', 'cube'])
def test_iterative_schedule_hits_target_exactly_at_end_step(digits, criterion, decay):
    torch.manual_seed(1)
    model = make_model(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    config = WeightPruningConfig(target_sparsity=0.8, pruning_type=criterion, pattern='unstructured',
                                 start_step=3, end_step=17, pruning_frequency=4, pruning_scope='local',
                                 sparsity_decay_type=decay, excluded_op_names=['conv1'])
    pruning = Pruning(config, model)
    (group,) = pruning.groups
    seen = []
    original = group.update

    def record(sparsity, owner):
        masks = original(sparsity, owner)
        seen.append((pruning.step, sparsity, masks))
        return masks
    group.update = record
    pruning.on_train_begin()
    train_epoch(model, optimizer, digits, 0, hooks=pruning, check=assert_masked_weights_zero)
    assert [s for s, _, _ in seen] == [3, 7, 11, 15]  # INC's grid; 15 is at the target
    for step, sparsity, masks in seen:
        assert sparsity == pytest.approx(group.schedule.sparsity_at(step))
        for name, module in group.modules.items():  # exact count in every layer at every update
            assert pruned(masks, [name]) == allocation.prune_count(module.weight.numel(), sparsity)
    assert seen[-1][1] == 0.8


def test_global_scope_exact_total_and_per_layer_cap(digits):
    model = make_model(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    prepare_pruning(model, WeightPruningConfig(
        target_sparsity=0.9, pattern='4x1', pruning_type='snip_momentum', start_step=0, end_step=10,
        pruning_frequency=5, pruning_scope='global', max_sparsity_ratio_per_op=0.95,
        excluded_op_names=['conv1', 'fc2']), optimizer)
    train_epoch(model, optimizer, digits, 0, check=assert_masked_weights_zero)
    masks = get_masks(model)
    blocks = {n: m['weight'].numel() // 4 for n, m in masks.items()}
    assert pruned(masks, masks) == 4 * allocation.prune_count(sum(blocks.values()), 0.9)
    for name, m in masks.items():
        assert int((m['weight'] == 0).sum()) <= 4 * allocation.prune_count(blocks[name], 0.95)
        rows = matrix_view(m['weight'])  # 4 consecutive output channels share each block
        assert (rows.reshape(-1, 4, rows.shape[1]) == rows.reshape(-1, 4, rows.shape[1])[:, :1]).all()


@pytest.mark.parametrize('scope', ['local', 'global'])
def test_two_four_masks_are_exactly_two_four_in_every_group(digits, scope):
    model = make_model(3)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    config = WeightPruningConfig([{'op_names': ['fc', 'conv2'], 'pattern': '2:4'}], target_sparsity=0.5,
                                 pruning_type='snip_momentum', start_step=0, end_step=12,
                                 pruning_frequency=3, pruning_scope=scope, sparsity_decay_type='cube')
    pruning = Pruning(config, model)
    train_epoch(model, optimizer, digits, 0, hooks=pruning, check=assert_masked_weights_zero)
    masks = get_masks(model)
    assert sorted(masks) == ['conv2', 'fc1', 'fc2']
    for name, m in masks.items():
        groups = matrix_view(m['weight']).reshape(m['weight'].shape[0], -1, 4)
        assert (groups.sum(dim=2) == 2).all(), name
    assert is_two_four(masks['fc1']['weight'])


def test_channel_pattern_removes_whole_output_channels(digits):
    model = make_model(4)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    pruning = Pruning(WeightPruningConfig([{'op_names': ['conv2', 'fc1']}], pattern='1xchannel',
                                          pruning_type='magnitude', target_sparsity=0.25,
                                          pruning_scope='local', start_step=5, end_step=5), model)
    train_epoch(model, optimizer, digits, 0, hooks=pruning)
    for name in ('conv2', 'fc1'):
        rows = matrix_view(get_masks(model)[name]['weight'])
        kept = rows.amax(dim=1)
        assert ((rows == kept[:, None]).all()) and int((kept == 0).sum()) == rows.shape[0] // 4


def test_pattern_lock_keeps_existing_zeros_fixed(digits):
    model = make_model(5)
    with torch.no_grad():
        model.fc1.weight[:, ::2] = 0
    pruning = Pruning(WeightPruningConfig([{'op_names': ['fc1']}], pruning_type='pattern_lock'), model)
    pruning.on_train_begin()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    train_epoch(model, optimizer, digits, 0, hooks=pruning, check=assert_masked_weights_zero)
    assert not model.fc1.weight[:, ::2].any() and model.fc1.weight[:, 1::2].all()


def test_group_lasso_shrinks_blocks_toward_zero(digits):
    norms = {}
    for coeff in (0.0, 0.05):
        model = make_model(6)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        pruning = Pruning(WeightPruningConfig([{'op_names': ['fc1']}], pruning_type='group_lasso',
                                              reg_coeff=coeff, pattern='4x1', start_step=10_000,
                                              end_step=10_000), model)
        train_epoch(model, optimizer, digits, 0, hooks=pruning)
        norms[coeff] = float(model.fc1.weight.detach().norm())
    assert norms[0.05] < 0.8 * norms[0.0]


def test_gradient_criterion_without_before_step_hook_is_an_error(digits):
    model = make_model(7)
    pruning = Pruning(WeightPruningConfig(pruning_type='snip', pattern='4x1', excluded_op_names=['conv1', 'fc2']), model)
    with pytest.raises(RuntimeError, match="call on_before_optimizer_step\\(\\) after loss.backward"):
        pruning.on_step_end()


def _two_four_linear(cols: int = 128, rows: int = 128) -> torch.nn.Sequential:
    model = torch.nn.Sequential(torch.nn.Linear(cols, rows))
    apply_masks(model, {'0': {'weight': torch.tensor([1.0, 0.0, 1.0, 0.0]).repeat(rows, cols // 4)}})
    return model


def test_semi_structured_refuses_a_cpu_model_and_leaves_it_unchanged():
    model = _two_four_linear()
    before = model[0].weight.detach().clone()
    with pytest.raises(RuntimeError, match="'0' cannot become semi-structured sparse: it is on the CPU; "
                                           'move the model to a CUDA GPU of compute capability >= 8.0 first'):
        to_semi_structured(model)
    assert 'weight_mask' in dict(model[0].named_buffers()) and torch.equal(model[0].weight, before)
    with pytest.raises(ValueError, match='found no nn.Linear with an exact 2:4 weight mask'):
        to_semi_structured(torch.nn.Sequential(torch.nn.Linear(8, 8)))


def test_semi_structured_rules_match_torch():
    """Our dtype/shape table is PyTorch's (sparse side) for the 2:4 dtypes."""
    classes = {'cusparselt': getattr(torch.sparse, 'SparseSemiStructuredTensorCUSPARSELT', None),
               'cutlass': getattr(torch.sparse, 'SparseSemiStructuredTensorCUTLASS', None)}
    for name, cls in classes.items():
        table = getattr(cls, '_DTYPE_SHAPE_CONSTRAINTS', None)
        if table is None:
            pytest.skip('this PyTorch keeps no _DTYPE_SHAPE_CONSTRAINTS table')
        for dtype in semi_structured.DTYPES:
            rule = table[dtype]
            assert semi_structured.MIN_BLOCK[name][dtype] == (rule.sparse_min_rows, rule.sparse_min_cols)
    half = torch.zeros(48, 64, dtype=torch.float16)
    assert semi_structured.weight_problem(half, 'cusparselt') is None
    assert semi_structured.weight_problem(half, 'cutlass') == (
        'has a 48x64 weight; with cutlass and torch.float16 both dimensions must be positive multiples of 32x64')
    assert semi_structured.weight_problem(torch.zeros(64, 64), 'cusparselt').startswith(
        'has torch.float32 weights; the 2:4 format takes float16, bfloat16 or int8')
    if not torch.cuda.is_available():
        assert not semi_structured_available()
        assert semi_structured.unavailable_reason() == (
            'it needs a CUDA GPU of compute capability >= 8.0, and CUDA is not available')


@pytest.mark.skipif(not semi_structured_available(), reason='needs a CUDA GPU with semi-structured sparsity')
def test_semi_structured_conversion_on_gpu():
    model = _two_four_linear().half().cuda()
    x = torch.randn(64, 128, dtype=torch.half, device='cuda')
    dense = model(x)
    to_semi_structured(model)
    assert isinstance(model[0].weight.data, torch.sparse.SparseSemiStructuredTensor)
    assert 'weight_mask' not in dict(model[0].named_buffers())
    assert torch.allclose(model(x), dense, atol=1e-2, rtol=1e-2)
    odd = _two_four_linear(cols=128, rows=40).half().cuda()
    with pytest.raises(RuntimeError, match="'0' cannot become semi-structured sparse: has a 40x128 weight"):
        to_semi_structured(odd)
    assert 'weight_mask' in dict(odd[0].named_buffers())
