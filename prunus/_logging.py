"""The ``prunus`` logger hierarchy and its default output.

Every prunus logger is a child of ``prunus`` (``prunus.search`` for the automatic pruners'
trials and resumes, ``prunus.compare`` for comparisons). Until the application configures
logging itself (gives the root logger a handler, e.g. with ``logging.basicConfig``), prunus
prints its INFO messages to stderr as ``prunus: ...``, so that "resuming from ..." is seen;
once a root handler exists, records only propagate to it as usual. The level comes from the
environment variable ``PRUNUS_LOG_LEVEL`` (default ``INFO``); silence prunus with
``logging.getLogger('prunus').setLevel(logging.WARNING)``.
"""
from __future__ import annotations

import logging
import os


LOGGER_NAME = 'prunus'


class _UnlessConfigured(logging.Filter):
    """Pass records only while nothing else would show them (no root handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not logging.getLogger().handlers


def configure_default_logging() -> logging.Logger:
    """Give the ``prunus`` logger its default stderr handler (once) and level.

    Returns:
        The ``prunus`` logger.

    Example::

        import logging
        logging.getLogger('prunus').setLevel(logging.WARNING)   # quiet
    """
    logger = logging.getLogger(LOGGER_NAME)
    if not any(getattr(h, '_prunus_default', False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter('prunus: %(message)s'))
        handler.addFilter(_UnlessConfigured())
        handler._prunus_default = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        level = logging.getLevelName(os.environ.get('PRUNUS_LOG_LEVEL', 'INFO').upper())
        logger.setLevel(level if isinstance(level, int) else logging.INFO)
    return logger
