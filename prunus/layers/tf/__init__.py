"""Keras 3 layer knowledge: :mod:`.specs` (prunable weights, channel layout),
:mod:`.handlers` and :mod:`.op_handlers` (channel removal per layer type and per
``keras.ops`` call) and :mod:`.masking` (masks as variable constraints)."""
