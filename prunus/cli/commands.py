"""What each subcommand does, given its parsed arguments."""
from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
from typing import Any

import torch

from prunus.compression.torch import apply_compression_results
from prunus.compression.torch.flops import module_flops
from prunus.speedup import save, speedup

from .models import CliError, load_model, load_object, parse_shape


_IMAGE = '1,3,224,224'


def _inputs(args: argparse.Namespace) -> Any:
    torch.manual_seed(args.seed)
    return torch.randn(parse_shape(args.input_shape))


def _apply_masks(model: Any, masks: str | None) -> None:
    if masks is not None:
        try:
            apply_compression_results(model, masks)
        except FileNotFoundError as exc:
            raise CliError(f"MASKS '{masks}' does not exist.") from exc


def layer_rows(model: Any, inputs: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per module that owns parameters: params, FLOPs and the fraction of zero weights
    (a zero-initialised bias is not pruning, so only ``weight`` counts where there is one);
    and the total row."""
    flops = module_flops(model, inputs)
    rows, zeros, counted = [], 0, 0
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if not own:
            continue
        weight = module._parameters.get('weight')
        measured = [weight] if weight is not None else own
        layer_zeros = sum(int((p == 0).sum()) for p in measured)
        layer_count = sum(p.numel() for p in measured)
        zeros, counted = zeros + layer_zeros, counted + layer_count
        rows.append({'layer': name or '(root)', 'type': type(module).__name__,
                     'params': sum(p.numel() for p in own), 'flops': int(flops.get(name, 0)),
                     'sparsity': layer_zeros / max(layer_count, 1)})
    total = {'layer': 'total', 'type': '', 'params': sum(p.numel() for p in model.parameters()),
             'flops': int(flops.get('', 0)), 'sparsity': zeros / max(counted, 1)}
    return rows, total


def _render(rows: list[dict[str, Any]], total: dict[str, Any]) -> str:
    header = ['layer', 'type', 'params', 'FLOPs', 'sparsity']
    cells = [header] + [[r['layer'], r['type'], f"{r['params']:,}", f"{r['flops']:,}",
                         f"{r['sparsity']:.2%}"] for r in rows + [total]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = {2, 3, 4}
    return '\n'.join('  '.join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                     for row in cells)


def run_report(args: argparse.Namespace) -> int:
    """``prunus report``: per-layer params, FLOPs and sparsity of a model."""
    model = load_model(args.model, args.weights)
    _apply_masks(model, args.masks)
    x = _inputs(args)
    rows, total = layer_rows(model, x)
    if args.format == 'json':
        print(json.dumps({'layers': rows, 'total': total}, indent=1))
    elif args.format == 'csv':
        writer = csv.DictWriter(sys.stdout, fieldnames=list(total))
        writer.writeheader()
        writer.writerows(rows + [total])
    else:
        print(_render(rows, total))
    return 0


def run_speedup(args: argparse.Namespace) -> int:
    """``prunus speedup``: physically remove the masked channels and save the result."""
    model = load_model(args.model, args.weights)
    x = _inputs(args)
    try:
        small, summary = speedup(model, x, args.masks, return_summary=True, check=not args.no_check)
    except FileNotFoundError as exc:
        raise CliError(f"MASKS '{args.masks}' does not exist.") from exc
    save(small, args.output)
    print(summary)
    print(f"saved to {args.output}; reload with prunus.speedup.load('{args.output}', <a fresh "
          f'{type(model).__name__}>)')
    return 0


def _callable(spec: str | None, what: str) -> Any:
    if spec is None:
        return None
    obj = load_object(spec, what)
    if not callable(obj):
        raise CliError(f"{what} '{spec}' is a {type(obj).__name__}, not a function.")
    return obj


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(p) for p in text.split(',') if p.strip()]
    except ValueError as exc:
        raise CliError(f"{what} must be numbers separated by commas; got '{text}'.") from exc


def run_compare(args: argparse.Namespace) -> int:
    """``prunus compare``: the comparison table of :func:`prunus.compare`, printed."""
    # the comparison needs pandas (the [compare] extra): loaded by name, so that the other
    # commands work without it
    compare = importlib.import_module('prunus.comparison').compare
    model = load_model(args.model, args.weights)
    data_factory = _callable(args.data, '--data')
    table = compare(model, [p.strip() for p in args.pruners.split(',') if p.strip()],
                    data=data_factory() if data_factory else None,
                    evaluator=_callable(args.evaluator, '--evaluator'),
                    finetune=_callable(args.finetune, '--finetune'),
                    budgets=_floats(args.budgets, '--budgets'), example_inputs=_inputs(args),
                    latency_seconds=args.latency_seconds, cache_dir=args.cache_dir)
    shown = table.drop(columns=['layer_sparsity'])
    print(shown.to_string(index=False))
    if args.output:
        shown.to_csv(args.output, index=False)
    if args.plot:
        table.plot(args.plot)
    return 0


DEFAULT_SHAPE = _IMAGE
