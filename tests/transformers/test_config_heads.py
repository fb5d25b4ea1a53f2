"""Heads through config_list ('granularity': 'head') on the filter pruners and AGP."""
import pytest
import torch

from prunus.compression import ConfigValueError
from prunus.compression.torch import (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
                                      AGPPruner, FPGMPruner, L1FilterPruner, L2FilterPruner, LevelPruner,
                                      TaylorFOWeightFilterPruner, get_masks)
from prunus.layers.torch.heads import attention_layout
from prunus.layers.torch.modules import PrunedMultiheadAttention
from prunus.speedup import speedup

from .models import HEAD_DIM, HEADS, build, first_tensor

HEAD_ENTRY = {'sparsity': 0.5, 'op_types': ['Linear', 'Conv1D', 'MultiheadAttention'], 'granularity': 'head'}


def _loss(out):
    return first_tensor(out).float().pow(2).mean()


def _kwargs(cls, x):
    if cls is TaylorFOWeightFilterPruner:
        return {'data': [x[0]] * 2, 'criterion': _loss}
    if cls in (ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner):
        return {'data': [x[0]] * 2, 'activation': 'identity'}
    return {}


def _heads_of(model):
    """Head counts of the attention modules, in order."""
    counts = []
    for m in model.modules():
        lay = attention_layout(m)
        if lay is not None or isinstance(m, PrunedMultiheadAttention):  # an MHA that lost heads
            counts.append(m.num_heads if lay is None else lay.num_heads)
    return counts


def _check_exact(model, x):
    with torch.no_grad():
        masked = first_tensor(model(*x))
    small = speedup(model, x)
    with torch.no_grad():
        out = first_tensor(small(*x))
    assert torch.allclose(out, masked, atol=1e-5, rtol=1e-4)
    return small


def _pruned_heads(masks, pruner):
    """Per head target: the heads whose Q/K/V rows and output columns are all masked."""
    found = []
    for t in pruner.head_targets:
        lay = t.group.layout
        dead = torch.ones(lay.num_heads, dtype=torch.bool)
        for s in (lay.q, lay.k, lay.v):
            m = masks[s.module][s.weight].movedim(s.axis, 0)[s.start:s.stop].reshape(lay.num_heads, -1)
            dead &= ~m.bool().any(1)
        cols = masks[lay.out.module][lay.out.weight].movedim(lay.out.axis, 0).reshape(lay.num_heads, -1)
        assert torch.equal(~cols.bool().any(1), dead)  # output columns go with the rows
        found.append(dead.nonzero().flatten().tolist())
    return found


@pytest.mark.parametrize('cls', [L1FilterPruner, L2FilterPruner, FPGMPruner, TaylorFOWeightFilterPruner,
                                 ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner])
