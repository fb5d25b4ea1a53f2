"""Post-training pruning with calibration data: Wanda and SparseGPT, block by block.

Neither needs training: they read the inputs each layer sees on a few calibration
batches and choose (SparseGPT: and compensate) the weights to drop. Large models are
processed one block at a time (the children of the ModuleList that holds the layers,
e.g. a transformer's decoder layers): the first block's inputs are captured once; for
each block, the inputs' statistics are gathered on the dense block, its layers are
pruned, and the pruned block's outputs become the next block's inputs. So besides the
model, peak memory is one block's input statistics (a ``cols x cols`` Hessian per layer
for SparseGPT) plus two copies of the calibration activations of one block, not the
activations of the whole model. With ``device=`` each block is moved there while it is
processed; with ``offload=True`` it goes back afterwards and the activations wait on
the CPU. Layers outside the blocks (an ``lm_head``, a classifier) are pruned last, from
one pass of the whole, already pruned model.

``blocks=False`` is the one-pass mode: every layer's statistics come from one pass of the
dense model, with no propagation through pruned blocks (what torchao's Wanda does). It
costs one forward pass instead of two per block; for Wanda, whose statistics are one
vector per layer, its memory stays bounded too, while SparseGPT then holds every layer's
Hessian at once. How much quality propagation buys is measured in
``benchmarks/results/post_training_*.md`` (the ``wanda-one-pass`` rows).

``config_list`` entries take ``sparsity`` and optionally ``pattern`` (``'unstructured'``
or ``'N:M'``; an N:M entry's sparsity must be N/M) and ``comparison_group`` (``'row'``:
every output row loses the same share; ``'layer'``: weights compete across the layer).
Achieved counts are exact, see :mod:`prunus.compression.torch.obs`.

Example::

    pruner = SparseGPTPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']},
                                     {'exclude': True, 'op_names': ['lm_head']}],
                             calibration_data=[tokenizer(text, return_tensors='pt')])
    model = pruner.compress()
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import ConfigSpec
from ..patterns import NMPattern, parse_pattern
from ..registry import register_pruner
from . import obs
from .base import Pruner
from .calibration import BlockInputs, as_batches, check_sequential, find_blocks, run_until_done
from .layer_inputs import CONV, InputStats, SharedInputs, is_hf_conv1d, to_weight, weight_matrices
from prunus.layers.torch.masking import apply_masks, detach_masks

GROUPS = ('row', 'layer')


class _EvalMode:
    """Eval mode (no dropout) and no autograd for the duration; restores training flags."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.flags = [(m, m.training) for m in self.model.modules()]
        self.grad = torch.is_grad_enabled()
        self.model.eval()
        torch.set_grad_enabled(False)

    def __exit__(self, *exc):
        for module, flag in self.flags:
            module.training = flag
        torch.set_grad_enabled(self.grad)


