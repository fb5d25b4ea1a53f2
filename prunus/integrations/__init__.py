"""Callbacks that prune during someone else's training loop.

* :mod:`prunus.integrations.huggingface`: ``PruningCallback`` for ``transformers.Trainer``
  (``pip install 'prunus[hf]'``).
* :mod:`prunus.integrations.lightning`: ``PruningCallback`` for Lightning's ``Trainer``
  (``pip install 'prunus[lightning]'``).

Both drive an ``AGPPruner`` (by epoch) or the ``Pruning`` training API (by step) through
:class:`~prunus.compression.training_events.PruningDriver`. Import the submodule you need; this
package imports neither library.
"""
from prunus.compression.training_events import PruningDriver

__all__ = ['PruningDriver']
