"""``compare``: every pruner at every budget, measured the same way, as one DataFrame."""
from __future__ import annotations

import importlib
import logging
import math
import sys
import time
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from .cache import RunCache
from .frame import Comparison
from .specs import PrunerSpec, resolve_pruners


logger = logging.getLogger('prunus.compare')
NAN = float('nan')


def _framework(model: Any) -> str:
    torch = sys.modules.get('torch')
    if torch is not None and isinstance(model, torch.nn.Module):
        return 'torch'
    keras = sys.modules.get('keras')
    if keras is not None and isinstance(model, keras.Model):
        return 'tf'
    raise TypeError(f'compare() needs a torch.nn.Module or a keras.Model; got {type(model).__name__}.')


_BACKENDS = {'torch': 'prunus.comparison.torch_backend', 'tf': 'prunus.comparison.keras_backend'}


def _backend_module(framework: str) -> Any:
    # by name, as the registry loads a framework: comparing a torch model never imports keras
    return importlib.import_module(_BACKENDS[framework])


def _backend(framework: str, model: Any, example: Any, data: Any, latency_seconds: float) -> Any:
    Backend = _backend_module(framework).Backend
    if example is None:
        if data is None:
            raise ValueError('compare() needs example_inputs= or data= (batches to calibrate '
                             'and to take an example input from).')
        example = Backend.example_from(data)
    return Backend(model, example, latency_seconds)


def _default_config(budget: float, output_layer: str | None) -> list[dict]:
    config: list[dict] = [{'sparsity': budget, 'op_types': ['default']}]
    if output_layer is not None:
        config.append({'exclude': True, 'op_names': [output_layer]})
    return config


def _config_for(config_list: Any, budget: float, output_layer: str | None) -> list[dict]:
    if config_list is None:
        return _default_config(budget, output_layer)
    if callable(config_list):
        return config_list(budget)
    # a template: every entry's sparsity-like key becomes the budget
    keys = ('sparsity', 'sparsity_per_layer', 'total_sparsity', 'final_sparsity')
    return [{k: (budget if k in keys else v) for k, v in entry.items()} for entry in config_list]


def _evaluate(evaluator: Callable | None, model: Any) -> float:
    return NAN if evaluator is None else float(evaluator(model))


def _fingerprint(framework: str, backend: Any, model: Any) -> dict[str, Any]:
    return {'framework': framework, 'model': type(model).__name__,
            'params': backend.params(model), 'flops': backend.flops({})}


def _dense_row(backend: Any, model: Any, evaluator: Callable | None) -> dict[str, Any]:
    median, spread = backend.latency(model)
    flops = backend.flops({})
    score = _evaluate(evaluator, model)
    return {'pruner': 'dense', 'budget': 0.0, 'accuracy_pruned': score, 'accuracy_finetuned': score,
            'params': backend.nonzero_params(model), 'flops': flops,
            'params_small': backend.params(model), 'flops_small': flops,
            'latency_ms': median, 'latency_spread_ms': spread, 'seconds': 0.0,
            'layer_sparsity': {}, 'note': ''}


def _run(spec: PrunerSpec, budget: float, dense: Any, backend: Any, options: dict) -> dict[str, Any]:
    start = time.perf_counter()
    model = backend.copy(dense)
    config = _config_for(options['config_list'], budget, options['output_layer'])
    try:
        pruner = spec.make(model, config, options['context'])
        model = pruner.compress() or model
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"compare: pruner '{spec.label}' at budget {budget:g}: {exc}") from exc
    masks = backend.masks(model, pruner)
    row = {'pruner': spec.label, 'budget': budget,
           'accuracy_pruned': _evaluate(options['evaluator'], model),
           'accuracy_finetuned': NAN, 'params': backend.nonzero_params(model),
           'flops': backend.flops(masks), 'layer_sparsity': backend.layer_sparsity(masks),
           'note': ''}
    if options['finetune'] is not None:
        options['finetune'](model, pruner)
        row['accuracy_finetuned'] = _evaluate(options['evaluator'], model)
        masks = backend.masks(model, pruner)
    row['seconds'] = time.perf_counter() - start
    target = model
    row['params_small'], row['flops_small'] = NAN, NAN
    if options['speedup']:
        try:
            target, row['params_small'], row['flops_small'] = backend.shrink(model, masks)
        except options['shrink_errors'] as exc:
            row['note'] = f'speedup failed: {str(exc).splitlines()[0]}'
    row['latency_ms'], row['latency_spread_ms'] = backend.latency(target)
    return row


