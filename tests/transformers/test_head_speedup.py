"""Heads removed physically: exact against the masked model, attributes updated."""
import pytest
import torch
from torch import nn

from prunus.compression.torch import L1FilterPruner, TransformerHeadPruner
from prunus.layers.torch.heads import attention_layout
from prunus.speedup import speedup
from prunus.layers.torch.modules import PrunedMultiheadAttention

from .models import ARCHS, HEAD_DIM, HEADS, WIDTH, build, first_tensor

CONFIG = [{'sparsity': 0.5, 'op_types': ['Linear', 'Conv1D', 'MultiheadAttention']}]


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('name', ARCHS)
def test_half_the_heads_go_and_the_result_is_exact(name):
    model, x = build(name)
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x)
    pruner.compress()
    expected = first_tensor(model(*x))
    small, summary = speedup(model, x, return_summary=True)
    torch.testing.assert_close(first_tensor(small(*x)), expected, rtol=1e-5, atol=1e-5)
    layouts = [attention_layout(m) for m in small.modules()]
    layouts = [lay for lay in layouts if lay is not None] + [
        m for m in small.modules() if isinstance(m, PrunedMultiheadAttention)]
    heads = [lay.num_heads for lay in layouts]
    assert heads and all(h == HEADS // 2 for h in heads), heads
    # each removed head takes 3 * (WIDTH + 1) * HEAD_DIM of Q/K/V and WIDTH * HEAD_DIM of the output
    per_head = 3 * (WIDTH + 1) * HEAD_DIM + WIDTH * HEAD_DIM
    assert _params(model) - _params(small) == len(pruner.masking_groups) * HEADS // 2 * per_head
    assert summary.flops_after < summary.flops_before
    assert _params(model) == summary.params_before  # the user's model is untouched


def test_hf_attributes_follow_the_heads():
    model, x = build('bert')
    TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x).compress()
    small = speedup(model, x)
    attn = small.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.all_head_size, attn.query.out_features) == (2, 16, 16)
    assert small.encoder.layer[0].attention.output.dense.in_features == 16
    gpt, ids = build('gpt2')
    TransformerHeadPruner(gpt, CONFIG, HEAD_DIM, dummy_input=ids).compress()
    attn = speedup(gpt, ids).h[0].attn
    assert (attn.num_heads, attn.split_size, attn.c_attn.nf) == (2, 16, 48)


def test_unpruned_attention_is_left_alone():
    model, x = build('encoder_stack')
    small, summary = speedup(model, x, {}, return_summary=True)
    assert isinstance(small.enc.layers[0].self_attn, nn.MultiheadAttention)
    assert summary.params_after == summary.params_before


def test_a_linear_feeding_multihead_attention_shrinks():
    model, x = build('encoder_stack')
    model = nn.Sequential(nn.Linear(12, WIDTH), nn.ReLU(), _SelfAttention()).eval()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['0']}]).compress()
    expected = model(x[0])
    small = speedup(model, x)
    assert small[0].out_features == WIDTH // 2
    assert isinstance(small[2].att, PrunedMultiheadAttention)
    assert small[2].att.q_proj_weight.shape == (WIDTH, WIDTH // 2)
    torch.testing.assert_close(small(x[0]), expected)


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.att = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)

    def forward(self, h):
        return self.att(h, h, h, need_weights=False)[0]


