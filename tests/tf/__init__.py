"""Keras tests. torch and triton (which torch loads lazily) must be imported before
TensorFlow in one process: importing triton after TensorFlow segfaults with
tensorflow-cpu 2.21 + torch 2.14.1, and the cross-framework test needs both."""
try:
    import torch  # noqa: F401
    import triton  # noqa: F401
except ImportError:
    pass
