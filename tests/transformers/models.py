"""Tiny transformer architectures (random weights) for head pruning and speedup tests."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

transformers = __import__('pytest').importorskip('transformers')

HEADS, HEAD_DIM = 4, 8
WIDTH = HEADS * HEAD_DIM


def _ids() -> torch.Tensor:
    return torch.randint(0, 50, (2, 9))


class EncoderStack(nn.Module):
    """A Linear feeding nn.TransformerEncoder (nn.MultiheadAttention inside)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(12, WIDTH)
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, 2 * WIDTH, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, 3)

    def forward(self, x):
        return self.head(self.enc(self.inp(x)))


def _hf(name: str):
    T = transformers
    small = dict(vocab_size=50, hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                 intermediate_size=2 * WIDTH)
    vision = dict(hidden_size=WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
                  intermediate_size=2 * WIDTH, image_size=16, patch_size=8)
    if name == 'bert':
        return T.BertModel(T.BertConfig(**small)), (_ids(),)
    if name == 'roberta':
        return T.RobertaModel(T.RobertaConfig(**small)), (_ids(),)
    if name == 'distilbert':
        cfg = T.DistilBertConfig(vocab_size=50, dim=WIDTH, n_layers=2, n_heads=HEADS, hidden_dim=2 * WIDTH)
        return T.DistilBertModel(cfg), (_ids(),)
    if name == 'gpt2':
        return T.GPT2Model(T.GPT2Config(vocab_size=50, n_embd=WIDTH, n_layer=2, n_head=HEADS)), (_ids(),)
    if name == 'vit':
        return T.ViTModel(T.ViTConfig(**vision)), (torch.randn(2, 3, 16, 16),)
    if name == 'deit':
        return T.DeiTModel(T.DeiTConfig(**vision)), (torch.randn(2, 3, 16, 16),)
    if name == 'bart':
        cfg = T.BartConfig(vocab_size=50, d_model=WIDTH, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=HEADS, decoder_attention_heads=HEADS,
                           encoder_ffn_dim=2 * WIDTH, decoder_ffn_dim=2 * WIDTH)
        return T.BartModel(cfg), (_ids(),)
    raise KeyError(name)


def build(name: str):
    """(model in eval mode, example inputs) for an architecture name."""
    torch.manual_seed(0)
    if name == 'encoder_stack':
        model, x = EncoderStack(), (torch.randn(2, 7, 12),)
    elif name == 'torchvision_vit':
        model = torchvision.models.VisionTransformer(image_size=16, patch_size=8, num_layers=2,
                                                     num_heads=HEADS, hidden_dim=WIDTH, mlp_dim=2 * WIDTH)
        nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision starts it at zero
        x = (torch.randn(2, 3, 16, 16),)
    else:
        model, x = _hf(name)
    return model.eval(), x


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, 'last_hidden_state'):
        return out.last_hidden_state
    return out[0]


ARCHS = ['bert', 'roberta', 'distilbert', 'gpt2', 'vit', 'deit', 'bart', 'encoder_stack',
         'torchvision_vit']
