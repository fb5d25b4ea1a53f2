"""Which layers each ``config_list`` entry selects, framework-agnostically.

A model is described to this module as a list of :class:`LayerRef` (qualified name and
class name), so the same rules serve PyTorch modules and Keras layers.

Both PyTorch APIs select here, each with its own, explicit name-matching rule
(:data:`NAME_MATCHING`):

* a ``config_list`` entry (:func:`select_layers`): the name selectors (``op_names`` exact
  names, ``op_names_re`` regular expressions matching the whole name, ``op_partial_names``
  parts of names) are united and then intersected with ``op_types`` when both are given.
  Across entries the last entry that selects a layer wins (see
  :mod:`prunus.compression.config`);
* a training-API entry (:func:`select_by_settings`): ``pruning_op_types`` match class names
  by prefix, ``names`` are exact, ``op_names`` and ``excluded_op_names`` are regular
  expressions matched anywhere in the name (``re.search``); exclusions win.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .config import ConfigEntry
from .errors import ConfigValueError


@dataclass(frozen=True)
class LayerRef:
    """A layer as the core sees it: its qualified name, its class name, and ``kinds``: the
    names of the framework's layer classes it derives from (a ``MyConv(nn.Conv2d)`` is a
    ``Conv2d``, so ``op_types: ['Conv2d']`` and ``'default'`` select it too).

    Example::

        LayerRef('features.0', 'MyConv', kinds=('Conv2d',)).is_a(['Conv2d'])   # True
    """

    name: str
    type_name: str
    kinds: tuple[str, ...] = ()

    def is_a(self, types: set[str] | Sequence[str]) -> bool:
        """Whether the layer's class, or a framework class it derives from, is in ``types``."""
        return self.type_name in types or any(k in types for k in self.kinds)


@dataclass(frozen=True)
class Selection:
    """A layer chosen for pruning and the entry that chose it.

    Example::

        chosen = select_layers(entries, layers, supported_types=['Conv2d'], default_types=['Conv2d'])
        [(s.layer.name, s.entry.get('sparsity')) for s in chosen]
    """

    layer: LayerRef
    entry: ConfigEntry


#: How each API's name selectors match a layer's qualified name.
NAME_MATCHING: dict[str, dict[str, str]] = {
    'config_list': {'op_names': 'exact', 'op_names_re': 'fullmatch', 'op_partial_names': 'part'},
    'training': {'names': 'exact', 'op_names': 'search', 'excluded_op_names': 'search'},
}

_MATCHERS = {
    'exact': lambda pattern, name: pattern == name,
    'fullmatch': lambda pattern, name: re.fullmatch(pattern, name) is not None,
    'search': lambda pattern, name: re.search(pattern, name) is not None,
    'part': lambda pattern, name: pattern in name,
}


def matching(rule: str, pattern: str, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that ``pattern`` selects under ``rule`` (a value of
    :data:`NAME_MATCHING`), in order."""
    match = _MATCHERS[rule]
    return [name for name in names if match(pattern, name)]


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
    rules = NAME_MATCHING['config_list']
    picked: set[str] = set()
    for key, missing in (('op_names', "names '{}', which matches no module; {}"),
                         ('op_names_re', 'pattern {!r} matches no module name.'),
                         ('op_partial_names', '{!r} is part of no module name.')):
        for pattern in entry.get(key, []):
            hits = set(matching(rules[key], pattern, all_names))
            if not hits:
                raise ConfigValueError(f"{entry.where}['{key}'] " + missing.format(pattern, _suggest(pattern, all_names)))
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
                raise ConfigValueError(f"{entry.where}['op_types'] names '{type_name}', which {pruner} cannot "
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
            raise ConfigValueError(f"{entry.where}['op_names'] names '{layer.name}', a {layer.type_name}, "
                             f"which {pruner} cannot prune; it prunes: {', '.join(supported)}.")
        chosen.append(layer)
    if not chosen and not entry.exclude:
        raise ConfigValueError(f'{entry.where} selects no layer that {pruner} can prune '
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

    Args:
        entries: the validated config entries.
        layers: the model's layers, in model order.
        supported_types: the layer types the pruner can prune.
        default_types: what ``op_types: ['default']`` means for the pruner.
        pruner: the pruner's name, for messages.

    Example::

        layers = [LayerRef('conv', 'Conv2d', ('Conv2d',)), LayerRef('fc', 'Linear', ('Linear',))]
        entries = validate_config_list([{'sparsity': 0.5, 'op_types': ['Conv2d']}])
        select_layers(entries, layers, supported_types=['Conv2d', 'Linear'], default_types=['Conv2d'])
    """
    owner: dict[str, ConfigEntry] = {}
    for entry in entries:
        for layer in _entry_layers(entry, layers, supported_types, default_types, pruner):
            if entry.exclude:
                owner.pop(layer.name, None)
            else:
                owner[layer.name] = entry
    if not owner:
        raise ConfigValueError('config_list excludes every layer it selects; nothing is left to prune.')
    return [Selection(layer, owner[layer.name]) for layer in layers if layer.name in owner]


def _any_match(rule: str, patterns: Sequence[str], name: str) -> bool:
    return any(_MATCHERS[rule](pattern, name) for pattern in patterns)


def _type_matches(layer: LayerRef, wanted: Sequence[str]) -> bool:
    """A training-API type name selects a class by prefix ('Conv' selects Conv2d)."""
    return any(layer.type_name == w or layer.type_name.startswith(w) for w in wanted)


def select_by_settings(settings: Mapping[str, Any], layers: Sequence[LayerRef], *,
                       prunable_types: Sequence[str], where: str) -> list[str]:
    """Names of the layers one training-API entry selects, in model order.

    ``layers``: the model's layers of ``prunable_types`` (the only ones it may select).

    Raises:
        ValueError: no listed type, or an exact name, selects a prunable layer.
    """
    wanted = settings['pruning_op_types']
    # As in INC, a type the model lacks (the default 'Conv' on a Linear-only model) is
    # simply not found; only a list of which no type matches is an error.
    if not any(_type_matches(layer, wanted) for layer in layers):
        raise ConfigValueError(f"{where}['pruning_op_types'] {wanted!r} matches no prunable layer of the "
                         f"model (prunable: {', '.join(prunable_types)}).")
    names = [layer.name for layer in layers if _type_matches(layer, wanted)]
    rules = NAME_MATCHING['training']
    exact = [n[:-len('.weight')] if n.endswith('.weight') else n for n in settings.get('names', [])]
    for name in exact:
        if not matching(rules['names'], name, names):
            raise ConfigValueError(f"{where}['names'] names '{name}', which is not a prunable layer of the model.")
    if exact:
        names = [n for n in names if _any_match(rules['names'], exact, n)]
    if settings['op_names']:
        names = [n for n in names if _any_match(rules['op_names'], settings['op_names'], n)]
    return [n for n in names if not _any_match(rules['excluded_op_names'], settings['excluded_op_names'], n)]
