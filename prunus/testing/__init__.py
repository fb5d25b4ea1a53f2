"""Helpers for checking pruning results, shared by prunus's tests and benchmarks.

* :mod:`prunus.testing.speedup`: reference masks, the masked reference model and the
  output comparison every speedup check uses (PyTorch).
* :mod:`prunus.testing.recipes`: the AGP and lottery-ticket training recipes on the digits
  CNNs (:mod:`prunus.testing.digits`), run by the tests for one seed and by
  ``benchmarks/training_digits.py`` for several (needs scikit-learn).

Nothing here is imported by ``import prunus``.
"""
from prunus.testing.speedup import l1_masks, masked_copy, max_rel_error, randomize_norms, run

__all__ = ['l1_masks', 'randomize_norms', 'masked_copy', 'run', 'max_rel_error']
