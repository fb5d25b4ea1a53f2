"""Calling a model with example inputs, and saying clearly when they do not fit.

The one definition of how prunus calls a model (a tensor, a tuple of positional inputs
or a dict of keywords) and the one validation of example inputs, used by the speedup,
``ModelSpeedup``, ``dependency_aware=True`` and the data-driven pruners' batches. A bad
input is refused before tracing with an error naming the input; where the model itself
rejects it, the error names the first layer that did and the shapes it was given::

    ValueError: dummy_input does not fit the model: layer 'conv1' (Conv2d) rejected
    inputs of shape (1, 1, 8, 8): expected input[1, 1, 8, 8] to have 3 channels, ...
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Any, Iterator

import torch
from torch import nn

FORMS = 'a tensor, a tuple of positional tensors or a dict of keyword tensors'


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` with a tensor, a tuple/list of positional inputs or a dict of kwargs."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _leaves(obj: Any, path: str, acc: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _leaves(value, f'{path}[{key!r}]', acc)
    elif isinstance(obj, (tuple, list)):
        for i, value in enumerate(obj):
            _leaves(value, f'{path}[{i}]', acc)
    else:
        acc.append((path, obj))
    return acc


def check_inputs(inputs: Any, what: str = 'dummy_input') -> None:
    """TypeError or ValueError naming the part of ``inputs`` that cannot be an example
    input: None, no tensor at all, non-string dict keys, NaN or infinite values."""
    if inputs is None:
        raise TypeError(f'{what} is None; give {FORMS} (what the model\'s forward takes).')
    if isinstance(inputs, dict) and any(not isinstance(k, str) for k in inputs):
        bad = next(k for k in inputs if not isinstance(k, str))
        raise TypeError(f'{what} is a dict of keyword inputs, so its keys must be strings; got {bad!r}.')
    leaves = _leaves(inputs, what, [])
    tensors = [(p, v) for p, v in leaves if isinstance(v, torch.Tensor)]
    if not tensors:
        kinds = ', '.join(sorted({type(v).__name__ for _, v in leaves})) or 'nothing'
        raise TypeError(f'{what} holds no tensor (got {kinds}); give {FORMS}.')
    for path, tensor in tensors:
        if (tensor.is_floating_point() or tensor.is_complex()) and tensor.numel() \
                and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f'{path} holds NaN or infinite values; example inputs must be finite.')


def shapes_of(args: Any) -> str:
    """``(1, 3, 8, 8)``, with the dtype where it is not float32: ``(1, 8) int64``."""
    parts = [str(tuple(t.shape)) + ('' if t.dtype == torch.float32 else f' {str(t.dtype).removeprefix("torch.")}')
             for _, t in _leaves(args, '', []) if isinstance(t, torch.Tensor)]
    return ', '.join(parts) or 'no tensor'


def locate_failure(model: nn.Module, inputs: Any) -> tuple[list[str], dict[str, str], Exception | None]:
    """Runs ``model`` (eval mode, no grad) with module hooks; returns the module path
    open when it raised (outermost first), each module's input shapes, and the error
    (None, with an empty path, if it ran)."""
    path: list[str] = []
    shapes: dict[str, str] = {}
    handles = []

    def push(mod, args, kwargs, _n):
        path.append(_n)
        shapes[_n] = shapes_of((args, kwargs))

    def pop(mod, args, out):
        path.pop()

    modes = {m: m.training for m in model.modules()}
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(partial(push, _n=name), with_kwargs=True))
        handles.append(module.register_forward_hook(pop))
    model.eval()  # no BatchNorm statistics move: the model stays as it was
    try:
        with torch.no_grad():
            call_model(model, inputs)
    except Exception as exc:  # the failure being located
        return list(path), shapes, exc
    finally:
        for h in handles:
            h.remove()
        for module, training in modes.items():
            module.training = training
    return [], {}, None


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[0][:240] if lines else type(exc).__name__).rstrip('.')


def rejection(model: nn.Module, inputs: Any, exc: BaseException, what: str) -> ValueError:
    """The error for ``inputs`` that ``model`` raised ``exc`` on: names the innermost
    layer that was running and the shapes it received (the model is run once more)."""
    path, shapes, again = locate_failure(model, inputs)
    return _rejection(model, inputs, again or exc, what, path, shapes)


def _rejection(model: nn.Module, inputs: Any, exc: BaseException, what: str, path: list[str],
               shapes: dict[str, str]) -> ValueError:
    name = path[-1] if path else ''
    if name:
        module = model.get_submodule(name)
        where = f"layer '{name}' ({type(module).__name__}) rejected inputs of shape {shapes[name]}"
    else:
        where = f'the model ({type(model).__name__}) rejected inputs of shape {shapes_of(inputs)}'
    return ValueError(f'{what} does not fit the model: {where}: {type(exc).__name__}: {_first_line(exc)}.')


@contextmanager
def blame_inputs(model: nn.Module, inputs: Any, what: str) -> Iterator[None]:
    """Checks ``inputs``, then runs the block (a trace); if the block fails and the model
    itself rejects ``inputs`` in a plain run, that is the error raised, naming the layer;
    otherwise the block's own error stands."""
    check_inputs(inputs, what)
    try:
        yield
    except Exception:
        path, shapes, exc = locate_failure(model, inputs)
        if exc is not None:
            raise _rejection(model, inputs, exc, what, path, shapes) from exc
        raise


def run_inputs(model: nn.Module, inputs: Any, what: str = 'dummy_input') -> Any:
    """``call_model`` after :func:`check_inputs`; a model that raises on ``inputs``
    becomes the one-line error of :func:`rejection`."""
    check_inputs(inputs, what)
    try:
        return call_model(model, inputs)
    except Exception as exc:
        raise rejection(model, inputs, exc, what) from exc
