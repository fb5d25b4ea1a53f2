"""prunus: neural-network pruning for PyTorch and Keras 3."""
__version__ = '0.1.0'
