"""PyTorch layer knowledge: :mod:`.specs` (prunable weights, channel layout), :mod:`.handlers`
(channel removal per layer type) and :mod:`.masking` (masks as buffers beside the weights)."""
