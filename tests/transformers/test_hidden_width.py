"""Residual-stream width pruned through LayerNorm (explicit option), removed exactly."""
import pytest
import torch
from torch import nn

from prunus.compression.torch.width import KeptChannelLayerNorm, prune_hidden_width
from prunus.speedup import speedup

from .models import HEAD_DIM, HEADS, WIDTH, transformers


class Classifier(nn.Module):
    """BERT with a classification head: the stream is read by the head, not returned."""

    def __init__(self):
        super().__init__()
        cfg = transformers.BertConfig(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=2,
                                      num_attention_heads=HEADS, intermediate_size=2 * WIDTH)
        self.bert = transformers.BertModel(cfg)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, ids):
        return self.head(self.bert(ids).pooler_output)


def test_kept_channel_layernorm_equals_the_narrow_one():
    torch.manual_seed(0)
    norm = nn.LayerNorm(8)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(3, 8)
    keep = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    narrow = nn.LayerNorm(6)
    narrow.load_state_dict({'weight': norm.weight[keep], 'bias': norm.bias[keep]})
    norm.__class__ = KeptChannelLayerNorm
    norm.register_buffer('keep', keep, persistent=False)
    out = norm(x)
    torch.testing.assert_close(out[:, keep], narrow(x[:, keep]))
    assert not out[:, ~keep].any()


def test_bert_hidden_width_goes_everywhere_exactly():
    torch.manual_seed(0)
    model = Classifier().eval()
    ids = torch.randint(0, 50, (2, 9))
    dense = model(ids)
    masked = prune_hidden_width(model, (ids,), 0.25)
    assert list(masked.values()) == [WIDTH // 4]
    expected = model(ids)
    assert not torch.allclose(expected, dense)  # the option changes the model, explicitly
    small, summary = speedup(model, (ids,), return_summary=True)
    torch.testing.assert_close(small(ids), expected, rtol=1e-5, atol=1e-5)
    bert = small.bert
    width = WIDTH - WIDTH // 4
    assert bert.embeddings.word_embeddings.embedding_dim == width
    assert type(bert.embeddings.LayerNorm) is nn.LayerNorm
    assert bert.embeddings.LayerNorm.normalized_shape == (width,)
    layer = bert.encoder.layer[0]
    assert layer.attention.self.query.in_features == width
    assert layer.attention.output.dense.out_features == width
    assert layer.output.dense.out_features == width and bert.pooler.dense.in_features == width
    assert layer.attention.self.num_attention_heads == HEADS  # heads are untouched
    assert summary.params_after < summary.params_before


def test_width_and_heads_together():
    from prunus.compression.torch import TransformerHeadPruner
    torch.manual_seed(0)
    model = Classifier().eval()
    ids = torch.randint(0, 50, (2, 9))
    TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], HEAD_DIM,
                          dummy_input=(ids,)).compress()
    prune_hidden_width(model, (ids,), 0.5)
    expected = model(ids)
    small = speedup(model, (ids,))
    torch.testing.assert_close(small(ids), expected, rtol=1e-5, atol=1e-5)
    assert small.bert.encoder.layer[1].attention.self.num_attention_heads == HEADS // 2
    assert small.bert.embeddings.word_embeddings.embedding_dim == WIDTH // 2


def test_a_stream_that_is_the_output_is_refused():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=1,
                                  num_attention_heads=HEADS, intermediate_size=2 * WIDTH)
    model = transformers.BertModel(cfg).eval()
    with pytest.raises(ValueError, match='model output'):
        prune_hidden_width(model, (torch.randint(0, 50, (2, 5)),), 0.25)


def _randomize(model):
    """torchvision zero-initializes biases and the classifier: give every vector and the
    head weights values, so a wrong channel anywhere shows in the output."""
    for p in model.parameters():
        if p.dim() == 1 or p.abs().sum() == 0:
            nn.init.normal_(p, std=0.1)
    return model.eval()


def test_torchvision_vit_hidden_width_class_token_and_position_embedding():
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    model = _randomize(torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
        num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    masked = prune_hidden_width(model, (x,), 0.25)
    assert list(masked.values()) == [8]
    gone = ~model.conv_proj.weight_mask.flatten(1).any(1)
    # the masked model already carries zeros where the narrow one has nothing
    assert not model.class_token_mask[..., gone].any()
    assert not model.encoder.pos_embedding_mask[..., gone].any()
    expected = model(x)
    small = speedup(model, (x,))
    torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    assert small.hidden_dim == 24 and small.conv_proj.out_channels == 24
    assert small.class_token.shape == (1, 1, 24)
    assert small.encoder.pos_embedding.shape == (1, 17, 24)
    assert small.heads.head.in_features == 24
    assert small.encoder.ln.normalized_shape == (24,)
    attn = small.encoder.layers[0].self_attention
    assert attn.num_heads == 4  # heads stay; their input and output are narrower
    torch.testing.assert_close(small(torch.randn(1, 3, 32, 32)).shape, torch.Size([1, 5]))


def test_torchvision_swin_hidden_width_every_stage():
    torchvision = pytest.importorskip('torchvision')
    torch.manual_seed(0)
    model = _randomize(torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
        num_classes=5))
    x = torch.randn(2, 3, 32, 32)
    masked = prune_hidden_width(model, (x,), 0.25)
    assert sorted(masked.values()) == [4, 8]  # stage 1 (16 wide) and stage 2 (32)
    expected = model(x)
    small = speedup(model, (x,))
    torch.testing.assert_close(small(x), expected, rtol=1e-5, atol=1e-5)
    assert small.features[0][0].out_channels == 12
    block = small.features[1][0]
    assert block.attn.qkv.in_features == 12 and block.attn.proj.out_features == 12
    assert block.attn.qkv.out_features == 3 * 16  # the heads keep their width
    assert small.features[2].reduction.in_features == 48
    assert small.features[2].reduction.out_features == 24
    assert small.head.in_features == 24
    assert type(small.norm) is nn.LayerNorm and small.norm.normalized_shape == (24,)
