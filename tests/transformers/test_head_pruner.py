"""TransformerHeadPruner: NNI's signature, criteria, groups, exact head masks."""
import pytest
import torch

from prunus.compression import available_pruners, get_pruner
from prunus.compression.torch import TransformerHeadPruner, get_masks

from .models import ARCHS, HEAD_DIM, HEADS, build, first_tensor

CONFIG = [{'sparsity': 0.5, 'op_types': ['Linear', 'Conv1D', 'MultiheadAttention']}]


def _runner(x, backward=False):
    def run(model):
        out = first_tensor(model(*x))
        if backward:
            out.float().pow(2).mean().backward()
    return run


def test_registered_under_its_nni_name():
    assert get_pruner('transformer_head') is TransformerHeadPruner
    assert 'transformer_head' in available_pruners('torch')


@pytest.mark.parametrize('name', ARCHS)
def test_groups_found_from_dummy_input_and_half_the_heads_masked(name):
    model, x = build(name)
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x)
    assert len(pruner.masking_groups) >= 2
    pruner.compress()
    for heads in pruner.get_pruned_heads().values():
        assert len(heads) == HEADS // 2



@pytest.mark.parametrize('criterion', ['l1_weight', 'l2_weight', 'l1_activation', 'l2_activation',
                                       'taylorfo'])
def test_every_criterion_masks_whole_heads_exactly(criterion):
    model, x = build('bert')
    runner = _runner(x, backward=criterion == 'taylorfo')
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x, ranking_criterion=criterion,
                                   forward_runner=runner)
    pruner.compress()
    masks = get_masks(model)
    for group in pruner.masking_groups:
        pruned = pruner.get_pruned_heads()[group.name]
        lay = group.layout
        for s in (lay.q, lay.k, lay.v):
            rows = masks[s.module]['weight'].reshape(HEADS, HEAD_DIM, -1)
            assert [h for h in range(HEADS) if not rows[h].any()] == pruned
            assert bool(rows[[h for h in range(HEADS) if h not in pruned]].all())
            assert not masks[s.module]['bias'].reshape(HEADS, -1)[pruned].any()
        cols = masks[lay.out.module]['weight'].reshape(-1, HEADS, HEAD_DIM)
        assert [h for h in range(HEADS) if not cols[:, h].any()] == pruned


def test_weight_criterion_prunes_the_smallest_heads():
    model, x = build('bert')
    attn = model.encoder.layer[0].attention.self
    with torch.no_grad():
        for lin in (attn.query, attn.key, attn.value):
            lin.weight[HEAD_DIM:2 * HEAD_DIM] *= 1e-3  # head 1 is the smallest
            lin.weight[3 * HEAD_DIM:] *= 1e-2  # head 3 the next
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x)
    pruner.compress()
    assert pruner.get_pruned_heads()['encoder.layer.0.attention.self'] == [1, 3]


def test_activation_criterion_follows_the_data():
    model, x = build('bert')
    attn = model.encoder.layer[1].attention.self
    with torch.no_grad():
        attn.value.weight[:2 * HEAD_DIM] *= 1e-4  # heads 0 and 1 output almost nothing
        attn.value.bias[:2 * HEAD_DIM] = 0
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x,
                                   ranking_criterion='l1_activation', forward_runner=_runner(x))
    pruner.compress()
    assert pruner.get_pruned_heads()['encoder.layer.1.attention.self'] == [0, 1]


def test_global_sort_ranks_across_layers_and_keeps_a_head_per_layer():
    model, x = build('bert')
    with torch.no_grad():
        for lin in ('query', 'key', 'value'):
            getattr(model.encoder.layer[0].attention.self, lin).weight.mul_(1e-3)
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x, global_sort=True)
    pruner.compress()
    heads = pruner.get_pruned_heads()
    assert len(heads['encoder.layer.0.attention.self']) == 3  # all but one: the smallest layer
    assert len(heads['encoder.layer.1.attention.self']) == 1


def test_iterations_grow_the_sparsity_and_train_in_between():
    model, x = build('bert')
    epochs = []

    def trainer(model, optimizer, criterion, epoch):
        epochs.append(epoch)
    pruner = TransformerHeadPruner(model, [{'sparsity': 0.75, 'op_types': ['Linear']}], HEAD_DIM,
                                   dummy_input=x, num_iterations=3, epochs_per_iteration=2,
                                   trainer=trainer)
    pruner.compress()
    assert epochs == [0, 1, 0, 1]
    assert all(len(h) == 3 for h in pruner.get_pruned_heads().values())


def test_named_groups_match_the_found_ones():
    model, x = build('bert')
    names = [[f'encoder.layer.{i}.attention.self.{p}' for p in ('query', 'key', 'value')] +
             [f'encoder.layer.{i}.attention.output.dense'] for i in range(2)]
    by_name = TransformerHeadPruner(model, CONFIG, HEAD_DIM, attention_name_groups=names)
    found = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x)
    assert [g.members for g in by_name.masking_groups] == [g.members for g in found.masking_groups]
    assert by_name.calc_masks().keys() == found.calc_masks().keys()


@pytest.mark.parametrize('kwargs,error', [
    ({'head_hidden_dim': 0}, ValueError),
    ({'head_hidden_dim': 5}, ValueError),  # 32 is not a multiple of 5
    ({'ranking_criterion': 'l3_weight'}, ValueError),
    ({'ranking_criterion': 'l1_activation'}, ValueError),  # no forward_runner
    ({'num_iterations': 0}, ValueError),
    ({'global_sort': 'yes'}, TypeError),
    ({'dummy_input': None}, ValueError),
    ({'attention_name_groups': [['a', 'b', 'c']], 'dummy_input': None}, ValueError),
    ({'attention_name_groups': [['encoder.layer.0.attention.self.query'] * 3 + ['nope']]}, ValueError),
])
def test_bad_arguments_are_rejected_and_the_model_untouched(kwargs, error):
    model, x = build('bert')
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = dict(head_hidden_dim=HEAD_DIM, dummy_input=x)
    args.update(kwargs)
    with pytest.raises(error):
        TransformerHeadPruner(model, CONFIG, **args).compress()
    assert not get_masks(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_bad_config_names_the_entry():
    model, x = build('bert')
    with pytest.raises(ValueError, match=r'config_list\[0\]'):
        TransformerHeadPruner(model, [{'sparsity': 1.5, 'op_types': ['Linear']}], HEAD_DIM, dummy_input=x)


@pytest.mark.parametrize('name', ['encoder_stack', 'torchvision_vit'])
@pytest.mark.parametrize('criterion', ['l2_activation', 'taylorfo'])
def test_data_criteria_see_multihead_attention_heads(name, criterion):
    model, x = build(name)
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x, ranking_criterion=criterion,
                                   forward_runner=_runner(x, backward=criterion == 'taylorfo'))
    pruner.compress()
    assert all(len(h) == HEADS // 2 for h in pruner.get_pruned_heads().values())
    assert all(type(m).__name__ != 'PrunedMultiheadAttention' for m in model.modules())


def test_data_criteria_see_swin_heads():
    torchvision = pytest.importorskip('torchvision')
    model = torchvision.models.swin_t(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    pruner = TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], 32,
                                   dummy_input=x, ranking_criterion='l1_activation',
                                   forward_runner=_runner((x,)))
    pruner.compress()
    assert type(model.features[1][0].attn).__name__ == 'ShiftedWindowAttention'
    assert sum(len(h) for h in pruner.get_pruned_heads().values()) > 30
