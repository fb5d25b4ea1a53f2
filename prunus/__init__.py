"""prunus: neural-network pruning for PyTorch and Keras 3."""
__version__ = '0.1.0'

import importlib
from typing import TYPE_CHECKING, Any

from prunus._logging import configure_default_logging

configure_default_logging()

__all__ = ['compare', 'Comparison', '__version__']


if TYPE_CHECKING:
    from prunus.comparison import Comparison, compare


def __getattr__(name: str) -> Any:
    # loaded on first use so that ``import prunus`` stays free of pandas and the frameworks
    if name in ('compare', 'Comparison'):
        return getattr(importlib.import_module('prunus.comparison'), name)
    raise AttributeError(f"module 'prunus' has no attribute '{name}'")
