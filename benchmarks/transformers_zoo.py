"""Heads and FFN widths across Hugging Face transformers architectures, built from configs.

    OMP_NUM_THREADS=1 python benchmarks/transformers_zoo.py --out benchmarks/results/transformers_zoo.md

For each architecture (random weights, built offline from its config): prunus's
``TransformerHeadPruner`` masks 50% of every attention's heads, ``speedup`` removes them,
and the result is compared with the masked model on the example input, on an input of
another batch size and length, and (causal LMs) in greedy ``generate`` with the KV cache;
then 50% of each FFN's up-projection channels (L1) are masked and removed the same way.
An architecture prunus cannot handle reports the error it raises, which names the module
and attribute. Torch-Pruning 1.6 runs the same head pruning (``MetaPruner`` with
``num_heads`` from the model's attention modules, ``prune_num_heads``) on each
architecture in the same run; its column says whether it ran and whether its output
still has the model's shapes and heads removed (Torch-Pruning has no exactness check).
"""
from __future__ import annotations

import argparse
import shlex
import signal
import sys
import time
import warnings
from dataclasses import dataclass

import torch
import transformers
from torch import nn

from prunus.compression.torch import TransformerHeadPruner
from prunus.layers.torch.heads import attention_layout
from prunus.layers.torch.modules import PrunedMultiheadAttention
from prunus.speedup import speedup
from transformers_zoo_models import Size, architectures, ffn_prune  # noqa: E402  (beside this script)

@dataclass
class Result:
    """One architecture's row."""

    name: str
    groups: int = 0
    heads: str = ''
    params: str = ''
    exact: str = ''
    ffn: str = ''
    error: str = ''
    peer: str = ''


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _outputs(model, inputs):
    return _outputs_of(model(**inputs))


def _max_diff(a: nn.Module, b: nn.Module, inputs: dict) -> float:
    with torch.no_grad():
        ra, rb = _outputs(a, inputs), _outputs(b, inputs)
    if len(ra) != len(rb) or any(x.shape != y.shape for x, y in zip(ra, rb)):
        return float('inf')
    return max(float((x - y).abs().max() / x.abs().max().clamp_min(1e-3)) for x, y in zip(ra, rb))


def _generate_same(a: nn.Module, b: nn.Module, inputs: dict) -> bool:
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        return torch.equal(a.generate(inputs['input_ids'], **kw), b.generate(inputs['input_ids'], **kw))


def _heads(model: nn.Module) -> list[int]:
    return [lay.num_heads for lay in map(attention_layout, model.modules()) if lay is not None] + \
        [m.num_heads for m in model.modules() if isinstance(m, PrunedMultiheadAttention)]


def _check(masked, small, make, causal) -> str:
    """Max relative difference on the example and on other shapes; greedy generate."""
    torch.manual_seed(1)
    first = _max_diff(masked, small, make(2, 9))
    other = _max_diff(masked, small, make(3, 6))
    text = f'{max(first, other):.1e}'
    if causal:
        text += ', generate ' + ('same' if _generate_same(masked, small, make(1, 5)) else 'DIFFERS')
    return text


def _ffn(model, make, causal) -> str:
    removed, total, small = ffn_prune(model, make(2, 9))
    if not total:
        return 'no FFN up-projection found'
    return f'{removed}/{total} removed, {_check(model, small, make, causal)}'


def _first_sum(out) -> torch.Tensor:
    return _outputs_of(out)[0].sum()


def _outputs_of(out) -> list[torch.Tensor]:
    return [t for t in (out.values() if hasattr(out, 'values') else out)
            if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _peer(cls, config, make, size: Size) -> str:
    """Torch-Pruning's head pruning (50%) on the same architecture: runs, params,
    whether the pruned model still runs on another input shape."""
    import torch_pruning as tp
    model = cls(config).eval()
    example = make(2, 9)
    qkv = {}
    for name, module in model.named_modules():
        lay = attention_layout(module)
        if lay is not None:
            for s in (lay.q, lay.k, lay.v):
                qkv[s.owner(module)] = lay.num_heads
    if not qkv:
        return 'not run (no head layout to give it)'
    before = _params(model)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.0,
            pruning_ratio_dict={m: 0.5 for m in qkv}, num_heads=qkv, prune_num_heads=True,
            prune_head_dims=False, head_pruning_ratio=0.5, output_transform=_first_sum)
        pruner.step()
    except TimeoutError:
        raise
    except Exception as exc:
        return f'fails: {type(exc).__name__}: {str(exc)[:120]}'
    after = _params(model)
    if after == before:
        return f'{before} -> {after}: nothing removed'
    try:
        with torch.no_grad():
            model(**make(3, 6))
    except Exception as exc:
        return f'{before} -> {after}, then forward fails: {type(exc).__name__}: {str(exc)[:80]}'
    return f'{before} -> {after}, runs (no exactness check)'


#: Torch-Pruning's graph search does not finish on some models: its time limit per model.
PEER_SECONDS = 60


def _too_long(signum, frame):
    raise TimeoutError(f'did not finish in {PEER_SECONDS} s')


