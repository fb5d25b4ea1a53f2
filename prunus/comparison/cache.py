"""One JSON file per finished run, so that an interrupted comparison resumes."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any



def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


class RunCache:
    """Rows of a comparison kept in ``directory`` (nothing is kept when it is None)."""

    def __init__(self, directory: str | os.PathLike | None, fingerprint: dict[str, Any]) -> None:
        self.directory = None if directory is None else Path(directory)
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = self.directory / 'comparison.json'
        if meta.exists():
            saved = json.loads(meta.read_text())
            if saved != fingerprint:
                raise ValueError(f"cache_dir '{self.directory}' holds a comparison of another "
                                 f'model or data ({saved}); use another directory.')
        else:
            meta.write_text(json.dumps(fingerprint, sort_keys=True))

    def _path(self, label: str, budget: float) -> Path:
        assert self.directory is not None
        digest = hashlib.sha1(f'{label}\0{budget!r}'.encode()).hexdigest()[:12]
        safe = ''.join(c if c.isalnum() else '_' for c in label)[:40]
        return self.directory / f'{safe}-{budget:g}-{digest}.json'

    def get(self, label: str, budget: float) -> dict[str, Any] | None:
        if self.directory is None:
            return None
        path = self._path(label, budget)
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, label: str, budget: float, row: dict[str, Any]) -> None:
        if self.directory is None:
            return
        path = self._path(label, budget)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(json.dumps(_clean(row), sort_keys=True))
        os.replace(tmp, path)  # a run killed mid-write leaves no half row behind