def compare(model: Any, pruners: Any, *, data: Iterable[Any] | None = None,
            evaluator: Callable[[Any], float] | None = None,
            finetune: Callable[[Any, Any], None] | None = None,
            budgets: Sequence[float] = (0.5,), config_list: Any = None,
            example_inputs: Any = None, criterion: Callable | None = None,
            speedup: bool = True, latency_seconds: float = 0.2,
            cache_dir: str | None = None, progress: bool = True) -> Comparison:
    """Prune copies of ``model`` with each pruner at each budget and measure every result.

    Works on PyTorch modules and Keras 3 models alike. Each run prunes a fresh copy, scores
    it with ``evaluator`` right after pruning and, when ``finetune`` is given, after
    fine-tuning; counts its non-zero parameters and the FLOPs the masks leave; physically
    shrinks it with the framework's speedup and times the smaller model (PyTorch:
    ``torch.utils.benchmark``; Keras: the same blocked timing of a compiled call). The
    user's model is never modified.

    Args:
        model: the trained dense model.
        pruners: pruner names (``'l1'``, ``'fpgm'``, ...), pruner classes, ``(name, kwargs)``
            pairs or factories ``f(model, config_list) -> pruner``; a dict ``{label: spec}``
            names them. Classes get ``data``, ``criterion``, ``evaluator`` and
            ``dummy_input`` when their constructor takes them.
        data: batches (``(x, y)`` pairs) given to the data-driven pruners; the first sample
            is the example input unless ``example_inputs`` is given.
        evaluator: ``evaluator(model) -> float``, e.g. validation accuracy.
        finetune: ``finetune(model, pruner)`` trains the pruned model in place.
        budgets: the sparsities to try, each in [0, 1).
        config_list: None (every default layer type at the budget, except the last
            conv/linear layer, the classifier), a config_list whose sparsity keys are
            replaced by each budget, or ``f(budget) -> config_list``.
        example_inputs: the input for FLOPs, speedup and latency.
        criterion: the loss, for the pruners that need one (Taylor).
        speedup: also shrink each result physically and time the smaller model.
        latency_seconds: minimum timing per model.
        cache_dir: a directory keeping every finished run; a rerun reads them back and
            runs only what is missing (``prunus.compare`` logs how many it resumed).
        progress: show a tqdm bar.

    Returns:
        A :class:`Comparison` (a pandas DataFrame) with one row per run plus a ``dense``
        row, and ``.plot()``.

    Raises:
        TypeError: ``model`` is neither a torch nor a Keras model, or a pruner spec is not
            understood.
        ValueError: a budget outside [0, 1), an unknown pruner name, no example input, or
            a ``cache_dir`` that holds another model's comparison.

    Example::

        table = compare(model, ['l1', 'fpgm', 'taylorfo'], data=batches, budgets=[0.3, 0.6],
                        evaluator=accuracy, finetune=lambda m, p: train(m, epochs=2),
                        criterion=nn.CrossEntropyLoss())
        table.plot()
    """
    framework = _framework(model)
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 <= b < 1 or math.isnan(b):
            raise ValueError(f'budgets must be sparsities in [0, 1); got {b!r}.')
    specs = resolve_pruners(pruners, framework)
    backend = _backend(framework, model, example_inputs, data, latency_seconds)
    cache = RunCache(cache_dir, _fingerprint(framework, backend, model))
    options = _options(framework, backend, model, data, evaluator, finetune, config_list,
                       criterion, speedup)
    return _sweep(specs, budgets, model, backend, cache, options, progress)


def _options(framework: str, backend: Any, model: Any, data: Any, evaluator: Any, finetune: Any,
             config_list: Any, criterion: Any, speedup: bool) -> dict[str, Any]:
    calibration = list(data) if data is not None else None
    context = {'data': calibration, 'criterion': criterion, 'evaluator': evaluator,
               'dummy_input': backend.example}
    return {'config_list': config_list, 'output_layer': backend.output_layer(model),
            'context': context, 'evaluator': evaluator, 'finetune': finetune,
            'speedup': speedup, 'shrink_errors': _backend_module(framework).SHRINK_ERRORS}


def _sweep(specs: list[PrunerSpec], budgets: Sequence[float], model: Any, backend: Any,
           cache: RunCache, options: dict, progress: bool) -> Comparison:
    runs = [('dense', 0.0, None)] + [(s.label, float(b), s) for s in specs for b in budgets]
    done = sum(cache.get(label, budget) is not None for label, budget, _ in runs)
    if done:
        logger.info('resuming: %d of %d runs read from %s', done, len(runs), cache.directory)
    rows = []
    bar = tqdm(runs, desc='compare', disable=not progress, leave=False)
    for label, budget, spec in bar:
        bar.set_postfix_str(f'{label} @ {budget:g}')
        row = cache.get(label, budget)
        if row is None:
            row = (_dense_row(backend, model, options['evaluator']) if spec is None
                   else _run(spec, budget, model, backend, options))
            cache.put(label, budget, row)
        rows.append(row)
    return Comparison.from_rows(rows)