def run(name: str, size: Size, seed: int = 0, peer: bool = False) -> Result:
    """Head pruning, speedup and FFN pruning of one architecture; errors are reported.

    Args:
        name: a key of :func:`architectures`.
        size: model sizes.
        seed: weights and inputs.
        peer: also run Torch-Pruning's head pruning.

    Example::

        print(run('llama (GQA)', Size()))
    """
    cls, config, make, causal = architectures(size)[name]
    res = Result(name)
    torch.manual_seed(seed)
    try:
        model = cls(config).eval()
        example = make(2, 9)
        pruner = TransformerHeadPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear', 'Conv1D']}],
                                       size.head_dim, dummy_input=example)
        res.groups = len(pruner.masking_groups)
        before = _heads(model)
        pruner.compress()
        small = speedup(model, example)
        res.heads = f'{sum(before)} -> {sum(_heads(small))}'
        res.params = f'{_params(model)} -> {_params(small)}'
        res.exact = _check(model, small, make, causal)
    except Exception as exc:  # the row shows what a user would see
        res.error = f'{type(exc).__name__}: {exc}'
    if peer:
        signal.signal(signal.SIGALRM, _too_long)
        signal.alarm(PEER_SECONDS)
        try:
            torch.manual_seed(seed)
            res.peer = _peer(cls, config, make, size)
        except TimeoutError:
            res.peer = f'did not finish in {PEER_SECONDS} s'
        except Exception as exc:
            res.peer = f'fails: {type(exc).__name__}: {str(exc)[:120]}'
        finally:
            signal.alarm(0)
    try:
        torch.manual_seed(seed)
        res.ffn = _ffn(cls(config).eval(), make, causal)
    except Exception as exc:
        res.ffn = f'{type(exc).__name__}: {str(exc)[:300]}'
    return res


def _cell(text: str) -> str:
    return text.replace('|', '/').replace('\n', ' ')


def table(results: list[Result], command: str, size: Size) -> str:
    """The results as the markdown file, the command that produced it at the top.

    Args:
        results: one per architecture.
        command: the command line.
        size: the sizes the models were built with.

    Example::

        text = table([run('bert', Size())], 'python benchmarks/transformers_zoo.py', Size())
    """
    handled = [r for r in results if not r.error]
    lines = [
        '# Attention heads and FFN widths across Hugging Face architectures', '',
        f'Command: `{command}`', '',
        f'transformers {transformers.__version__}, torch {torch.__version__}; models built from '
        f'configs with random weights: width {size.width}, {size.heads} heads of {size.head_dim} '
        f'({size.kv_heads} key/value heads where the architecture groups them), {size.layers} '
        'layer(s) per stack.', '',
        'Heads: `TransformerHeadPruner` at 50% (l1_weight), then `speedup`. *diff*: the largest '
        'difference to the masked model relative to its output scale, over the example input and '
        'an input of another batch size and length; causal LMs also generate 4 greedy tokens '
        'with the KV cache from both. FFN: 50% of every FFN up-projection\'s channels by L1 '
        '(a gated FFN\'s gate loses the same rows), then `speedup`. Torch-Pruning 1.6: '
        '`MetaPruner` with `num_heads` and `prune_num_heads=True` at 50% on the same Q/K/V '
        'projections, run in the same process.', '',
        f'{len(handled)} of {len(results)} architectures have their heads removed; the others '
        'raise the error shown, which names the module and attribute.', '',
        '| architecture | attention modules | heads | params | diff (heads) | FFN channels | '
        'Torch-Pruning (heads) |',
        '|---|---|---|---|---|---|---|',
    ]
    for r in results:
        heads = r.heads if not r.error else f'**not pruned**: {_cell(r.error[:400])}'
        lines.append(f'| {r.name} | {r.groups} | {heads} | {r.params} | {r.exact} | '
                     f'{_cell(r.ffn)} | {_cell(r.peer)} |')
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> None:
    """Runs the sweep and writes the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default='benchmarks/results/transformers_zoo.md')
    parser.add_argument('--width', type=int, default=128)
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--kv-heads', type=int, default=2)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--only', nargs='*', help='architecture names (default: all)')
    parser.add_argument('--no-peer', action='store_true', help='skip Torch-Pruning')
    parser.add_argument('--peer-seconds', type=int, default=PEER_SECONDS)
    args = parser.parse_args(argv)
    globals()['PEER_SECONDS'] = args.peer_seconds
    warnings.filterwarnings('ignore')
    transformers.logging.set_verbosity_error()
    size = Size(args.width, args.heads, args.kv_heads, args.layers)
    results = []
    for name in args.only or list(architectures(size)):
        start = time.perf_counter()
        results.append(run(name, size, peer=not args.no_peer))
        print(f'{name}: {results[-1]} ({time.perf_counter() - start:.1f} s)', flush=True)
    command = 'OMP_NUM_THREADS=1 python benchmarks/transformers_zoo.py ' + shlex.join(
        sys.argv[1:] if argv is None else argv)
    with open(args.out, 'w') as f:
        f.write(table(results, command.strip(), size))


if __name__ == '__main__':
    main()
