"""The Keras 3 speedup's implementation; its public face is :mod:`prunus.speedup.tf`.

It lives beside, not inside, the PyTorch speedup package so that the Keras pruners can use
it (dependency-aware channel groups) without importing torch."""
