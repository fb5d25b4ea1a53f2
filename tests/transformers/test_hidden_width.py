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
