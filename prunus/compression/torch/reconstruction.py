"""Least-squares reconstruction: refit a pruned model's layers to compute what the dense
model's same layers computed.

Removing channels changes what every later layer reads. :func:`reconstruct` goes through
the layers in execution order and gives each one the weights that best reproduce, on
calibration data, the dense layer's output from the inputs the pruned model now feeds it
(earlier layers already refit, so errors do not pile up from layer to layer; the idea of
ThiNet, Luo et al. 2017, and of He et al. 2017's channel pruning). For a layer seen as
``y = W x + b`` (a convolution through its unfolded patches, one matrix per group), with the
pruned model's input columns ``X`` and residual ``R = y_dense - y_pruned``, the update solves

    min ||X dW^T - R||^2 + lambda ||dW||^2

over the entries the layer's mask keeps, one solve per distinct row support;
``lambda = ridge * mean diagonal of X^T X`` keeps nearly collinear inputs from inflating
weights. Masked entries stay zero and only weights change, so masks, sparsity and the
speedup's guarantee (the sped-up model computes what the masked model does) are unaffected:
reconstruct before :func:`prunus.speedup.speedup`, on the masked model.

Measured on the digits CNNs (``benchmarks/finetune_quality.py``): accuracy right after
removal and after a short fine-tune both improve over magnitude choice alone.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from prunus.compression.least_squares import (Refit, check_ridge, keep_row_lengths,
                                              residual_left, solve_update)
from .calibration import StopForward, as_batches, call_model, call_until_stopped, input_device
from .criteria import from_matrix, matrix_view
from .layer_inputs import CONV, input_columns, is_hf_conv1d

_OWNER = 'reconstruct'


def _refittable(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, *CONV)) or is_hf_conv1d(module)


def _shared_weights(model: nn.Module) -> set[str]:
    """Layers whose weight another module also holds (tied embeddings): a refit of one
    would change the other."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        weight = getattr(module, 'weight', None)
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    return {n for names in owners.values() if len(names) > 1 for n in names}


def _select(model: nn.Module, reference: nn.Module, layers: Iterable[str] | None) -> list[str]:
    modules, ref = dict(model.named_modules()), dict(reference.named_modules())
    shared = _shared_weights(model)
    if layers is None:
        return [n for n, m in modules.items() if _refittable(m) and n not in shared]
    names = list(layers)
    for name in names:
        if name not in modules:
            raise ValueError(f"{_OWNER}: layers names '{name}', which is not a module of the model.")
        if not _refittable(modules[name]):
            raise ValueError(f"{_OWNER}: layer '{name}' is a {type(modules[name]).__name__}; only "
                             'Linear, Conv1d/2d/3d and Conv1D layers can be refit.')
        if name in shared:
            raise ValueError(f"{_OWNER}: layer '{name}' shares its weight with another module; "
                             'refitting it would change that one too.')
    return names


def _check_reference(model: nn.Module, reference: nn.Module, names: list[str]) -> None:
    if reference is model:
        raise ValueError(f'{_OWNER}: reference is the pruned model itself; give a copy of the '
                         'dense model taken before pruning (copy.deepcopy(model)).')
    ref = dict(reference.named_modules())
    modules = dict(model.named_modules())
    for name in names:
        other = ref.get(name)
        if other is None or getattr(other, 'weight', None) is None:
            raise ValueError(f"{_OWNER}: the reference model has no layer '{name}'; it must be the "
                             'same architecture as the pruned model (before speedup).')
        if other.weight.shape != modules[name].weight.shape:
            raise ValueError(f"{_OWNER}: layer '{name}' has weight shape {tuple(modules[name].weight.shape)} "
                             f'in the model but {tuple(other.weight.shape)} in the reference; '
                             'reconstruct before the speedup, against the dense model.')


def _tensors(value: Any) -> list[torch.Tensor]:
    """Every tensor inside a model output (tuples, lists, dicts, Hugging Face outputs)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _call_order(model: nn.Module, batch: Any, names: list[str]
                ) -> tuple[list[str], dict[str, int], set[str]]:
    """The layers in the order they first run, how often each runs per batch, and those
    whose output is (a view of) one of the model's outputs: its heads."""
    modules = dict(model.named_modules())
    # the outputs are held until compared: a freed one's memory could be reused by the
    # model's output and look like it
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [modules[n].register_forward_hook(lambda m, a, o, n=n: seen.append((n, o)))
               for n in names]
    try:
        outputs = call_model(model, batch, input_device(model))
    finally:
        for handle in handles:
            handle.remove()
    final = {t.untyped_storage().data_ptr() for t in _tensors(outputs)}
    calls = {n: [s for s, _ in seen].count(n) for n, _ in seen}
    order = list(dict.fromkeys(n for n, _ in seen))
    heads = {n for n, out in seen if out.untyped_storage().data_ptr() in final}
    return order, calls, heads


