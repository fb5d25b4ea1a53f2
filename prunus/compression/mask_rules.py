"""The one set of rules a mask dict must satisfy, for both frameworks.

A mask dict is ``{module_or_layer_name: {'weight': mask, 'bias': mask}}``. Wherever masks
enter prunus (a dict, a mask file, a pruner's ``get_masks()``; PyTorch and Keras) they are
checked here before anything is changed, so a bad mask never reaches a model:

* the dict is a mapping of names to mappings of parameter names to arrays;
* the module (layer) exists in the model, and has the parameter;
* the mask has the parameter's shape;
* its dtype is bool, integer or real floating point;
* every value is finite and either 0 or 1 (a NaN or a 0.5 would write NaN or halved
  weights into the model).

The framework side supplies the facts (:class:`MaskFacts`); this module words the
errors, so both frameworks say the same thing::

    >>> check_facts("masks['conv1']['weight']", MaskFacts((2,), 'float', finite=False, binary=False), (2,))
    Traceback (most recent call last):
    ...
    ValueError: masks['conv1']['weight'] holds NaN or infinite values; a mask holds only 0 and 1.
"""
from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

#: What a mask may be made of; 'other' (complex, strings, objects) is refused.
MASK_KINDS = ('bool', 'int', 'float')


@dataclass(frozen=True)
class MaskFacts:
    """What the framework found out about one mask array."""

    shape: tuple
    kind: str  # one of MASK_KINDS or 'other'
    finite: bool = True
    binary: bool = True
    dtype: str = ''


def mask_where(name: str, pname: str) -> str:
    """How an error names one mask: ``masks['conv1']['weight']``."""
    return f'masks[{name!r}][{pname!r}]'


def did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean '{close[0]}'?" if close else '.'


MASK_DICT = "{module_name: {'weight': mask, 'bias': mask}}"


def not_masks(masks: Any, pruner: bool = True) -> TypeError:
    """The one error for a ``masks`` argument of the wrong kind."""
    also = ', a path to a mask file, or a pruner with get_masks()' if pruner else ' or a path to a mask file'
    return TypeError(f'masks must be a dict {MASK_DICT}{also}; got {type(masks).__name__}.')


def check_structure(masks: Any, source: str = 'masks') -> None:
    """``masks`` must be ``{name: {param: array}}`` with string keys; TypeError otherwise.

    ``source`` names where the dict came from (a file path) in the message.
    """
    if not isinstance(masks, Mapping):
        raise TypeError(f'{source} must be a dict {MASK_DICT}; got {type(masks).__name__}.')
    for name, entry in masks.items():
        if not isinstance(name, str):
            raise TypeError(f'{source}: module names must be strings; got {name!r} '
                            f'({type(name).__name__}).')
        if not isinstance(entry, Mapping):
            raise TypeError(f"{source}[{name!r}] must be a dict like {{'weight': mask}}; "
                            f'got {type(entry).__name__}.')
        for pname in entry:
            if not isinstance(pname, str):
                raise TypeError(f'{source}[{name!r}]: parameter names must be strings; '
                                f'got {pname!r} ({type(pname).__name__}).')


@contextmanager
def naming_source(source: str) -> Iterator[None]:
    """Errors raised inside name where the masks came from (a mask file), once."""
    try:
        yield
    except (TypeError, ValueError) as exc:
        if source == 'masks' or type(exc) not in (TypeError, ValueError) or str(exc).startswith(source):
            raise
        raise type(exc)(f'{source}: {exc}') from exc


def check_module(name: str, known: Iterable[str], what: str = 'module') -> None:
    """The mask's module must exist: ValueError with the closest name otherwise."""
    known = list(known)
    if name not in known:
        raise ValueError(f"masks name {what} '{name}', which the model does not have"
                         f'{did_you_mean(name, known)}')


def check_parameter(name: str, pname: str, known: Iterable[str], what: str = 'module') -> None:
    known = list(known)
    if pname not in known:
        listed = ', '.join(repr(k) for k in known) or 'none'
        raise ValueError(f"{mask_where(name, pname)}: {what} '{name}' has no parameter "
                         f"'{pname}' to mask (it has {listed}).")


def check_facts(where: str, facts: MaskFacts, expected_shape: tuple) -> None:
    """Shape, dtype, finiteness and 0/1 values of one mask; the first problem is raised."""
    if facts.kind not in MASK_KINDS:
        raise TypeError(f'{where} has dtype {facts.dtype or facts.kind}; a mask is bool, '
                        'integer or floating point.')
    if tuple(facts.shape) != tuple(expected_shape):
        raise ValueError(f'{where} has shape {tuple(facts.shape)}, but the parameter has shape '
                         f'{tuple(expected_shape)}.')
    if not facts.finite:
        raise ValueError(f'{where} holds NaN or infinite values; a mask holds only 0 and 1.')
    if not facts.binary:
        raise ValueError(f'{where} holds values other than 0 and 1; a mask holds only 0 and 1 '
                         '(scale weights outside prunus).')
