"""Every error a pruner's constructor raises names the pruner.

Hyperparameters are checked in many places (a schedule, a registry lookup, a shared
helper) that do not know which pruner asked; rather than thread the name through each,
the pruner base classes wrap their subclasses' ``__init__`` so that a plain
``ValueError``/``TypeError`` escaping it is re-raised as the same type with
``'<PrunerClass>: '`` in front (once; messages that already name it are left alone)::

    ValueError: SimulatedAnnealingPruner: cool_down_rate must be in (0, 1); got 1.5.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

_WRAPPED = '_prunus_names_errors'


def _prefixed(owner: str, exc: BaseException) -> BaseException | None:
    if type(exc) not in (ValueError, TypeError) or len(exc.args) != 1 or not isinstance(exc.args[0], str):
        return None
    message = exc.args[0]
    if message.startswith(owner) or f'{owner}:' in message.split(';')[0]:
        return None
    return type(exc)(f'{owner}: {message}')


def name_errors(init: Callable[..., None]) -> Callable[..., None]:
    """Wraps a pruner's ``__init__`` as described above."""
    if getattr(init, _WRAPPED, False):
        return init

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except (ValueError, TypeError) as exc:
            better = _prefixed(type(self).__name__, exc)
            if better is None:
                raise
            raise better.with_traceback(exc.__traceback__) from exc.__cause__

    setattr(wrapper, _WRAPPED, True)
    return wrapper


def wrap_subclass_init(cls: type) -> None:
    """For ``__init_subclass__``: wrap ``cls.__init__`` if ``cls`` defines its own."""
    if '__init__' in cls.__dict__:
        cls.__init__ = name_errors(cls.__dict__['__init__'])