def _capture(model: nn.Module, module: nn.Module, batch: Any, calls: int) -> list[tuple]:
    """(input, output) of each of ``module``'s ``calls`` calls on ``batch``; the forward
    stops right after the last one."""
    got: list[tuple] = []

    def hook(mod, args, output):
        got.append((args[0].detach(), output.detach()))
        if len(got) == calls:
            raise StopForward
    handle = module.register_forward_hook(hook)
    try:
        call_until_stopped(model, batch)
    finally:
        handle.remove()
    return got


def _output_rows(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """Outputs as ``(samples, out_features)``, rows in :func:`input_columns`' order."""
    if isinstance(module, CONV):
        if y.dim() == module.weight.dim() - 1:
            y = y.unsqueeze(0)
        y = y.movedim(1, -1)
    return y.reshape(-1, y.shape[-1]).double()


def _matrices(module: nn.Module, tensor: torch.Tensor) -> list[torch.Tensor]:
    """A weight-shaped tensor as one ``(rows, cols)`` matrix per group."""
    matrix = tensor.t() if is_hf_conv1d(module) else matrix_view(tensor)
    groups = module.groups if isinstance(module, CONV) else 1
    return list(matrix.chunk(groups, dim=0))


def _refit_params(module: nn.Module) -> list[torch.Tensor]:
    """What a refit changes: the weight and, if any, the bias."""
    bias = getattr(module, 'bias', None)
    return [module.weight] + ([bias] if isinstance(bias, torch.Tensor) else [])


def _kept_outputs(module: nn.Module) -> torch.Tensor:
    """Bool per output feature: not masked away (a pruned row stays zero, nothing to fit)."""
    weight = module.weight
    rows = weight.shape[1] if is_hf_conv1d(module) else weight.shape[0]
    kept = torch.zeros(rows, dtype=torch.bool, device=weight.device)
    mask = getattr(module, 'weight_mask', None)
    kept |= torch.cat(_matrices(module, mask)).ne(0).any(1) if isinstance(mask, torch.Tensor) else True
    bias_mask = getattr(module, 'bias_mask', None)
    if isinstance(getattr(module, 'bias', None), torch.Tensor):
        kept |= bias_mask.reshape(-1).ne(0) if isinstance(bias_mask, torch.Tensor) else True
    return kept


class _Normal:
    """The normal equations of one layer, per group: ``X^T X`` and ``X^T R`` (a ones
    column appended when the layer has a bias), with ``||R||^2`` and ``||y_dense||^2``
    over the output features the masks keep."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.bias = isinstance(getattr(module, 'bias', None), torch.Tensor)
        self.kept = _kept_outputs(module)
        self.gram: list[torch.Tensor] = []
        self.cross: list[torch.Tensor] = []
        self.residual = 0.0
        self.target = 0.0

    def add(self, x: torch.Tensor, y_pruned: torch.Tensor, y_dense: torch.Tensor) -> None:
        columns = input_columns(self.module, x)
        dense = _output_rows(self.module, y_dense)
        residual = dense - _output_rows(self.module, y_pruned)
        self.residual += float(residual[:, self.kept].pow(2).sum())
        self.target += float(dense[:, self.kept].pow(2).sum())
        for g, (cols, res) in enumerate(zip(columns, residual.chunk(len(columns), dim=1))):
            cols = cols.double()
            if self.bias:
                cols = torch.cat([cols, cols.new_ones(cols.shape[0], 1)], dim=1)
            if len(self.gram) <= g:
                self.gram.append(cols.t() @ cols)
                self.cross.append(cols.t() @ res)
            else:
                self.gram[g] += cols.t() @ cols
                self.cross[g] += cols.t() @ res


def _supports(module: nn.Module, group: int, rows: int, cols: int, bias: bool) -> torch.Tensor:
    """Per row of the group, which of its entries (weight columns, then the bias) may change."""
    mask = getattr(module, 'weight_mask', None)
    keep = (_matrices(module, mask)[group] != 0) if isinstance(mask, torch.Tensor) else \
        torch.ones(rows, cols, dtype=torch.bool, device=module.weight.device)
    if bias:
        bias_mask = getattr(module, 'bias_mask', None)
        kept = torch.ones(rows, dtype=torch.bool, device=keep.device) if bias_mask is None else \
            (bias_mask.reshape(-1).chunk(len(_matrices(module, module.weight)))[group] != 0)
        keep = torch.cat([keep, kept.unsqueeze(1)], dim=1)
    return keep


def _numpy(t: torch.Tensor):
    return t.detach().cpu().numpy()


def _solve(normal: _Normal, ridge: float, head: bool) -> tuple[list[torch.Tensor], float]:
    """Per group the update ``(rows, cols [+ bias])`` (the core's masked ridge solve; a
    head's rows keep their lengths), and the residual it leaves."""
    module = normal.module
    device = module.weight.device
    biases = module.bias.detach().double().reshape(len(normal.gram), -1) if normal.bias else None
    updates, left = [], normal.residual
    for g, (gram, cross, matrix) in enumerate(zip(normal.gram, normal.cross,
                                                  _matrices(module, module.weight.detach()))):
        rows, size = cross.shape[1], gram.shape[0]
        cols = size - 1 if normal.bias else size
        keep = _supports(module, g, rows, cols, normal.bias)
        gram_np, cross_np = _numpy(gram), _numpy(cross)
        update = solve_update(gram_np, cross_np, _numpy(keep), ridge, normal.bias)
        if head:
            old = matrix.double()
            if normal.bias:
                old = torch.cat([old, biases[g].unsqueeze(1)], dim=1)
            update = keep_row_lengths(_numpy(old), update)
        left = residual_left(left, gram_np, cross_np, update)
        updates.append(torch.from_numpy(update).to(device))
    return updates, left


def _apply(module: nn.Module, updates: list[torch.Tensor], bias: bool) -> None:
    cols = updates[0].shape[1] - (1 if bias else 0)
    matrices = [m + u[:, :cols].to(m.dtype) for m, u in zip(_matrices(module, module.weight.detach()), updates)]
    matrix = torch.cat(matrices, dim=0)
    weight = matrix.t() if is_hf_conv1d(module) else from_matrix(matrix, module.weight.shape)
    module.weight.data.copy_(weight)
    if bias:
        step = torch.cat([u[:, -1] for u in updates]).to(module.bias.dtype)
        module.bias.data.add_(step.reshape(module.bias.shape))


@torch.no_grad()
def _refit_layer(model, reference, name, batches, calls, ridge, head: bool) -> Refit | None:
    module = dict(model.named_modules())[name]
    dense = dict(reference.named_modules())[name]
    normal = _Normal(module)
    for batch in batches:
        mine = _capture(model, module, batch, calls)
        theirs = _capture(reference, dense, batch, calls)
        for (x, y), (_, y_dense) in zip(mine, theirs):
            if y.shape != y_dense.shape:
                raise ValueError(f"{_OWNER}: layer '{name}' outputs {tuple(y.shape)} in the model but "
                                 f'{tuple(y_dense.shape)} in the reference.')
            normal.add(x, y, y_dense)
    scale = max(normal.target, 1e-30)
    if normal.residual <= 1e-12 * scale:
        return None  # this layer already computes what the dense one does
    updates, left = _solve(normal, ridge, head)
    _apply(module, updates, normal.bias)
    return Refit((normal.residual / scale) ** 0.5, (left / scale) ** 0.5)


def reconstruct(model: nn.Module, reference: nn.Module, calibration_data: Iterable[Any], *,
                layers: Iterable[str] | None = None, ridge: float = 0.3,
                exact_heads: bool = False) -> dict[str, Refit]:
    """Refit ``model``'s layers (masked, before the speedup) to reproduce ``reference``.

    Args:
        model: the pruned model, masks attached (``pruner.compress()`` done).
        reference: the dense model before pruning (``copy.deepcopy(model)`` taken before
            the pruner was built), same architecture and layer names.
        calibration_data: batches as the model takes them (tensors, tuples of positional
            inputs, dicts of keyword inputs); a few hundred samples are enough.
        layers: names of the Linear / Conv / Conv1D layers to refit; default every such
            layer except those sharing a weight with another module.
        exact_heads: the model's heads (layers whose output the model returns: a
            classifier, an LM head) are refit like every layer. By default their output
            rows keep their lengths (only their directions are fit), which fine-tunes
            better: see :func:`prunus.compression.least_squares.keep_row_lengths`.
        ridge: the regularization, relative to the mean input energy (the mean diagonal
            of ``X^T X``): smaller fits the calibration data closer (best when there is no
            fine-tuning), larger moves the weights less. The default, 0.3, fine-tuned best
            on the digits CNNs among 0.03-1.

    Returns:
        ``{layer: Refit(before, after)}`` for each layer that was changed (a layer whose
        output already equals the dense one is left as is and not listed).

    Example::

        dense = copy.deepcopy(model)
        pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}],
                                dependency_aware=True, dummy_input=x, importance='group')
        pruner.compress()
        reconstruct(model, dense, [images[i:i + 256] for i in range(0, 1024, 256)])
        model = speedup(model, x, pruner)   # still equals the (refit) masked model
    """
    ridge = check_ridge(ridge, _OWNER)
    batches = as_batches(calibration_data, _OWNER)
    names = _select(model, reference, layers)
    _check_reference(model, reference, names)
    modes = [(m, m.training) for m in (*model.modules(), *reference.modules())]
    model.eval()
    reference.eval()
    try:
        with torch.no_grad():
            order, calls, heads = _call_order(model, batches[0], names)
            _call_order(reference, batches[0], names)
        modules = dict(model.named_modules())
        saved = {n: [p.detach().clone() for p in _refit_params(modules[n])] for n in order}
        report = {}
        try:
            for name in order:
                refit = _refit_layer(model, reference, name, batches, calls[name], ridge,
                                     head=name in heads and not exact_heads)
                if refit is not None:
                    report[name] = refit
        except BaseException:
            with torch.no_grad():  # a failure part-way leaves the model as it came
                for name, values in saved.items():
                    for param, value in zip(_refit_params(modules[name]), values):
                        param.copy_(value)
            raise
        return report
    finally:
        for module, training in modes:
            module.training = training
