"""Which layers each ``config_list`` entry selects, framework-agnostically.

A model is described to this module as a list of :class:`LayerRef` (qualified name and
class name), so the same rules serve PyTorch modules and Keras layers.

Within one entry, the name selectors (``op_names``, ``op_names_re``, ``op_partial_names``)
are united and then intersected with ``op_types`` when both are given. Across entries the
last entry that selects a layer wins (see :mod:`prunus.compression.config`).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Sequence

from .config import ConfigEntry


@dataclass(frozen=True)
class LayerRef:
    """A layer as the core sees it: its qualified name, its class name, and ``kinds``: the
    names of the framework's layer classes it derives from (a ``MyConv(nn.Conv2d)`` is a
    ``Conv2d``, so ``op_types: ['Conv2d']`` and ``'default'`` select it too)."""

    name: str
    type_name: str
    kinds: tuple[str, ...] = ()

    def is_a(self, types: set[str] | Sequence[str]) -> bool:
        return self.type_name in types or any(k in types for k in self.kinds)


@dataclass(frozen=True)
class Selection:
    """A layer chosen for pruning and the entry that chose it."""

    layer: LayerRef
    entry: ConfigEntry


def _suggest(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        return 'did you mean ' + ' or '.join(repr(c) for c in close) + '?'
    return 'no module has a similar name.'


def _by_name(entry: ConfigEntry, layers: Sequence[LayerRef]) -> set[str] | None:
    """Names picked by the name selectors of ``entry``; None when it has none."""
    if not any(key in entry for key in ('op_names', 'op_names_re', 'op_partial_names')):
        return None
    all_names = [layer.name for layer in layers]
    known = set(all_names)
    picked: set[str] = set()
    for name in entry.get('op_names', []):
        if name not in known:
            raise ValueError(f"{entry.where}['op_names'] names '{name}', which matches no module; "
                             f'{_suggest(name, all_names)}')
        picked.add(name)
    for pattern in entry.get('op_names_re', []):
        regex = re.compile(pattern)
        hits = {n for n in all_names if regex.fullmatch(n)}
        if not hits:
            raise ValueError(f"{entry.where}['op_names_re'] pattern {pattern!r} matches no module name.")
        picked |= hits
    for part in entry.get('op_partial_names', []):
        hits = {n for n in all_names if part in n}
        if not hits:
            raise ValueError(f"{entry.where}['op_partial_names'] {part!r} is part of no module name.")
        picked |= hits
    return picked


def _types_of(entry: ConfigEntry, prunable: set[str], supported: Sequence[str],
              default: Sequence[str], pruner: str) -> set[str] | None:
    """The class names ``entry['op_types']`` selects; ``prunable``: class names in the
    model that derive from a supported type (a subclass may be named too)."""
    if 'op_types' not in entry:
        return None
    types: set[str] = set()
    for type_name in entry.get('op_types'):
        if type_name == 'default':
            types |= set(default)
            continue
        if type_name not in supported and type_name not in prunable:
            known = sorted(set(supported) | prunable)
            case = [k for k in known if k.lower() == type_name.lower()]
            if case or not entry.exclude:  # an exclude of a wrong-case name would exclude nothing
                close = case or difflib.get_close_matches(type_name, known, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ''
                raise ValueError(f"{entry.where}['op_types'] names '{type_name}', which {pruner} cannot "
                                 f"prune; {hint}it prunes: {', '.join(supported)}.")
        types.add(type_name)
    return types


def _entry_layers(entry: ConfigEntry, layers: Sequence[LayerRef], supported: Sequence[str],
                  default: Sequence[str], pruner: str) -> list[LayerRef]:
    names = _by_name(entry, layers)
    derived = {layer.type_name for layer in layers if layer.is_a(supported)}
    types = _types_of(entry, derived, supported, default, pruner)
    chosen = []
    for layer in layers:
        if names is not None and layer.name not in names:
            continue
        if types is not None and not layer.is_a(types):
            continue
        if not layer.is_a(supported):
            if entry.exclude or types is None and layer.name not in entry.get('op_names', []):
                continue  # a regex or a partial name may sweep up containers and activations
            raise ValueError(f"{entry.where}['op_names'] names '{layer.name}', a {layer.type_name}, "
                             f"which {pruner} cannot prune; it prunes: {', '.join(supported)}.")
        chosen.append(layer)
    if not chosen and not entry.exclude:
        raise ValueError(f'{entry.where} selects no layer that {pruner} can prune '
                         f'(it prunes: {", ".join(supported)}).')
    return chosen


def select_layers(entries: Sequence[ConfigEntry], layers: Sequence[LayerRef], *,
                  supported_types: Sequence[str], default_types: Sequence[str],
                  pruner: str = 'this pruner') -> list[Selection]:
    """Resolves entries against a model's layers; the last entry selecting a layer wins.

    Returns the selected layers in model order.

    Raises:
        ValueError: a selector matches nothing, names a layer the pruner cannot prune, or the
            whole list leaves nothing to prune.
    """
    owner: dict[str, ConfigEntry] = {}
    for entry in entries:
        for layer in _entry_layers(entry, layers, supported_types, default_types, pruner):
            if entry.exclude:
                owner.pop(layer.name, None)
            else:
                owner[layer.name] = entry
    if not owner:
        raise ValueError('config_list excludes every layer it selects; nothing is left to prune.')
    return [Selection(layer, owner[layer.name]) for layer in layers if layer.name in owner]


__all__ = ['LayerRef', 'Selection', 'select_layers']
