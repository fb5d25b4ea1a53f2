"""Hugging Face architectures built from configs, for the zoo sweep (benchmarks/transformers_zoo.py)
and its test (tests/transformers/test_head_zoo.py): random weights, sizes given, offline.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import transformers
from torch import nn

from prunus.compression.torch import L1FilterPruner, apply_masks
from prunus.speedup import speedup

#: FFN up-projections by the name they end with, in the architectures below.
FFN_UP = ('intermediate.dense', 'fc1', 'c_fc', 'up_proj', 'fc_in', 'dense_h_to_4h', 'wi',
          'lin1', 'ffn', 'intermediate_dense', 'mlp.0', 'wi_1')
#: gated FFNs: the up-projection's name end -> its gate's (the gate loses the same rows)
GATES = {'up_proj': 'gate_proj', 'wi_1': 'wi_0'}


@dataclass
class Size:
    """Width, heads, key/value heads (GQA models) and layers of the built models."""

    width: int = 32
    heads: int = 4
    kv_heads: int = 2
    layers: int = 2

    @property
    def head_dim(self) -> int:
        return self.width // self.heads


def _ids(batch: int = 2, length: int = 9) -> torch.Tensor:
    return torch.randint(3, 50, (batch, length))


def _text(s: Size) -> dict:
    return dict(vocab_size=50, hidden_size=s.width, num_hidden_layers=s.layers,
                num_attention_heads=s.heads, intermediate_size=2 * s.width)


def _decoder(s: Size) -> dict:
    return dict(_text(s), num_key_value_heads=s.kv_heads, max_position_embeddings=64,
                pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _seq2seq(s: Size) -> dict:
    return dict(vocab_size=50, d_model=s.width, encoder_layers=s.layers, decoder_layers=s.layers,
                encoder_attention_heads=s.heads, decoder_attention_heads=s.heads,
                encoder_ffn_dim=2 * s.width, decoder_ffn_dim=2 * s.width, pad_token_id=0,
                bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
                max_position_embeddings=64)


def _vision(s: Size) -> dict:
    return dict(hidden_size=s.width, num_hidden_layers=s.layers, num_attention_heads=s.heads,
                intermediate_size=2 * s.width, image_size=16, patch_size=8)


def _gpt(s: Size) -> dict:
    return dict(vocab_size=50, n_embd=s.width, n_layer=s.layers, n_head=s.heads,
                bos_token_id=1, eos_token_id=2, pad_token_id=0)


def _text_inputs(batch, length):
    return {'input_ids': _ids(batch, length)}


def _s2s_inputs(batch, length):
    return {'input_ids': _ids(batch, length), 'decoder_input_ids': _ids(batch, length - 2)}


def _image_inputs(batch, length, side=16):
    return {'pixel_values': torch.randn(batch, 3, side, side)}


def _configs(T, s: Size) -> dict:
    """name -> (model class, config, inputs(batch, length), causal LM)."""
    W, H = s.width, s.heads
    text, dec, s2s, vis, gpt = _text(s), _decoder(s), _seq2seq(s), _vision(s), _gpt(s)
    clip = dict(text_config=dict(_text(s), max_position_embeddings=32),
                vision_config=_vision(s), projection_dim=16)
    return {
        'bert': (T.BertModel, T.BertConfig(**text), _text_inputs, False),
        'roberta': (T.RobertaModel, T.RobertaConfig(**text), _text_inputs, False),
        'xlm-roberta': (T.XLMRobertaModel, T.XLMRobertaConfig(**text), _text_inputs, False),
        'electra': (T.ElectraModel, T.ElectraConfig(embedding_size=W, **text), _text_inputs, False),
        'albert': (T.AlbertModel, T.AlbertConfig(embedding_size=16, **text), _text_inputs, False),
        'distilbert': (T.DistilBertModel, T.DistilBertConfig(vocab_size=50, dim=W, n_layers=s.layers,
                                                             n_heads=H, hidden_dim=2 * W), _text_inputs, False),
        'deberta-v2': (T.DebertaV2Model, T.DebertaV2Config(**text), _text_inputs, False),
        'deberta-v2 (relative, shared key)': (T.DebertaV2Model, T.DebertaV2Config(
            **text, relative_attention=True, pos_att_type=['p2c', 'c2p'], share_att_key=True,
            position_buckets=8, max_relative_positions=16), _text_inputs, False),
        'mpnet': (T.MPNetModel, T.MPNetConfig(**text), _text_inputs, False),
        'gpt2': (T.GPT2LMHeadModel, T.GPT2Config(**gpt), _text_inputs, True),
        'gpt_neo': (T.GPTNeoForCausalLM, T.GPTNeoConfig(
            vocab_size=50, hidden_size=W, num_layers=2, num_heads=H, window_size=4,
            attention_types=[[['global', 'local'], 1]], bos_token_id=1, eos_token_id=2), _text_inputs, True),
        'gptj': (T.GPTJForCausalLM, T.GPTJConfig(**gpt, rotary_dim=s.head_dim // 2), _text_inputs, True),
        'gpt_bigcode (MQA)': (T.GPTBigCodeForCausalLM, T.GPTBigCodeConfig(**gpt, multi_query=True),
                              _text_inputs, True),
        'gpt_bigcode (MHA)': (T.GPTBigCodeForCausalLM, T.GPTBigCodeConfig(**gpt, multi_query=False),
                              _text_inputs, True),
        'bloom': (T.BloomForCausalLM, T.BloomConfig(vocab_size=50, hidden_size=W, n_layer=s.layers,
                                                    n_head=H), _text_inputs, True),
        'falcon (MQA)': (T.FalconForCausalLM, T.FalconConfig(
            vocab_size=50, hidden_size=W, num_hidden_layers=s.layers, num_attention_heads=H,
            multi_query=True), _text_inputs, True),
        'falcon (MHA)': (T.FalconForCausalLM, T.FalconConfig(
            vocab_size=50, hidden_size=W, num_hidden_layers=s.layers, num_attention_heads=H,
            multi_query=False), _text_inputs, True),
        'falcon (new arch, GQA)': (T.FalconForCausalLM, T.FalconConfig(
            vocab_size=50, hidden_size=W, num_hidden_layers=s.layers, num_attention_heads=H,
            num_kv_heads=s.kv_heads, new_decoder_architecture=True), _text_inputs, True),
        'opt': (T.OPTForCausalLM, T.OPTConfig(vocab_size=50, hidden_size=W, num_hidden_layers=s.layers,
                                              num_attention_heads=H, ffn_dim=2 * W, word_embed_proj_dim=W,
                                              pad_token_id=0, bos_token_id=1, eos_token_id=2),
                _text_inputs, True),
        'llama (GQA)': (T.LlamaForCausalLM, T.LlamaConfig(**dec), _text_inputs, True),
        'mistral (GQA)': (T.MistralForCausalLM, T.MistralConfig(**dec), _text_inputs, True),
        'qwen2 (GQA)': (T.Qwen2ForCausalLM, T.Qwen2Config(**dec), _text_inputs, True),
        'phi (GQA)': (T.PhiForCausalLM, T.PhiConfig(**dec), _text_inputs, True),
        'phi3 (GQA, fused qkv)': (T.Phi3ForCausalLM, T.Phi3Config(**dec), _text_inputs, True),
        'gemma (GQA)': (T.GemmaForCausalLM, T.GemmaConfig(**dec, head_dim=s.head_dim), _text_inputs, True),
        't5': (T.T5Model, T.T5Config(vocab_size=50, d_model=W, d_kv=s.head_dim, d_ff=2 * W,
                                     num_layers=s.layers, num_heads=H, decoder_start_token_id=0),
               _s2s_inputs, False),
        'bart': (T.BartModel, T.BartConfig(**s2s), _s2s_inputs, False),
        'mbart': (T.MBartModel, T.MBartConfig(**s2s), _s2s_inputs, False),
        'marian': (T.MarianModel, T.MarianConfig(**s2s), _s2s_inputs, False),
        'vit': (T.ViTModel, T.ViTConfig(**vis), _image_inputs, False),
        'deit': (T.DeiTModel, T.DeiTConfig(**vis), _image_inputs, False),
        'beit': (T.BeitModel, T.BeitConfig(**vis, use_relative_position_bias=True), _image_inputs, False),
        'swin': (T.SwinModel, T.SwinConfig(image_size=32, patch_size=4, embed_dim=W // 2,
                                           depths=[s.layers, s.layers], num_heads=[H // 2, H],
                                           window_size=4),
                 lambda b, n: _image_inputs(b, n, 32), False),
        'clip': (T.CLIPModel, T.CLIPConfig(**clip),
                 lambda b, n: {**_text_inputs(b, n), **_image_inputs(b, n)}, False),
        'whisper': (T.WhisperModel, T.WhisperConfig(**_seq2seq(s), num_mel_bins=8, max_source_positions=8,
                                                    max_target_positions=16),
                    lambda b, n: {'input_features': torch.randn(b, 8, 16),
                                  'decoder_input_ids': _ids(b, n - 2)}, False),
        'wav2vec2': (T.Wav2Vec2Model, T.Wav2Vec2Config(
            hidden_size=W, num_hidden_layers=s.layers, num_attention_heads=H, intermediate_size=2 * W,
            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=4,
            num_conv_pos_embedding_groups=2), lambda b, n: {'input_values': torch.randn(b, 40 * n)}, False),
        **_more(T, s),
    }


def _more(T, s: Size) -> dict:
    """Architectures beyond the issue's list, as a user might bring them."""
    W, H = s.width, s.heads
    text, dec, s2s, vis = _text(s), _decoder(s), _seq2seq(s), _vision(s)
    t5 = dict(vocab_size=50, d_model=W, d_kv=s.head_dim, d_ff=2 * W, num_layers=s.layers,
              num_heads=H, decoder_start_token_id=0)
    return {
        'qwen3 (GQA, q/k norm)': (T.Qwen3ForCausalLM, T.Qwen3Config(**dec, head_dim=s.head_dim),
                                  _text_inputs, True),
        'gemma2 (GQA)': (T.Gemma2ForCausalLM, T.Gemma2Config(**dec, head_dim=s.head_dim), _text_inputs, True),
        'stablelm (GQA)': (T.StableLmForCausalLM, T.StableLmConfig(**dec), _text_inputs, True),
        'starcoder2 (GQA)': (T.Starcoder2ForCausalLM, T.Starcoder2Config(**dec), _text_inputs, True),
        'olmo': (T.OlmoForCausalLM, T.OlmoConfig(**dec), _text_inputs, True),
        'mixtral (GQA, MoE)': (T.MixtralForCausalLM, T.MixtralConfig(**dec, num_local_experts=2,
                                                                     num_experts_per_tok=1), _text_inputs, True),
        'gpt_neox': (T.GPTNeoXForCausalLM, T.GPTNeoXConfig(
            **{k: v for k, v in dec.items() if k != 'num_key_value_heads'}), _text_inputs, True),
        'mt5': (T.MT5Model, T.MT5Config(**t5), _s2s_inputs, False),
        'umt5': (T.UMT5Model, T.UMT5Config(**t5), _s2s_inputs, False),
        'pegasus': (T.PegasusModel, T.PegasusConfig(**s2s), _s2s_inputs, False),
        'm2m_100': (T.M2M100Model, T.M2M100Config(**s2s), _s2s_inputs, False),
        'roformer': (T.RoFormerModel, T.RoFormerConfig(**text), _text_inputs, False),
        'bigbird (full attention)': (T.BigBirdModel, T.BigBirdConfig(**text, attention_type='original_full'),
                                     _text_inputs, False),
        'longformer': (T.LongformerModel, T.LongformerConfig(**text, attention_window=4, pad_token_id=0),
                       _text_inputs, False),
        'convbert': (T.ConvBertModel, T.ConvBertConfig(**text, embedding_size=W), _text_inputs, False),
        'dinov2': (T.Dinov2Model, T.Dinov2Config(**vis), _image_inputs, False),
        'siglip (vision)': (T.SiglipVisionModel, T.SiglipVisionConfig(**vis), _image_inputs, False),
    }


