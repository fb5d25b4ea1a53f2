"""Keeping PyTorch and TensorFlow usable in one process."""
from __future__ import annotations

import sys


def guard_triton_after_tensorflow() -> None:
    """Marks triton unavailable when TensorFlow is loaded and triton is not yet.

    tensorflow-cpu (2.21) and the triton that CUDA builds of torch bundle crash the
    process (SIGSEGV) when triton is loaded after TensorFlow; torch's FLOP counter
    imports triton. torch treats triton as optional, and a process that already holds
    TensorFlow could not load triton anyway, so hiding it trades a crash for torch's
    CPU paths, which are all prunus uses.
    """
    if 'tensorflow' in sys.modules and 'triton' not in sys.modules:
        sys.modules['triton'] = None  # type: ignore[assignment]