def test_every_filter_pruner_masks_whole_heads_and_the_speedup_removes_them(cls):
    model, x = build('bert')
    pruner = cls(model, [HEAD_ENTRY], dummy_input=x, **_kwargs(cls, x))
    pruner.compress()
    masks = get_masks(model)
    assert [len(p) for p in _pruned_heads(masks, pruner)] == [HEADS // 2] * 2
    assert not any('intermediate' in n or 'pooler' in n for n in masks)  # only heads were asked for
    small = _check_exact(model, x)
    assert _heads_of(small) == [HEADS // 2] * 2
    assert small.encoder.layer[0].attention.self.all_head_size == HEADS // 2 * HEAD_DIM


@pytest.mark.parametrize('name,types', [('gpt2', ['GPT2Attention']), ('encoder_stack', ['MultiheadAttention']),
                                        ('torchvision_vit', ['MultiheadAttention']), ('distilbert', ['Linear']),
                                        ('vit', ['Linear'])])
def test_weight_criteria_prune_heads_of_each_layout(name, types):
    model, x = build(name)
    before = sum(p.numel() for p in model.parameters())
    L2FilterPruner(model, [{'sparsity': 0.5, 'op_types': types, 'granularity': 'head'}], dummy_input=x).compress()
    small = _check_exact(model, x)
    assert sum(p.numel() for p in small.parameters()) < before
    assert sorted(set(_heads_of(small))) == [HEADS // 2]


def test_l1_head_scores_are_the_q_k_v_rows_l1_sums():
    model, x = build('bert')
    attn = model.encoder.layer[0].attention.self
    with torch.no_grad():
        for proj in (attn.query, attn.key, attn.value):
            proj.weight[2 * HEAD_DIM:3 * HEAD_DIM] *= 0.01  # head 2 is by far the smallest
    pruner = L1FilterPruner(model, [{'sparsity': 0.25, 'op_names': ['encoder.layer.0.attention.self'],
                                     'granularity': 'head'}], dummy_input=x)
    pruner.compress()
    assert _pruned_heads(get_masks(model), pruner) == [[2]]
    assert len(pruner.head_targets) == 1  # op_names named one attention


def test_total_sparsity_ranks_heads_across_layers_and_keeps_one_each():
    model, x = build('bert')
    with torch.no_grad():
        model.encoder.layer[1].attention.self.query.weight.mul_(0.001)
        model.encoder.layer[1].attention.self.key.weight.mul_(0.001)
        model.encoder.layer[1].attention.self.value.weight.mul_(0.001)
    pruner = L1FilterPruner(model, [{'total_sparsity': 0.5, 'op_types': ['BertSelfAttention'],
                                     'granularity': 'head'}], dummy_input=x)
    pruner.compress()
    pruned = _pruned_heads(get_masks(model), pruner)
    assert sum(map(len, pruned)) == HEADS  # 50% of 8 heads
    assert len(pruned[1]) == HEADS - 1 and len(pruned[0]) == 1  # the small layer keeps one
    _check_exact(model, x)


def test_heads_and_ffn_channels_in_one_config_list():
    model, x = build('bert')
    config = [HEAD_ENTRY, {'sparsity': 0.5, 'op_names_re': [r'.*intermediate\.dense']},
              {'exclude': True, 'op_names': ['encoder.layer.1.attention.self']}]
    pruner = L1FilterPruner(model, config, dummy_input=x)
    pruner.compress()
    assert [t.group.name for t in pruner.head_targets] == ['encoder.layer.0.attention.self']
    small = _check_exact(model, x)
    assert _heads_of(small) == [HEADS // 2, HEADS]
    assert small.encoder.layer[1].intermediate.dense.out_features == HEADS * HEAD_DIM


def test_a_channel_entry_does_not_prune_the_rows_of_head_pruned_projections():
    model, x = build('bert')
    pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}, HEAD_ENTRY], dummy_input=x)
    pruner.compress()
    masks = get_masks(model)
    assert len(_pruned_heads(masks, pruner)[0]) == HEADS // 2
    q = masks['encoder.layer.0.attention.self.query']['weight'].reshape(HEADS, HEAD_DIM, -1)
    assert all(bool(q[h].all()) or not bool(q[h].any()) for h in range(HEADS))  # whole heads only


@pytest.mark.parametrize('algorithm', ['l1', 'taylorfo'])
def test_agp_raises_the_head_fraction_along_its_curve(algorithm):
    model, x = build('bert')
    config = [{'initial_sparsity': 0.0, 'final_sparsity': 0.75, 'start_epoch': 0, 'end_epoch': 3,
               'frequency': 1, 'op_types': ['Linear'], 'granularity': 'head'}]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    pruner = AGPPruner(model, config, optimizer=optimizer, pruning_algorithm=algorithm, dummy_input=x)
    pruner.compress()
    seen = []
    for epoch in range(4):
        if algorithm == 'taylorfo':
            optimizer.zero_grad()
            _loss(model(*x)).backward()  # the statistics come from the user's own loop
        pruner.update_epoch(epoch)
        seen.append(_heads_of(speedup(model, x)))
    assert seen[0] == [HEADS] * 2 and seen[-1] == [1, 1]
    assert all(a[0] >= b[0] for a, b in zip(seen, seen[1:]))


def test_speedup_result_equals_masked_model_on_other_inputs():
    model, x = build('bert')
    L1FilterPruner(model, [HEAD_ENTRY], dummy_input=x).compress()
    small = speedup(model, x)
    other = torch.randint(0, 50, (3, 5))
    with torch.no_grad():
        assert torch.allclose(first_tensor(small(other)), first_tensor(model(other)), atol=1e-5)


@pytest.mark.parametrize('entry,message', [
    ({'granularity': 'heads'}, r"config_list\[0\]\['granularity'\] must be one of 'channel', 'head'; got 'heads'"),
    ({'granularity': 2}, r"config_list\[0\]\['granularity'\] must be a string"),
    ({'op_types': ['LayerNorm']}, r"config_list\[0\]\['op_types'\] names 'LayerNorm'"),
    ({'op_types': ['Linear'], 'op_names': ['pooler.dense']},
     r"config_list\[0\]\['granularity'\] is 'head', but the entry selects no attention"),
])
def test_bad_head_entries_name_the_entry_and_key(entry, message):
    model, x = build('bert')
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = [{'sparsity': 0.5, 'op_types': ['Linear'], 'granularity': 'head', **entry}]
    if 'op_names' in entry:
        config[0].pop('op_types')
    with pytest.raises((ValueError, TypeError), match=message):
        L1FilterPruner(model, config, dummy_input=x)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())  # untouched
    assert not get_masks(model)


def test_an_exclude_entry_cannot_carry_granularity():
    model, x = build('bert')
    with pytest.raises(ConfigValueError, match=r"config_list\[1\] is an exclude entry and cannot also set 'granularity'"):
        L1FilterPruner(model, [HEAD_ENTRY, {'exclude': True, 'op_names': ['pooler.dense'], 'granularity': 'head'}],
                       dummy_input=x)


def test_pruners_without_channels_reject_the_key():
    model, x = build('bert')
    with pytest.raises(ConfigValueError, match="key 'granularity', which LevelPruner does not use"):
        LevelPruner(model, [HEAD_ENTRY])


def test_an_output_projection_outside_the_attention_needs_dummy_input():
    model, _ = build('bert')
    with pytest.raises(ConfigValueError, match=r"\['granularity'\] is 'head' and selects attention "
                                               r"'encoder.layer.0.attention.self'.*needs dummy_input"):
        L1FilterPruner(model, [HEAD_ENTRY])
    model, _ = build('encoder_stack')  # nn.MultiheadAttention holds its output projection
    assert len(L1FilterPruner(model, [HEAD_ENTRY]).head_targets) == 2


def test_data_criteria_refuse_heads_they_cannot_watch():
    model, x = build('encoder_stack')
    with pytest.raises(ConfigValueError, match="in_proj_weight'; use a weight criterion"):
        TaylorFOWeightFilterPruner(model, [HEAD_ENTRY], data=[x[0]], criterion=_loss, dummy_input=x)


def test_two_entries_cannot_split_one_attention():
    model, x = build('bert')
    config = [{'sparsity': 0.5, 'op_names': ['encoder.layer.0.attention.self.query'], 'granularity': 'head'},
              {'sparsity': 0.25, 'op_names': ['encoder.layer.0.attention.self.value'], 'granularity': 'head'}]
    with pytest.raises(ConfigValueError, match=r"selected by config_list entries \[0, 1\]"):
        L1FilterPruner(model, config, dummy_input=x)
