"""Wanda and SparseGPT on whole models: HF decoders and encoders built from configs, the
block-by-block propagation, exact counts and N:M structure, both APIs, bad input."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunus.compression import prune_count
from prunus.compression.torch import (Pruning, SparseGPTPruner, WandaPruner, WeightPruningConfig, get_masks,
                                      is_two_four, prepare_pruning, strip, to_semi_structured)
from prunus.compression.torch.calibration import find_blocks
from prunus.compression.torch.layer_inputs import is_hf_conv1d

transformers = pytest.importorskip('transformers')

PRUNERS = [WandaPruner, SparseGPTPruner]


def gpt2():
    config = transformers.GPT2Config(n_layer=3, n_embd=32, n_head=4, vocab_size=64, n_positions=32,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def llama():
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=64,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return transformers.LlamaForCausalLM(config)


def bert():
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=4, vocab_size=64)
    return transformers.BertModel(config)


MODELS = {'gpt2': (gpt2, 'lm_head'), 'llama': (llama, 'lm_head'), 'bert': (bert, 'pooler.dense')}


def batches(n=3, seq=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{'input_ids': torch.randint(0, 64, (2, seq), generator=g),
             'attention_mask': torch.ones(2, seq, dtype=torch.long)} for _ in range(n)]


def build(name):
    torch.manual_seed(0)
    factory, head = MODELS[name]
    return factory().eval(), head


def config(head, **extra):
    return [{'sparsity': 0.5, 'op_types': ['default'], **extra}, {'exclude': True, 'op_names': [head]}]


def matrix(module, mask):
    return mask.t() if is_hf_conv1d(module) else mask


@pytest.mark.parametrize('model_name', sorted(MODELS))
@pytest.mark.parametrize('cls', PRUNERS)
@pytest.mark.parametrize('pattern', ['unstructured', '2:4'])
def test_hf_models_are_pruned_exactly_block_by_block(model_name, cls, pattern):
    model, head = build(model_name)
    x = batches(1, seed=9)[0]
    with torch.no_grad():
        dense = model(**x)[0]
    pruner = cls(model, config(head), batches(), pattern=pattern, progress=False)
    assert len(find_blocks(model, pruner.targets, None, '')) >= 2
    model = pruner.compress()
    modules = dict(model.named_modules())
    masks = get_masks(model)
    assert set(masks) == set(pruner.targets) and head not in masks and len(masks) >= 12
    for name, per_param in masks.items():
        mask = per_param['weight']
        assert int((mask == 0).sum()) == prune_count(mask.numel(), 0.5)
        if pattern == '2:4':
            assert is_two_four(matrix(modules[name], mask))
    with torch.no_grad():
        pruned = model(**x)[0]
    assert torch.isfinite(pruned).all()
    assert float((pruned - dense).pow(2).mean() / dense.pow(2).mean()) < 0.5


def test_each_block_is_calibrated_on_the_pruned_blocks_before_it():
    model, head = build('gpt2')
    data = batches()
    full = copy.deepcopy(model)
    WandaPruner(full, config(head), data, progress=False).compress()
    # By hand: prune block 0, then block 1 of that model, then block 2.
    for index in range(3):
        entry = [{'sparsity': 0.5, 'op_names': [n for n, m in model.named_modules()
                                                if n.startswith(f'transformer.h.{index}.') and is_hf_conv1d(m)]}]
        WandaPruner(model, entry, data, progress=False, blocks=False).compress()
    expected, got = get_masks(model), get_masks(full)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name]['weight'], got[name]['weight']), name


def test_wanda_one_pass_scores_every_layer_on_the_dense_model():
    from prunus.compression.torch import obs
    model, head = build('llama')
    data = batches()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != head]
    modules = dict(model.named_modules())
    squares = {n: 0 for n in names}

    def hook(name):
        def record(module, args, output):
            squares[name] = squares[name] + args[0].reshape(-1, args[0].shape[-1]).pow(2).sum(0)
        return record
    handles = [modules[n].register_forward_hook(hook(n)) for n in names]
    with torch.no_grad():
        for batch in data:
            model(**batch, use_cache=False)
    for handle in handles:
        handle.remove()
    expected = {n: obs.wanda_keep(modules[n].weight, squares[n].sqrt(), 0.5, None, 'row') for n in names}
    one_pass, blocks = copy.deepcopy(model), copy.deepcopy(model)
    head_calls = []
    one_pass.lm_head.register_forward_hook(lambda *args: head_calls.append(1))
    WandaPruner(one_pass, config(head), data, progress=False, blocks=False).compress()
    assert len(head_calls) == 1  # after the first batch, each pass stops at the last pruned layer
    WandaPruner(blocks, config(head), data, progress=False).compress()
    got, propagated = get_masks(one_pass), get_masks(blocks)
    for name in names:
        assert torch.equal(got[name]['weight'].bool(), expected[name]), name
    # block by block, the second block sees the pruned first block's outputs: other masks
    later = [n for n in names if n.startswith('model.layers.1.')]
    assert any(not torch.equal(got[n]['weight'], propagated[n]['weight']) for n in later)
    assert all(torch.equal(got[n]['weight'], propagated[n]['weight']) for n in names if n.startswith('model.layers.0.'))


@pytest.mark.parametrize('cls', PRUNERS)
def test_results_are_deterministic_and_offloading_changes_nothing(cls):
    results = []
    for offload in (False, True, False):
        model, head = build('llama')
        cls(model, config(head), batches(), progress=False, device='cpu', offload=offload).compress()
        results.append((get_masks(model), {k: v.clone() for k, v in model.state_dict().items()}))
    for masks, state in results[1:]:
        for name in masks:
            assert torch.equal(masks[name]['weight'], results[0][0][name]['weight'])
        for key in state:
            assert torch.equal(state[key], results[0][1][key])


def test_sparsegpt_updates_weights_and_wanda_does_not_unless_asked():
    for cls, kwargs, changes in ((WandaPruner, {}, False), (WandaPruner, {'update_weights': True}, True),
                                 (SparseGPTPruner, {}, True), (SparseGPTPruner, {'update_weights': False}, False)):
        model, head = build('bert')
        before = copy.deepcopy(model.state_dict())
        cls(model, config(head), batches(), progress=False, **kwargs).compress()
        name = 'encoder.layer.0.intermediate.dense'
        mask = get_masks(model)[name]['weight']
        weight, original = dict(model.named_modules())[name].weight.detach(), before[name + '.weight']
        assert bool((weight[mask == 0] == 0).all())
        assert (not torch.equal(weight[mask == 1], original[mask == 1])) == changes, (cls, kwargs)


def test_calibration_batches_may_be_tensors_tuples_or_dicts():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(6, 8)
    results = []
    for data in ([x], [(x,)], (b for b in [x])):
        fresh = copy.deepcopy(model)
        SparseGPTPruner(fresh, [{'sparsity': 0.5, 'op_types': ['Linear']}], data, progress=False).compress()
        results.append(get_masks(fresh))
    for masks in results[1:]:
        assert all(torch.equal(masks[n]['weight'], results[0][n]['weight']) for n in masks)


def test_strip_and_export_keep_the_pruned_outputs(tmp_path):
    model, head = build('llama')
    model = SparseGPTPruner(model, config(head), batches(), pattern='2:4', progress=False).compress()
    x = batches(1, seed=5)[0]
    with torch.no_grad():
        expected = model(**x)[0]
        plain = strip(copy.deepcopy(model))
        torch.testing.assert_close(plain(**x)[0], expected)
    with pytest.raises(RuntimeError, match='CUDA|cannot become semi-structured'):
        to_semi_structured(model)  # found the exact 2:4 layers; a CPU cannot run the format


@pytest.mark.parametrize('kwargs,error,match', [
    ({'comparison_group': 'column'}, ValueError, "comparison_group must be 'row' or 'layer'"),
    ({'pattern': '4x1'}, ValueError, "prunes 'unstructured' or 'N:M'"),
    ({'block_size': 6, 'pattern': '2:4'}, ValueError, 'multiple of M=4'),
    ({'dampening': 0}, ValueError, 'dampening'),
    ({'update_weights': 'yes'}, TypeError, 'update_weights'),
])
def test_bad_arguments_are_rejected_before_anything_changes(kwargs, error, match):
    model, head = build('bert')
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=match):
        SparseGPTPruner(model, config(head), batches(), progress=False, **kwargs)
    assert not get_masks(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize('entry,data,error,match', [
    ({'sparsity': 0.3, 'pattern': '2:4'}, None, ValueError, r"config_list\[0\]\['sparsity'\] must be 0.5"),
    ({'sparsity': 0.5, 'comparison_group': 'all'}, None, ValueError, r"'row' or 'layer'"),
    ({'sparsity': 0.5}, [], ValueError, 'calibration_data is empty'),
    ({'sparsity': 0.5}, torch.zeros(3), TypeError, 'iterable of batches'),
    ({'sparsity': 0.5}, [3], TypeError, r'calibration_data\[0\]'),
])
def test_bad_config_or_data_is_rejected(entry, data, error, match):
    model, head = build('gpt2')
    with pytest.raises(error, match=match):
        WandaPruner(model, [{**entry, 'op_types': ['default']}], batches() if data is None else data,
                    progress=False)
    assert not get_masks(model)


def test_a_batch_the_model_cannot_take_fails_before_anything_changes():
    model, head = build('gpt2')
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(Exception):
        SparseGPTPruner(model, config(head), [{'input_ids': torch.zeros(2, 4), 'bogus': 1}],
                        progress=False).compress()
    assert not get_masks(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize('pruning_type,cls', [('sparse_gpt', SparseGPTPruner), ('wanda', WandaPruner),
                                              ('sparsegpt', SparseGPTPruner)])
@pytest.mark.parametrize('pattern', ['1x1', '2:4'])
def test_inc_style_api(pruning_type, cls, pattern):
    model, _ = build('gpt2')
    reference = copy.deepcopy(model)
    configs = WeightPruningConfig([{'pruning_type': pruning_type, 'op_names': ['.*'],
                                    'excluded_op_names': ['lm_head', r'\.attn\.c_proj']}],
                                  target_sparsity=0.5, pattern=pattern)
    loader = [(b, torch.zeros(2)) for b in batches()]  # (inputs, labels): labels are dropped
    pruning = prepare_pruning(model, configs, dataloader=loader)
    masks = pruning.get_masks()
    assert pruning.model is model and len(masks) == 9 and not any('attn.c_proj' in n for n in masks)
    names = sorted(masks)
    cls(reference, [{'sparsity': 0.5, 'op_names': names, 'pattern': pattern}], batches(),
        progress=False).compress()
    expected = get_masks(reference)
    assert all(torch.equal(masks[n]['weight'], expected[n]['weight']) for n in names)


def test_inc_style_api_rejects_mixing_and_the_training_api_points_to_prepare_pruning():
    model, _ = build('gpt2')
    mixed = WeightPruningConfig([{'pruning_type': 'sparse_gpt'}, {'pruning_type': 'snip_momentum'}],
                                target_sparsity=0.5, pattern='1x1')
    with pytest.raises(ValueError, match='mix post-training types'):
        prepare_pruning(model, mixed, dataloader=batches())
    post = WeightPruningConfig([{'pruning_type': 'wanda'}], target_sparsity=0.5, pattern='1x1')
    with pytest.raises(ValueError, match=r'dataloader='):
        prepare_pruning(model, post)
    with pytest.raises(ValueError, match=r"prepare_pruning\(model, config, dataloader"):
        Pruning(post, model)
    assert not get_masks(model)


def test_only_one_block_of_statistics_is_alive_at_a_time(monkeypatch):
    from prunus.compression.torch import layer_inputs, post_training
    alive, peak = set(), [0]

    class Counted(layer_inputs.InputStats):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            alive.add(id(self))
            peak[0] = max(peak[0], len(alive))

        def __del__(self):
            alive.discard(id(self))

    monkeypatch.setattr(post_training, 'InputStats', Counted)
    model, head = build('llama')
    SparseGPTPruner(model, config(head), batches(), progress=False).compress()
    per_block = sum(isinstance(m, nn.Linear) for m in model.model.layers[0].modules())
    assert peak[0] == per_block < len(get_masks(model))


@pytest.mark.parametrize('cls', PRUNERS)
def test_grouped_and_plain_convolutions_take_n_m_patterns(cls):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 4))
    data = [torch.randn(3, 4, 6, 6) for _ in range(2)]
    cls(model, [{'sparsity': 0.5, 'op_types': ['Conv2d', 'Linear']}], data, pattern='2:4', progress=False).compress()
    from prunus.compression.torch.criteria import matrix_view
    for name, per_param in get_masks(model).items():
        rows = matrix_view(per_param['weight'])
        assert bool((rows.reshape(rows.shape[0], -1, 4).sum(-1) == 2).all()), name
