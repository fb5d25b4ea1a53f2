"""The public registry of pruners, by short name and framework.

Every pruner class registers itself under the names users and ``AGPPruner(...,
pruning_algorithm=...)`` know it by (``'level'``, ``'l1'``, ``'fpgm'``, ...). The
conformance tests iterate this registry, so a pruner is tested once it is registered::

    >>> from prunus.compression import available_pruners
    >>> sorted(available_pruners('torch'))[:3]
    ['admm', 'agp', 'amc']
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, TypeVar

_REGISTRY: dict[str, dict[str, type]] = {}
_FRAMEWORK_MODULES = {'torch': 'prunus.compression.torch', 'tf': 'prunus.compression.tf'}

T = TypeVar('T', bound=type)


def register_pruner(name: str, *, framework: str) -> Callable[[T], T]:
    """Class decorator that files a pruner under ``name`` for ``framework``.

    Args:
        name: the short name (``'l1'``, ``'fpgm'``, ...).
        framework: ``'torch'`` or ``'tf'``.

    Returns:
        The decorator; it returns the class unchanged and sets ``registry_name``.

    Raises:
        ValueError: another class is already registered under ``name``.

    Example::

        @register_pruner('my_norm', framework='torch')
        class MyNormPruner(L1FilterPruner):
            ...
    """
    def decorate(cls: T) -> T:
        table = _REGISTRY.setdefault(framework, {})
        # A subclass may take over its base's name (the NNI-signature layer does).
        if name in table and table[name] is not cls and not issubclass(cls, table[name]):
            raise ValueError(f"pruner name '{name}' is already registered for {framework} "
                             f'by {table[name].__name__}.')
        table[name] = cls
        cls.registry_name = name
        return cls
    return decorate


def _load(framework: str) -> dict[str, type]:
    if framework not in _FRAMEWORK_MODULES:
        raise ValueError(f"framework must be one of {sorted(_FRAMEWORK_MODULES)}; got {framework!r}.")
    # Importing the framework package is what registers its pruners; done lazily so the
    # core never imports torch or tensorflow by itself.
    importlib.import_module(_FRAMEWORK_MODULES[framework])
    return _REGISTRY.get(framework, {})


def available_pruners(framework: str = 'torch') -> dict[str, type]:
    """A copy of the name -> class table for ``framework`` ('torch' or 'tf').

    Args:
        framework: ``'torch'`` or ``'tf'``.

    Returns:
        ``{name: pruner class}``.

    Raises:
        ValueError: an unknown framework.

    Example::

        sorted(available_pruners('tf'))   # ['agp', 'apoz', 'fpgm', 'l1', ...]
    """
    return dict(_load(framework))


def is_registered(name: str) -> bool:
    """Whether any framework has registered a pruner as ``name`` so far (loads nothing)."""
    return any(name in table for table in _REGISTRY.values())


def get_pruner(name: str, framework: str = 'torch') -> type:
    """The pruner class registered as ``name``; the error suggests close names.

    Args:
        name: the registered name.
        framework: ``'torch'`` or ``'tf'``.

    Returns:
        The pruner class.

    Raises:
        ValueError: nothing is registered as ``name`` (the message suggests close names).

    Example::

        L1 = get_pruner('l1')
        pruner = L1(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}])
    """
    table = _load(framework)
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f" did you mean '{close[0]}'?" if close else f" known: {', '.join(sorted(table))}."
        raise ValueError(f"no {framework} pruner is registered as '{name}';{hint}")
    return table[name]
