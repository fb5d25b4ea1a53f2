"""Optional dependencies: import them on first use, or say which extra installs them."""
from __future__ import annotations

import importlib
from types import ModuleType



def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module``, or raise ImportError naming the prunus extra that installs it.

    Args:
        module: the module to import, e.g. ``'matplotlib.pyplot'``.
        extra: the prunus extra that installs it, e.g. ``'plot'``.
        feature: what needs it, for the message, e.g. ``'SensitivityAnalysis.plot()'``.

    Returns:
        The imported module.

    Raises:
        ImportError: the module is not installed.

    Example::

        plt = require('matplotlib.pyplot', 'plot', 'Comparison.plot()')
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split('.')[0]
        raise ImportError(f"{feature} needs {top}, which is not installed; install it with "
                          f"pip install 'prunus[{extra}]'.") from exc
