"""Writing files safely, for both frameworks: check a target before anything is written,
and write through a temporary file so a failure never leaves half a file behind."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def check_writable(path: str | os.PathLike, what: str) -> Path:
    """Fails before anything is written if ``path`` cannot be created."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path('.')
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {what} '{path}': directory '{parent}' does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {what} '{path}': it is a directory.")
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write {what} '{path}': directory '{parent}' is not writable.")
    return path


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = '') -> Iterator[str]:
    """A temporary path beside ``path`` (ending in ``suffix``, for writers that insist on
    an extension); renamed onto it only if the block succeeds."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp' + suffix, dir=path.parent)
    os.close(handle)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
