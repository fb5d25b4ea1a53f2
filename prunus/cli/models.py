"""Turning command-line words into models and inputs."""
from __future__ import annotations

import importlib
import os
from typing import Any



class CliError(ValueError):
    """A command-line argument was wrong; the message says which and why."""


def parse_shape(text: str) -> tuple[int, ...]:
    """``'1,3,224,224'`` or ``'1x3x224x224'`` -> ``(1, 3, 224, 224)``."""
    parts = text.replace('x', ',').split(',')
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise CliError(f"--input-shape must be positive integers like 1,3,224,224; got '{text}'.")
    return shape


def load_object(spec: str, what: str) -> Any:
    """``'package.module:attr'`` (attr may be dotted) -> the object."""
    module_name, sep, attr = spec.partition(':')
    if not sep or not module_name or not attr:
        raise CliError(f"{what} must be 'module:attr' (e.g. mypkg.nets:Net); got '{spec}'.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"{what} '{spec}': cannot import '{module_name}' ({exc}).") from exc
    for part in attr.split('.'):
        if not hasattr(obj, part):
            raise CliError(f"{what} '{spec}': '{module_name}' has no attribute '{attr}'.")
        obj = getattr(obj, part)
    return obj


def _torchvision(name: str) -> Any:
    import torchvision
    short = name.removeprefix('torchvision.models.')
    builders = set(torchvision.models.list_models())
    if short not in builders:
        return None
    kwargs: dict[str, Any] = {'weights': None}
    if short in ('googlenet', 'inception_v3'):
        kwargs.update(aux_logits=False, init_weights=True)
    return torchvision.models.get_model(short, **kwargs)


def load_model(spec: str, weights: str | None = None) -> Any:
    """A torchvision model name (random weights) or ``module:attr`` (a module instance,
    or a class or function called with no arguments), optionally with a state_dict file."""
    import torch
    if ':' in spec:
        obj = load_object(spec, 'MODEL')
        model = obj if isinstance(obj, torch.nn.Module) else obj() if callable(obj) else obj
    else:
        model = _torchvision(spec)
        if model is None:
            import difflib
            import torchvision
            close = difflib.get_close_matches(spec, torchvision.models.list_models(), n=1)
            hint = f" did you mean '{close[0]}'?" if close else ''
            raise CliError(f"MODEL '{spec}' is neither a torchvision model nor 'module:attr';{hint}")
    if not isinstance(model, torch.nn.Module):
        raise CliError(f"MODEL '{spec}' gave a {type(model).__name__}, not a torch.nn.Module.")
    if weights is not None:
        if not os.path.exists(weights):
            raise CliError(f"--weights '{weights}' does not exist.")
        model.load_state_dict(torch.load(weights, map_location='cpu', weights_only=True))
    return model.eval()
