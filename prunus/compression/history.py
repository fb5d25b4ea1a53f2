"""The search history an automatic pruner keeps in its ``experiment_data_dir``.

Files written (JSON, rewritten atomically after every trial so an interrupted search
leaves a readable history)::

    search_history.json   {"algorithm", "settings", "trials": [{...}, ...]}
    best_config.json      the best allocation as a config_list, with its score

A search started again with the same settings in the same directory resumes: trials
already recorded are looked up by their key instead of being evaluated again. Searches
are deterministic given their seed, so the replay follows the same path. Different
settings start a fresh history, and say so (a warning naming what differs); the settings
of the automatic pruners include a fingerprint of the model (architecture and
weights), the config_list and the evaluator, so another model's or evaluator's search
never resumes.

Example::

    >>> import tempfile
    >>> h = SearchHistory(tempfile.mkdtemp(), 'demo', {'seed': 0})
    >>> h.record({'key': 'a', 'score': 0.9})
    >>> SearchHistory(h.directory, 'demo', {'seed': 0}).lookup('a')['score']
    0.9
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

logger = logging.getLogger('prunus.search')

HISTORY_FILE = 'search_history.json'
BEST_CONFIG_FILE = 'best_config.json'


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as JSON through a temporary file, so readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    with open(tmp, 'w') as handle:
        json.dump(obj, handle, indent=1, sort_keys=False)
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as handle:
        return json.load(handle)


def _differences(saved: Any, algorithm: str, settings: dict[str, Any]) -> list[str]:
    """What tells ``saved`` (a history file's content) from this search; empty if none."""
    if not isinstance(saved, dict) or not saved:
        return ['the file content']
    if saved.get('algorithm') != algorithm:
        return ['algorithm']
    old = saved.get('settings')
    if not isinstance(old, dict):
        return ['settings']
    fields = []
    for key in sorted(set(old) | set(settings)):
        if old.get(key) != settings.get(key):
            if key == 'fingerprint' and isinstance(old.get(key), dict):
                inner = settings.get(key) or {}
                fields += [k for k in sorted(set(old[key]) | set(inner)) if old[key].get(k) != inner.get(k)]
            else:
                fields.append(key)
    return fields


class SearchHistory:
    """Trials of one search, persisted in ``directory``; resumes a matching earlier search.

    Args:
        directory: the experiment_data_dir (created if missing).
        algorithm: the search's name, stored with the trials.
        settings: everything that determines the search path (JSON-serializable); a
            history is reused only if its settings are equal.
    """

    def __init__(self, directory: str | os.PathLike, algorithm: str, settings: dict[str, Any]):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise NotADirectoryError(f"experiment_data_dir '{self.directory}' is a file, not a directory.")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.algorithm = algorithm
        self.settings = json.loads(json.dumps(settings))
        self.trials: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}
        self.resumed = False
        path = self.directory / HISTORY_FILE
        if path.exists():
            try:
                saved = read_json(path)
            except (OSError, ValueError):
                saved = {}
            differs = _differences(saved, algorithm, self.settings)
            if not differs:
                self.trials = list(saved.get('trials', []))
                self._by_key = {t['key']: t for t in self.trials if 'key' in t}
                self.resumed = bool(self.trials)
                logger.info('%s: resuming from %s with %d recorded trials', algorithm, path, len(self.trials))
            else:
                logger.warning('%s: %s holds another search (different %s); starting a new history '
                               'there', algorithm, path, ', '.join(differs))

    def lookup(self, key: str) -> dict[str, Any] | None:
        """The recorded trial with ``key``, or None."""
        return self._by_key.get(key)

    def record(self, trial: dict[str, Any]) -> None:
        """Appends a trial (a JSON-serializable dict) and rewrites the history file."""
        trial = json.loads(json.dumps(trial))
        if 'key' in trial and trial['key'] in self._by_key:
            return
        trial.setdefault('index', len(self.trials))
        self.trials.append(trial)
        if 'key' in trial:
            self._by_key[trial['key']] = trial
        self.save()

    def save(self) -> None:
        write_json(self.directory / HISTORY_FILE,
                   {'algorithm': self.algorithm, 'settings': self.settings, 'trials': self.trials})

    def save_best(self, config_list: list[dict[str, Any]], score: float | None, **extra: Any) -> None:
        """Writes ``best_config.json``: the best allocation as a config_list and its score."""
        write_json(self.directory / BEST_CONFIG_FILE,
                   {'algorithm': self.algorithm, 'score': score, 'config_list': config_list, **extra})

    @property
    def path(self) -> Path:
        return self.directory / HISTORY_FILE