class _Cross(nn.Module):
    """Keys and values from another tensor: only the query side may shrink."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(12, WIDTH), nn.Linear(12, WIDTH)
        self.att = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True)

    def forward(self, x):
        return self.att(self.a(x), self.b(x), self.b(x))[0]


def test_cross_attention_keeps_its_inputs_and_stays_exact():
    model = _Cross().eval()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ['a', 'b']}]).compress()
    x = torch.randn(2, 5, 12)
    small, summary = speedup(model, x, return_summary=True)
    assert small.a.out_features == WIDTH and small.b.out_features == WIDTH
    torch.testing.assert_close(small(x), model(x))
    assert summary.kept


@pytest.mark.parametrize('kwargs', [{}, {'need_weights': True, 'average_attn_weights': False},
                                    {'attn_mask': 'causal'}, {'key_padding_mask': True}])
def test_pruned_multihead_attention_equals_the_original(kwargs):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(WIDTH, HEADS).eval()
    q, kv = torch.randn(5, 2, WIDTH), torch.randn(6, 2, WIDTH)
    args = dict(kwargs)
    if args.get('attn_mask') == 'causal':
        args['attn_mask'] = torch.ones(5, 6, dtype=torch.bool).triu(1)
    if args.get('key_padding_mask'):
        args['key_padding_mask'] = torch.tensor([[False] * 5 + [True], [False] * 6])
    ref_out, ref_w = mha(q, kv, kv, **args)
    out, w = PrunedMultiheadAttention.from_mha(mha).eval()(q, kv, kv, **args)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    if ref_w is not None:
        torch.testing.assert_close(w, ref_w, rtol=1e-5, atol=1e-5)


def test_flops_are_counted_the_same_way_before_and_after():
    import torchvision
    vit = torchvision.models.vit_b_16(weights=None, image_size=32).eval()
    models = [build(name) for name in ('encoder_stack', 'torchvision_vit', 'bert')]
    for model, x in models + [(vit, torch.randn(1, 3, 32, 32))]:
        _, summary = speedup(model, x, {}, return_summary=True)
        assert summary.flops_after == summary.flops_before, type(model).__name__
    mha = nn.MultiheadAttention(WIDTH, HEADS, batch_first=True).eval()
    _, summary = speedup(_Wrap(mha), torch.randn(2, 10, WIDTH), {}, return_summary=True)
    b, s = 2, 10
    projections = 4 * 2 * b * s * WIDTH * WIDTH
    attention = 2 * 2 * b * s * s * WIDTH  # Q K^T and P V over all heads
    assert summary.flops_before == summary.flops_after == projections + attention


class _Wrap(nn.Module):
    def __init__(self, mha):
        super().__init__()
        self.mha = mha

    def forward(self, x):
        return self.mha(x, x, x)[0]


@pytest.mark.parametrize('version', [1, 2])
def test_swin_heads_go_with_their_position_bias(version):
    torchvision = pytest.importorskip('torchvision')
    from torchvision.models import swin_transformer as S
    torch.manual_seed(0)
    extra = {} if version == 1 else dict(block=S.SwinTransformerBlockV2, downsample_layer=S.PatchMergingV2)
    model = S.SwinTransformer([4, 4], 32, [2, 2], [4, 8], [4, 4], num_classes=5, **extra).eval()
    x = torch.randn(2, 3, 40, 40)  # 10x10 tokens: windows are padded, and shifted
    TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], 8, dummy_input=x).compress()
    expected = model(x)
    small, summary = speedup(model, x, return_summary=True)
    torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    attn = small.features[1][0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 3 * 16
    if version == 1:
        assert attn.relative_position_bias_table.shape[1] == 2
    else:
        assert attn.cpb_mlp[-1].out_features == 2 and attn.logit_scale.shape[0] == 2
    assert sum(a for _, a in summary.heads.values()) == 12


class _StaleWidth(nn.Module):
    """An attention that keeps its inner width in an attribute the speedup cannot know."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.head_dim, self.inner = HEADS, HEAD_DIM, WIDTH
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(WIDTH, WIDTH) for _ in range(4))

    def forward(self, x):
        b, s, _ = x.shape
        q, k, v = (p(x).view(b, s, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out_proj(ctx.transpose(1, 2).reshape(b, s, self.inner))


def test_a_stale_width_attribute_is_named_and_nothing_changes():
    from prunus.speedup import SpeedupError
    model = nn.Sequential(_StaleWidth()).eval()
    x = torch.randn(2, 5, WIDTH)
    TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x).compress()
    before = _params(model)
    with pytest.raises(SpeedupError, match=r"_StaleWidth\.inner=32 in '0'"):
        speedup(model, x)
    assert _params(model) == before and model[0].num_heads == HEADS


@pytest.mark.parametrize('name', ['bert', 'distilbert', 'gpt2', 'bart', 'encoder_stack'])
def test_head_dimensions_go_and_the_scale_stays(name):
    model, x = build(name)
    pruner = TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x, prune_head_dims=True)
    pruner.compress()
    assert all(int(d.sum()) == HEADS * HEAD_DIM // 4 * 2 for d in pruner.pruned_dims)  # half each
    expected = first_tensor(model(*x))
    small = speedup(model, x)
    torch.testing.assert_close(first_tensor(small(*x)), expected, rtol=1e-5, atol=1e-5)
    layouts = [attention_layout(m) for m in small.modules()]
    dims = [lay.head_dim for lay in layouts if lay is not None] + [
        m.head_dim for m in small.modules() if isinstance(m, PrunedMultiheadAttention)]
    assert dims and all(d == HEAD_DIM // 2 for d in dims), dims
    heads = [lay.num_heads for lay in layouts if lay is not None]
    assert all(h == HEADS for h in heads)


@pytest.mark.parametrize('name', ['electra', 'albert', 'opt', 'llama'])
def test_more_architectures(name):
    T = pytest.importorskip('transformers')
    torch.manual_seed(0)
    small = dict(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                 intermediate_size=2 * WIDTH)
    model = {'electra': lambda: T.ElectraModel(T.ElectraConfig(embedding_size=WIDTH, **small)),
             'albert': lambda: T.AlbertModel(T.AlbertConfig(embedding_size=16, **small)),
             'opt': lambda: T.OPTModel(T.OPTConfig(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=2,
                                                   num_attention_heads=HEADS, ffn_dim=2 * WIDTH,
                                                   word_embed_proj_dim=WIDTH)),
             'llama': lambda: T.LlamaModel(T.LlamaConfig(num_key_value_heads=HEADS, **small))}[name]().eval()
    x = (torch.randint(0, 50, (2, 9)),)
    TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=x).compress()
    expected = first_tensor(model(*x))
    small_model, summary = speedup(model, x, return_summary=True)
    torch.testing.assert_close(first_tensor(small_model(*x)), expected, rtol=1e-5, atol=1e-5)
    assert summary.heads and all(after == HEADS // 2 for _, after in summary.heads.values())


def test_shared_position_bias_models_are_refused_clearly():
    T = pytest.importorskip('transformers')
    # MPNet's encoder computes one per-head bias for all layers (T5's is handled: the layers
    # sharing it keep the same heads, tests/transformers/test_head_zoo.py)
    model = T.MPNetModel(T.MPNetConfig(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=1,
                                       num_attention_heads=HEADS, intermediate_size=64)).eval()
    with pytest.raises(ValueError, match=r"no attention module with a known head layout in "
                                         r"MPNetModel: 'encoder\.layer\.0\.attention\.attn'"):
        TransformerHeadPruner(model, CONFIG, HEAD_DIM, dummy_input=(torch.randint(0, 50, (2, 5)),))


def test_an_encoder_with_dropout_speeds_up_in_eval_mode():
    # nn.TransformerEncoderLayer's default dropout: the attention module the speedup swaps in
    # must take the eval mode of the one it replaces, or the check sees dropout noise
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    model = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.randn(2, 10, 32)
    pruner = TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['MultiheadAttention']}],
                                   head_hidden_dim=8, dummy_input=x)
    pruner.compress()
    small, summary = speedup(model, x, pruner, return_summary=True)
    assert not any(m.training for m in small.modules())
    assert all(m.num_heads == 2 for m in small.modules() if isinstance(m, PrunedMultiheadAttention))
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)
    assert summary.flops_after < summary.flops_before
