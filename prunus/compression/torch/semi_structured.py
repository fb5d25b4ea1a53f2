"""Converting 2:4-masked Linear layers to PyTorch's semi-structured sparse format.

``torch.sparse.to_sparse_semi_structured`` stores a 2:4-sparse matrix compressed so that
sparse tensor cores multiply it about twice as fast. What it needs, per the PyTorch docs
and ``torch/sparse/semi_structured.py``:

* a CUDA GPU of compute capability 8.0 or newer;
* a backend: cuSPARSELt (the default; ``torch.backends.cusparselt.is_available()``), or
  CUTLASS when ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set, whose kernels run on
  compute capability 8.x (Ampere) only;
* a contiguous 2-D weight of dtype float16, bfloat16 or int8 (float32 is 1:2, not 2:4);
* rows and columns that are positive multiples of the backend's minimum block, see
  :data:`MIN_BLOCK` (for fp16/bf16: 16x16 with cuSPARSELt, 32x64 with CUTLASS).

:func:`to_semi_structured` checks all of this for every layer before it converts any, and
otherwise raises naming the layer and the rule, leaving the model unchanged. Masks follow
the training API's N:M convention: pruned pairs lie in groups of 4 consecutive weights
along the input dimension, which is what the format wants.

Example::

    pruning = Pruning(WeightPruningConfig(pattern='2:4', target_sparsity=0.5, ...), model)
    ...                                  # train with the hooks
    model = model.half().cuda()
    to_semi_structured(model)            # every exactly-2:4 Linear becomes sparse
"""
from __future__ import annotations

import torch
from torch import nn

from prunus.layers.torch.masking import detach_masks

#: The dtypes the 2:4 format takes.
DTYPES = (torch.float16, torch.bfloat16, torch.int8)
#: (min rows, min cols) of the weight per backend and dtype; both dimensions must be
#: multiples of them (PyTorch's ``_DTYPE_SHAPE_CONSTRAINTS``, sparse side).
MIN_BLOCK: dict[str, dict[torch.dtype, tuple[int, int]]] = {
    'cusparselt': {torch.float16: (16, 16), torch.bfloat16: (16, 16), torch.int8: (32, 32)},
    'cutlass': {torch.float16: (32, 64), torch.bfloat16: (32, 64), torch.int8: (16, 128)},
}


def backend() -> str:
    """The backend ``to_sparse_semi_structured`` will use: 'cutlass' or 'cusparselt'."""
    sparse_cls = getattr(torch.sparse, 'SparseSemiStructuredTensor', None)
    return 'cutlass' if getattr(sparse_cls, '_FORCE_CUTLASS', False) else 'cusparselt'


def unavailable_reason(device: torch.device | str | None = None) -> str | None:
    """Why semi-structured sparse matmuls cannot run on ``device`` (None when they can)."""
    if not hasattr(torch.sparse, 'to_sparse_semi_structured'):
        return 'this PyTorch has no torch.sparse.to_sparse_semi_structured'
    if not torch.cuda.is_available():
        return 'it needs a CUDA GPU of compute capability >= 8.0, and CUDA is not available'
    capability = torch.cuda.get_device_capability(device)
    if capability < (8, 0):
        return f'it needs a CUDA GPU of compute capability >= 8.0; this one has {capability[0]}.{capability[1]}'
    if backend() == 'cutlass' and capability[0] != 8:
        return (f'the CUTLASS backend (SparseSemiStructuredTensor._FORCE_CUTLASS) runs on compute '
                f'capability 8.x only; this GPU has {capability[0]}.{capability[1]}')
    if backend() == 'cusparselt' and not torch.backends.cusparselt.is_available():
        return ('this PyTorch build has no cuSPARSELt; on a compute capability 8.x GPU set '
                'torch.sparse.SparseSemiStructuredTensor._FORCE_CUTLASS = True')
    return None


def semi_structured_available(device: torch.device | str | None = None) -> bool:
    """Whether this PyTorch and the CUDA device can run semi-structured sparse matmuls.

    Args:
        device: the CUDA device to check (default: the current one).

    Returns:
        True when :func:`to_semi_structured` can run there.

    Example::

        if semi_structured_available():
            model = to_semi_structured(model)
    """
    return unavailable_reason(device) is None


def weight_problem(weight: torch.Tensor, which: str | None = None) -> str | None:
    """Why ``weight``'s dtype or shape does not fit the format (None when it does)."""
    if weight.dtype not in DTYPES:
        return (f"has {weight.dtype} weights; the 2:4 format takes float16, bfloat16 or int8 "
                '(convert the model with .half() or .bfloat16() first)')
    rows, cols = weight.shape
    min_rows, min_cols = MIN_BLOCK[which or backend()][weight.dtype]
    if rows < min_rows or rows % min_rows or cols < min_cols or cols % min_cols:
        return (f'has a {rows}x{cols} weight; with {which or backend()} and {weight.dtype} both dimensions '
                f'must be positive multiples of {min_rows}x{min_cols}')
    return None


def is_two_four(mask: torch.Tensor) -> bool:
    """Whether a ``(out, in)`` mask keeps exactly 2 of every 4 consecutive inputs.

    Args:
        mask: a Linear layer's weight mask.

    Returns:
        Whether it is an exact 2:4 pattern.

    Example::

        is_two_four(model.fc.weight_mask)
    """
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
        ValueError: no Linear layer carries an exact 2:4 mask.
        RuntimeError: the GPU, backend, device, dtype or shape of a layer does not fit
            (the message names the layer and the rule); the model is left unchanged.

    Args:
        model: a model whose Linear layers carry 2:4 masks (on a supported GPU).

    Returns:
        ``model`` with those weights as semi-structured sparse tensors.

    Example::

        model = to_semi_structured(model.half().cuda())
    """
    layers = _convertible(model)
    if not layers:
        raise ValueError('to_semi_structured found no nn.Linear with an exact 2:4 weight mask.')
    for name, module in layers:
        weight = module.weight
        reason = ('it is on the CPU; move the model to a CUDA GPU of compute capability >= 8.0 '
                  'first' if not weight.is_cuda else unavailable_reason(weight.device))
        reason = reason or weight_problem(weight)
        if reason:
            raise RuntimeError(f"'{name}' cannot become semi-structured sparse: {reason}.")
    converted = []
    for name, module in layers:
        dense = (module.weight.detach() * module.weight_mask).contiguous()
        converted.append((module, torch.sparse.to_sparse_semi_structured(dense)))
    for module, sparse in converted:
        detach_masks(module)
        module.weight = nn.Parameter(sparse, requires_grad=False)
    return model
