"""Forked search workers that do not deadlock on torch's OpenMP threads.

A process forked after torch has run a parallel operator inherits the OpenMP runtime's
bookkeeping for threads that no longer exist; its first parallel operator then waits on
them forever. That is what a default ``ProcessPoolExecutor`` (fork start method on
Linux) does with a search's candidates. Setting the forked child to one intra-op thread
right after the fork, before it unpickles or runs anything, keeps every operator on the
calling thread. A pool of several workers uses the cores anyway; ``spawn`` and
``forkserver`` workers start clean and are unaffected.
"""
from __future__ import annotations

import os

import torch

_registered = False


def _one_thread_in_child() -> None:
    torch.set_num_threads(1)


def guard_forked_workers() -> None:
    """Registers (once per process) the after-fork hook described above."""
    global _registered
    if not _registered and hasattr(os, 'register_at_fork'):
        os.register_at_fork(after_in_child=_one_thread_in_child)
        _registered = True
