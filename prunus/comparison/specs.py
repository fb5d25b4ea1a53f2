"""Which pruners a comparison runs: names, classes, (name, kwargs) pairs or factories."""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from prunus.compression import get_pruner



@dataclass
class PrunerSpec:
    """One pruner of a comparison: a label, how to build it and its fixed arguments."""

    label: str
    build: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    is_class: bool = True

    def make(self, model: Any, config_list: list[dict], context: Mapping[str, Any]) -> Any:
        """Construct the pruner; classes also get what they accept from ``context``
        (``data``, ``criterion``, ``evaluator``, ``dummy_input``) unless given in kwargs."""
        if not self.is_class:
            return self.build(model, config_list, **self.kwargs)
        accepted = _accepted(self.build)
        extra = {k: v for k, v in context.items()
                 if k in accepted and k not in self.kwargs and v is not None}
        return self.build(model, config_list, **extra, **self.kwargs)


def _accepted(cls: Any) -> set[str]:
    """The keyword names ``cls(...)`` takes: its ``__init__``'s, and, while an ``__init__``
    passes ``**kwargs`` on (the NNI-order subclasses, ``**options``), its bases'."""
    names: set[str] = set()
    for klass in getattr(cls, '__mro__', (cls,)):
        init = vars(klass).get('__init__') if isinstance(klass, type) else None
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            break
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


def _one(label: str, spec: Any, framework: str) -> PrunerSpec:
    kwargs: dict[str, Any] = {}
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[1], dict):
            raise TypeError(f"pruners['{label}'] must be (name or class, kwargs dict); got {spec!r}.")
        spec, kwargs = spec
    if isinstance(spec, str):
        return PrunerSpec(label, get_pruner(spec, framework), dict(kwargs))
    if isinstance(spec, type):
        return PrunerSpec(label, spec, dict(kwargs))
    if callable(spec):
        return PrunerSpec(label, spec, dict(kwargs), is_class=False)
    raise TypeError(f"pruners['{label}'] must be a registered name, a pruner class, "
                    f'(name, kwargs) or a factory(model, config_list) -> pruner; got {spec!r}.')


def _label(spec: Any) -> str:
    if isinstance(spec, tuple):
        spec = spec[0]
    if isinstance(spec, str):
        return spec
    return str(getattr(spec, 'registry_name', None) or getattr(spec, '__name__', repr(spec)))


def resolve_pruners(pruners: Any, framework: str) -> list[PrunerSpec]:
    """Normalize ``pruners``: a name, a list of specs, or a dict ``{label: spec}``."""
    if isinstance(pruners, (str, tuple)) or isinstance(pruners, type):
        pruners = [pruners]
    if isinstance(pruners, Mapping):
        items = [(str(k), v) for k, v in pruners.items()]
    else:
        items = [(_label(p), p) for p in pruners]
    if not items:
        raise ValueError('pruners is empty; pass at least one pruner name, class or factory.')
    labels = [label for label, _ in items]
    duplicate = next((lab for lab in labels if labels.count(lab) > 1), None)
    if duplicate is not None:
        raise ValueError(f"pruners has the label '{duplicate}' twice; pass a dict "
                         '{label: spec} to tell them apart.')
    return [_one(label, spec, framework) for label, spec in items]