def architectures(size: Size | None = None) -> dict:
    """The buildable architectures: name -> (class, config, inputs(batch, length), causal LM).

    Args:
        size: model sizes (default: tiny).

    Example::

        cls, config, inputs, causal = architectures()['llama (GQA)']
    """
    return _configs(transformers, size or Size())


def ffn_prune(model: nn.Module, example: dict) -> tuple[int, int, nn.Module]:
    """Masks 50% of every FFN up-projection's channels (L1; a gated FFN's gate the same
    rows) and removes them: (channels removed, channels before, the smaller model).

    Args:
        model: the model (it gets the masks).
        example: example inputs for the speedup.

    Example::

        removed, total, small = ffn_prune(model, {'input_ids': ids})
    """
    names = [n for n, m in model.named_modules() if n.endswith(FFN_UP) and
             (isinstance(m, nn.Linear) or type(m).__name__ == 'Conv1D')]
    if not names:
        return 0, 0, model
    # L1 on output channels by hand where L1FilterPruner does not go: a fused gate_up_proj,
    # transformers' Conv1D (GPT-2's c_fc, weight (in, out))
    fused = [n for n in names if n.endswith('gate_up_proj') or _out_axis(model.get_submodule(n))]
    masks = {}
    if len(fused) < len(names):
        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': [n for n in names if n not in fused]}])
        pruner.compress()
        masks = pruner.get_masks()
    for name in names:  # a gated FFN (gate_proj * up_proj): the gate loses the same rows
        parent = name.rpartition('.')[0]
        if name in fused and _out_axis(model.get_submodule(name)):
            w = model.get_submodule(name).weight.detach()
            norms = w.abs().sum(0)
            keep = torch.zeros_like(norms).index_fill_(0, torch.argsort(norms)[len(norms) // 2:], 1)
            masks[name] = {'weight': keep.unsqueeze(0).expand_as(w).clone()}
        elif name in fused:  # fused [gate; up] (Phi-3): the same channels in both halves
            w = model.get_submodule(name).weight.detach()
            norms = w.abs().sum(1).view(2, -1).sum(0)
            keep = torch.zeros_like(norms).index_fill_(0, torch.argsort(norms)[len(norms) // 2:], 1)
            masks[name] = {'weight': keep.repeat(2).unsqueeze(1).expand_as(w).clone()}
        elif name.rpartition('.')[2] in GATES:
            gate = GATES[name.rpartition('.')[2]]
            if isinstance(getattr(model.get_submodule(parent), gate, None), nn.Linear):
                masks[f'{parent}.{gate}'] = {'weight': masks[name]['weight'].clone()}
    apply_masks(model, masks)
    small = speedup(model, example, masks)

    def width(m: nn.Module, n: str) -> int:
        module = m.get_submodule(n)
        return module.weight.shape[_out_axis(module)]
    before = sum(width(model, n) for n in names)
    return before - sum(width(small, n) for n in names), before, small


def _out_axis(module: nn.Module) -> int:
    return 1 if type(module).__name__ == 'Conv1D' else 0
