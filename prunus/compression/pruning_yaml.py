"""Loading a :class:`WeightPruningConfig` from YAML, in the layouts older tools used.

Accepted layouts (every level is checked; an unknown key is an error naming it)::

    version: 1.0                       # optional, as are model: {name, framework}
    pruning:
      train:                           # optional epoch schedule defaults
        start_epoch: 0
        end_epoch: 4
        frequency: 1
      approach:
        weight_compression:            # or weight_compression_pytorch
          target_sparsity: 0.8         # global settings ...
          pruners:                     # ... and local overrides, one '!Pruner' each
            - !Pruner
                pattern: 2:4
                exclude_names: ['conv1']

The root may also be the settings mapping itself (global keys plus ``pruners:``). The
``!Pruner`` tag marks a local entry; a plain mapping is accepted too. The loader is
``yaml.SafeLoader`` plus that one tag, so no YAML can construct arbitrary objects.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import yaml

from .pruning_config import WeightPruningConfig
from .rules import unknown_key_error
from .errors import ConfigTypeError, ConfigValueError

APPROACHES = ('weight_compression', 'weight_compression_pytorch')
#: Root sections of INC / LPOT configs; those other than ``pruning`` (how their tools
#: evaluated and tuned) are accepted and do not affect pruning.
ROOT_KEYS = ('version', 'model', 'pruning', 'device', 'evaluation', 'tuning')
#: Keys of a ``train:`` section; only the schedule ones drive pruning, the others
#: (how older tools built their own training loop) are kept in ``config.train``.
TRAIN_KEYS = ('start_epoch', 'end_epoch', 'frequency', 'iteration', 'dataloader', 'criterion',
              'optimizer', 'epoch')
_TRAIN_SCHEDULE = ('start_epoch', 'end_epoch', 'frequency')


class _PrunerEntry(dict):
    """A mapping read from a ``!Pruner`` node."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also understands ``!Pruner``."""


def _construct_pruner(loader: yaml.SafeLoader, node: yaml.Node) -> _PrunerEntry:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigValueError(f'a !Pruner entry must be a mapping of settings (line {node.start_mark.line + 1}).')
    return _PrunerEntry(loader.construct_mapping(node, deep=True))


def _scalar_unless_sexagesimal(base):
    """YAML 1.1 reads ``2:4`` as the base-60 number 124; a pattern must load as written."""
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        text = loader.construct_scalar(node)
        return text if ':' in text else base(loader, node)
    return construct


_Loader.add_constructor('!Pruner', _construct_pruner)
_Loader.add_constructor('tag:yaml.org,2002:int', _scalar_unless_sexagesimal(yaml.SafeLoader.construct_yaml_int))
_Loader.add_constructor('tag:yaml.org,2002:float',
                        _scalar_unless_sexagesimal(yaml.SafeLoader.construct_yaml_float))


def _only(mapping: Any, allowed: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ConfigTypeError(f'{where} must be a mapping; got {type(mapping).__name__}.')
    for key in mapping:
        if key not in allowed:
            raise unknown_key_error(where, key, allowed)
    return mapping


def _settings_mapping(doc: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(settings, train section) of a parsed document in any accepted layout."""
    if 'pruning' not in doc:
        return doc, {}
    _only(doc, ROOT_KEYS, 'the YAML root')
    if 'model' in doc:
        _only(doc['model'], ('name', 'framework', 'inputs', 'outputs'), "'model'")
    pruning = _only(doc['pruning'], ('train', 'approach'), "'pruning'")
    if 'approach' not in pruning:
        raise ConfigValueError("'pruning' needs an 'approach' section holding 'weight_compression'.")
    approach = _only(pruning['approach'], APPROACHES, "'pruning.approach'")
    if len(approach) != 1:
        raise ConfigValueError(f"'pruning.approach' needs exactly one of {', '.join(APPROACHES)}.")
    train = _only(pruning.get('train') or {}, TRAIN_KEYS, "'pruning.train'")
    return next(iter(approach.values())) or {}, train


def config_from_mapping(doc: Any) -> WeightPruningConfig:
    """A :class:`WeightPruningConfig` from an already parsed document (see module doc).

    Args:
        doc: the parsed YAML document (a mapping).

    Returns:
        The config.

    Raises:
        ValueError, TypeError: a section or setting is invalid.

    Example::

        config = config_from_mapping({'pruning': {'approach': {'weight_compression': {
            'target_sparsity': 0.9, 'start_step': 0, 'end_step': 10}}}})
    """
    if not isinstance(doc, Mapping):
        raise ConfigTypeError(f'a pruning config document must be a mapping; got {type(doc).__name__}.')
    settings, train = _settings_mapping(doc)
    settings = dict(_only(settings, tuple(settings), 'the pruning settings'))
    local = settings.pop('pruners', None)
    if 'pruning_configs' in settings:
        if local is not None:
            raise ConfigValueError("the pruning settings give both 'pruners' and 'pruning_configs'; use one.")
        local = settings.pop('pruning_configs')
    if local is not None and not isinstance(local, list):
        raise ConfigTypeError(f"'pruners' must be a list of !Pruner entries; got {type(local).__name__}.")
    for key in _TRAIN_SCHEDULE:
        if key in train and key not in settings:
            settings[key] = train[key]
    config = WeightPruningConfig(local or [{}], **settings)
    config.train = dict(train)
    return config


def load_pruning_yaml(source: str | os.PathLike) -> WeightPruningConfig:
    """Reads a YAML file (or YAML text containing a newline) into a config.

    Raises:
        ValueError, TypeError: the document's layout or a setting is invalid; the message
            names the section and key.

    Args:
        source: a path, or YAML text (recognized by a newline).

    Returns:
        The config.

    Example::

        config = load_pruning_yaml('prune.yaml')
        pruning = Pruning(config, model)
    """
    text, name = str(source), 'the YAML text'
    if '\n' not in text and os.path.isfile(text):
        name = f"pruning config file '{text}'"
        try:
            with open(text, encoding='utf-8') as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f'{name} cannot be read as UTF-8 YAML text: {exc}.') from exc
    elif '\n' not in text:
        raise FileNotFoundError(f'pruning config file {text!r} does not exist.')
    try:
        document = yaml.load(text, Loader=_Loader)  # noqa: S506 (SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
        problem = getattr(exc, 'problem', None) or str(exc).splitlines()[0]
        raise ValueError(f'{name} is not valid YAML{where}: {problem}.') from exc
    return config_from_mapping(document)


