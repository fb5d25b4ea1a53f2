"""Keras 3 pruners (see the TensorFlow issue); nothing is exported yet."""
__all__: list[str] = []
