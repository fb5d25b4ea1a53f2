"""The digest of a PyTorch model a search's resume check compares (see
:mod:`prunus.compression.fingerprint`)."""
from __future__ import annotations

import torch
from torch import nn

from ...fingerprint import records_digest


def _raw(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().to('cpu').contiguous().reshape(-1)
    if not flat.numel():
        return b''
    try:
        return flat.view(torch.uint8).numpy().tobytes()
    except (RuntimeError, TypeError):  # quantized and other exotic storage: its values
        return repr(flat.dequantize().tolist() if flat.is_quantized else flat.tolist()).encode()


def model_digest(model: nn.Module) -> str:
    """Architecture (module names and types) and every state_dict tensor's bytes."""
    structure = ';'.join(f'{name}:{type(m).__qualname__}' for name, m in model.named_modules())
    records = ((key, str(value.dtype), tuple(value.shape), _raw(value))
               for key, value in model.state_dict().items() if isinstance(value, torch.Tensor))
    return records_digest(records, structure)
