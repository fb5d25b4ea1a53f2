"""Converting 2:4-masked Linear layers to PyTorch's semi-structured sparse format.

``torch.sparse.to_sparse_semi_structured`` stores a 2:4-sparse matrix compressed so that
sparse tensor cores (NVIDIA Ampere, compute capability 8.0, and newer) multiply it about
twice as fast. It needs a CUDA device of that kind and fp16/bf16 (or int8) weights whose
shape the kernels accept; on any other setup :func:`to_semi_structured` raises and
changes nothing. Masks follow the training API's N:M convention: pruned pairs lie in
groups of 4 consecutive weights along the input dimension, which is what the format wants.

Example::

    pruning = Pruning(WeightPruningConfig(pattern='2:4', target_sparsity=0.5, ...), model)
    ...                                  # train with the hooks
    model = model.half().cuda()
    to_semi_structured(model)            # every exactly-2:4 Linear becomes sparse
"""
from __future__ import annotations

import torch
from torch import nn

from .masking import detach_masks


def semi_structured_available(device: torch.device | str | None = None) -> bool:
    """Whether this PyTorch and the CUDA device can run semi-structured sparse matmuls."""
    if not hasattr(torch.sparse, 'to_sparse_semi_structured') or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 0)


def is_two_four(mask: torch.Tensor) -> bool:
    """Whether a ``(out, in)`` mask keeps exactly 2 of every 4 consecutive inputs."""
    if mask.dim() != 2 or mask.shape[1] % 4:
        return False
    return bool((mask.reshape(mask.shape[0], -1, 4).sum(dim=2) == 2).all())


def _convertible(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    chosen = []
    for name, module in model.named_modules():
        mask = getattr(module, 'weight_mask', None)
        if isinstance(module, nn.Linear) and mask is not None and is_two_four(mask):
            chosen.append((name, module))
    return chosen


def to_semi_structured(model: nn.Module) -> nn.Module:
    """Bakes and converts every exactly-2:4-masked ``nn.Linear`` of ``model``.

    Raises:
        RuntimeError: no supported CUDA device, or a layer is on the CPU / in fp32; the
            model is left unchanged.
        ValueError: no Linear layer carries an exact 2:4 mask.
    """
    layers = _convertible(model)
    if not layers:
        raise ValueError('to_semi_structured found no nn.Linear with an exact 2:4 weight mask.')
    for name, module in layers:
        weight = module.weight
        if not weight.is_cuda or not semi_structured_available(weight.device):
            raise RuntimeError(f"'{name}' cannot become semi-structured sparse: it needs a CUDA device "
                               'of compute capability >= 8.0 (found '
                               f"{'none' if not weight.is_cuda else torch.cuda.get_device_capability(weight.device)}).")
        if weight.dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError(f"'{name}' has {weight.dtype} weights; convert the model with .half() or "
                               '.bfloat16() first.')
    converted = []
    for name, module in layers:
        sparse = torch.sparse.to_sparse_semi_structured(module.weight.detach() * module.weight_mask)
        converted.append((module, sparse))
    for module, sparse in converted:
        detach_masks(module)
        module.weight = nn.Parameter(sparse, requires_grad=False)
    return model


__all__ = ['semi_structured_available', 'is_two_four', 'to_semi_structured']