class PostTrainingPruner(Pruner):
    """Base of the calibration-data pruners: binds, validates and runs the block loop;
    subclasses say how one layer's masks (and weights) follow from its input statistics.

    Args:
        model: the model; it is not modified until ``compress()``.
        config_list: ``sparsity`` plus selectors, ``exclude``, and optional per-entry
            ``pattern`` and ``comparison_group`` overriding the arguments below.
        calibration_data: an iterable of batches: tensors, tuples of positional inputs or
            dicts of keyword inputs (read once, kept as a list).
        pattern: ``'unstructured'`` or ``'N:M'`` (e.g. ``'2:4'``).
        comparison_group: ``'row'`` or ``'layer'`` (default: the algorithm's own).
        update_weights: compensate the pruned weights with SparseGPT's OBS update.
        block_size: SparseGPT's column block (a multiple of M for N:M patterns).
        dampening: added to the Hessian's diagonal, relative to its mean.
        blocks: None (find them), False (the whole model at once), the name of a
            ModuleList, or a list of module names in execution order.
        device: where each block is computed (default: where it is).
        offload: move each block back after it is processed and keep activations on the CPU.
        progress: show a progress bar over the blocks.
    """

    supported_types = (nn.Linear,) + CONV
    default_types = (nn.Linear,)
    config_spec = ConfigSpec(targets=('sparsity',), extra=('pattern', 'comparison_group'))
    needs_calibration: ClassVar[bool] = True
    default_group: ClassVar[str] = 'row'
    default_update: ClassVar[bool] = False

    def __init__(self, model: nn.Module, config_list: list[dict], calibration_data: Any, *,
                 pattern: str = 'unstructured', comparison_group: str | None = None,
                 update_weights: bool | None = None, block_size: int = 128, dampening: float = 0.01,
                 blocks: Any = None, device: Any = None, offload: bool = False, progress: bool = True):
        owner = type(self).__name__
        group = self.default_group if comparison_group is None else comparison_group
        self.update_weights = self.default_update if update_weights is None else update_weights
        _check_arguments(owner, group, self.update_weights, block_size, dampening, offload, progress)
        hf_types = tuple({type(m) for m in model.modules() if is_hf_conv1d(m)}) if isinstance(model, nn.Module) else ()
        self.supported_types = type(self).supported_types + hf_types
        self.default_types = type(self).default_types + hf_types
        super().__init__(model, config_list)
        self.block_size, self.dampening = block_size, dampening
        self.blocks, self.offload, self.progress = blocks, offload, progress
        self.device = None if device is None else torch.device(device)
        self.settings = {name: self._settings(name, pattern, group) for name in self.targets}
        self.batches = as_batches(calibration_data, owner)

    def _settings(self, name: str, pattern: str, group: str) -> tuple[float, NMPattern | None, str]:
        """(sparsity, N:M pattern or None, comparison group) of one target, checked."""
        entry = self.entry_of[name]
        text = entry.get('pattern', pattern)
        parsed = parse_pattern(text)
        if parsed.name != 'unstructured' and not isinstance(parsed, NMPattern):
            raise ValueError(f"{entry.where}['pattern'] is {text!r}; {type(self).__name__} prunes "
                             "'unstructured' or 'N:M' patterns (e.g. '2:4').")
        sparsity = entry.get('sparsity')
        nm = parsed if isinstance(parsed, NMPattern) else None
        if nm is not None:
            if abs(sparsity - nm.n / nm.m) > 1e-9:
                raise ValueError(f"{entry.where}['sparsity'] must be {nm.n / nm.m:g} for pattern "
                                 f"'{nm.name}' (N of every M inputs); got {sparsity!r}.")
            if self.block_size % nm.m:
                raise ValueError(f"{type(self).__name__}: block_size ({self.block_size}) must be a "
                                 f"multiple of M={nm.m} for pattern '{nm.name}'.")
            nm.check(tuple(weight_matrices(self.targets[name])[0].shape), name)
        group = entry.get('comparison_group', group)
        return sparsity, nm, group

    # -- one layer --------------------------------------------------------------------
    def prune_matrix(self, weight: torch.Tensor, stats: InputStats, group_index: int, sparsity: float,
                     pattern: NMPattern | None, group: str) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(new weight or None, keep mask)`` of one weight matrix."""
        raise NotImplementedError

    def needs_hessian(self) -> bool:
        """Whether the layer statistics must include the input Hessian ``X^T X``."""
        return self.update_weights

    def _prune_layer(self, name: str, stats: InputStats) -> dict[str, torch.Tensor]:
        module = self.targets[name]
        sparsity, pattern, group = self.settings[name]
        matrices = weight_matrices(module)
        sizes = [m.numel() for m in matrices]
        counts = obs.shares(sizes, sparsity)
        new, keeps = [], []
        for g, (matrix, count) in enumerate(zip(matrices, counts)):
            share = count / sizes[g] if sizes[g] else 0.0
            weight, keep = self.prune_matrix(matrix, stats, g, share, pattern, group)
            new.append(matrix if weight is None else weight)
            keeps.append(keep)
        if any(w is not m for w, m in zip(new, matrices)):
            module.weight.data.copy_(to_weight(module, new).to(module.weight.dtype))
        # bool: attaching converts it to the weight's dtype without re-checking its values
        return {'weight': to_weight(module, keeps).to(module.weight.device)}

    def _prune_layers(self, names: list[str], run: Callable[[], None]) -> None:
        shared = SharedInputs()
        stats = {n: InputStats(self.targets[n], self.needs_hessian(), shared=shared) for n in names}
        handles = [s.attach() for s in stats.values()]
        try:
            run()
        finally:
            for handle in handles:
                handle.remove()
        for name in names:
            if stats[name].samples == 0:
                raise RuntimeError(f"{type(self).__name__}: layer '{name}' saw no input on the "
                                   'calibration data; exclude it or check the data.')
        masks = {n: self._prune_layer(n, stats.pop(n)) for n in names}
        apply_masks(self.bound_model, masks, owned=True)
        self._masked.extend(names)

    # -- the block loop ---------------------------------------------------------------
    def _block_list(self) -> list[str]:
        names = find_blocks(self.bound_model, self.targets, self.blocks, type(self).__name__)
        if not names:
            return []
        modules = dict(self.bound_model.named_modules())
        reason = check_sequential(self.bound_model, [modules[n] for n in names], self.batches[0])
        if reason is None:
            return names
        if self.blocks is not None:
            raise ValueError(f'{type(self).__name__}: the given blocks cannot be processed in '
                             f'sequence: {reason}.')
        warnings.warn(f'{type(self).__name__}: the blocks {names[0]}... cannot be processed in '
                      f'sequence ({reason}); pruning all layers from one pass of the model instead.')
        return []

    def _run_blocks(self, names: list[str], bar: tqdm) -> set[str]:
        modules = dict(self.bound_model.named_modules())
        store = torch.device('cpu') if self.offload else self.device
        inputs = BlockInputs(store)
        inputs.capture(self.bound_model, modules[names[0]], self.batches)
        done: set[str] = set()
        for index, name in enumerate(names):
            block = modules[name]
            home = next(block.parameters(), torch.empty(0)).device
            if self.device is not None:
                block.to(self.device)
            device = self.device or home
            inside = [t for t in self.targets if t.startswith(name + '.') and t not in done]
            if inside:
                self._prune_layers(inside, lambda: inputs.run(block, device, keep_outputs=False))
                done.update(inside)
            if index + 1 < len(names):
                inputs.run(block, device, keep_outputs=True)
            if self.offload and self.device is not None:
                block.to(home)
            bar.update(1)
        return done

    def calc_masks(self):
        raise NotImplementedError(f'{type(self).__name__} changes weights block by block; use compress().')

    def compress(self) -> nn.Module:
        """Prunes every selected layer, block by block; returns the model with masks attached."""
        self._masked: list[str] = []
        modules = dict(self.bound_model.named_modules())
        try:
            with _EvalMode(self.bound_model):
                names = self._block_list()
                bar = tqdm(total=len(names) + 1, desc=type(self).__name__, unit='block',
                           disable=not self.progress)
                done = self._run_blocks(names, bar) if names else set()
                rest = [t for t in self.targets if t not in done]
                if rest:
                    model, batches, layers = self.bound_model, self.batches, [self.targets[n] for n in rest]
                    self._prune_layers(rest, lambda: run_until_done(model, batches, layers))
                bar.update(1)
                bar.close()
        except BaseException:
            for name in self._masked:
                detach_masks(modules[name])
            raise
        return self.bound_model


def _check_arguments(owner: str, group: Any, update: Any, block_size: Any, dampening: Any,
                     offload: Any, progress: Any) -> None:
    if group not in GROUPS:
        raise ValueError(f"{owner}: comparison_group must be 'row' or 'layer'; got {group!r}.")
    for key, value in (('update_weights', update), ('offload', offload), ('progress', progress)):
        if not isinstance(value, bool):
            raise TypeError(f'{owner}: {key} must be a bool; got {value!r}.')
    if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
        raise ValueError(f'{owner}: block_size must be an integer >= 1; got {block_size!r}.')
    if not isinstance(dampening, (int, float)) or isinstance(dampening, bool) or not dampening > 0:
        raise ValueError(f'{owner}: dampening must be a number > 0; got {dampening!r}.')


@register_pruner('wanda', framework='torch')
class WandaPruner(PostTrainingPruner):
    """Wanda (Sun et al., 2023): drops the weights with the lowest ``|W_ij| * ||X_j||_2``,
    compared per output row by default; ``update_weights=True`` also reconstructs the
    kept weights around that mask with SparseGPT's update.

    By default the norms of each block's inputs are taken after the blocks before it are
    pruned (as the paper's code and llmcompressor do: two forward passes per block).
    ``blocks=False`` is the one-pass mode: all norms from one pass of the dense model (as
    torchao does), half the forward work and no block bookkeeping, with only one vector
    per layer held; layers then do not see the error of the pruned layers before them.

    Example::

        pruner = WandaPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], batches)
        model = pruner.compress()
    """

    def prune_matrix(self, weight, stats, group_index, sparsity, pattern, group):
        keep = obs.wanda_keep(weight, stats.norms()[group_index], sparsity, pattern, group)
        if not self.update_weights:
            return None, keep
        hessian = stats.mean_hessians()[group_index]
        return obs.sparsegpt(weight, hessian, sparsity, pattern, group, self.block_size,
                             self.dampening, update=True, keep=keep)


@register_pruner('sparsegpt', framework='torch')
class SparseGPTPruner(PostTrainingPruner):
    """SparseGPT (Frantar & Alistarh, 2023): OBS mask selection in column blocks with the
    joint weight update that keeps each layer's output close to the dense one
    (``update_weights=False`` keeps the mask choice and only zeroes). Weights compete
    across the rows of each column block by default, as in the paper.

    Example::

        pruner = SparseGPTPruner(model, [{'sparsity': 0.5, 'op_types': ['Linear']}], batches,
                                 pattern='2:4')
        model = pruner.compress()
    """

    default_group = 'layer'
    default_update = True

    def needs_hessian(self) -> bool:
        """Always True: SparseGPT's updates need the input Hessian."""
        return True

    def prune_matrix(self, weight, stats, group_index, sparsity, pattern, group):
        hessian = stats.mean_hessians()[group_index]
        return obs.sparsegpt(weight, hessian, sparsity, pattern, group, self.block_size,
                             self.dampening, update=self.update_weights)

