"""Keras 3 layer knowledge: :mod:`.specs` (prunable weights, channel layout),
:mod:`.handlers` and :mod:`.op_handlers` (channel removal per layer type and per
``keras.ops`` call), :mod:`.constants` (the constant paths a speedup leaves in
the convs and Dense layers it rebuilds) and :mod:`.masking` (masks as variable constraints)."""
