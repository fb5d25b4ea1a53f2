"""Channel masks from Fisher information, without retraining (Kwon et al., 2022, "A Fast
Post-Training Pruning Framework for Transformers"): the math of ``pruning_type='retrain_free'``.

Every block of a channel pattern (``channelx1``: one input column across all rows;
``1xchannel``: one output row; ``channelxN`` / ``Nxchannel``: N of them) carries an implicit
mask ``m_b = 1`` multiplying its weights. The loss gradient with respect to that mask is
``g_b = sum over the block of W * dL/dW``, so it is read from the weight gradients the
training loop computes anyway. With ``g_t`` the vector of a layer's block gradients at step
``t``, the empirical Fisher information is ``F = sum_t g_t g_t^T``, and dropping a set ``S``
of blocks costs about ``1/2 * sum_t (sum_{b in S} g_tb)^2`` (second order, the gradient
being about zero at a trained minimum).

* Mask search: blocks are ranked by the Fisher diagonal ``sum_t g_tb^2`` (lowest pruned
  first; per layer or globally, as the config's ``pruning_scope`` says).
* Mask rearrangement: within each layer, with the number of pruned blocks fixed, the
  diagonal choice is improved against the layer's full Fisher block: every kept block, in
  order of increasing diagonal score, may replace the pruned block whose removal from the
  pruned set lowers the cost most, in passes until no swap helps (:func:`rearrange`).

Kwon et al.'s third step, mask tuning (rescaling the kept channels by layer-wise least
squares), is not part of Intel Neural Compressor's ``retrain_free`` and is not done here.

Example::

    >>> g = torch.tensor([[1., -1., .6, .6], [1., -1., .6, .6]])  # 2 steps, 4 blocks
    >>> diagonal = np.array([True, True, False, False])           # drops the 2 smallest
    >>> rearrange(diagonal, g).tolist()    # blocks 0 and 1 cancel: dropping both costs 0
    [False, False, True, True]
"""
from __future__ import annotations

import numpy as np
import torch

from torch import nn

from ..patterns import BlockPattern, Pattern
from .criteria import Criterion, matrix_view


def is_channel_pattern(pattern: Pattern) -> bool:
    """Whether ``pattern`` spans whole channels (``channelxN`` or ``Nxchannel``)."""
    return isinstance(pattern, BlockPattern) and (pattern.rows is None or pattern.cols is None)


def block_gradients(weight: torch.Tensor, grad: torch.Tensor, pattern: BlockPattern) -> torch.Tensor:
    """``dL/dm_b`` of every block of ``pattern``, flattened in the order of
    :meth:`~prunus.compression.patterns.BlockPattern.reduce` (block rows, then block columns).

    Args:
        weight: the layer's weight (any layout :func:`matrix_view` takes).
        grad: the loss gradient with respect to it.
        pattern: the channel pattern.
    """
    product = matrix_view(weight.detach().double() * grad.detach().double())
    rows, cols = product.shape
    bh, bw = pattern.rows or rows, pattern.cols or cols
    return product.reshape(rows // bh, bh, cols // bw, bw).sum(dim=(1, 3)).reshape(-1)


#: At most this many passes of swaps per layer (each pass visits every kept block once).
MAX_PASSES = 8


def rearrange(keep: np.ndarray, gradients: torch.Tensor) -> np.ndarray:
    """Improves one layer's block keep mask against its full Fisher block, with as many
    blocks pruned as before.

    Args:
        keep: ``(blocks,)`` bool, the keep mask chosen from the Fisher diagonal.
        gradients: ``(steps, blocks)``, each step's block gradients.

    Returns:
        The new ``(blocks,)`` bool keep mask (ties go to the lower index).
    """
    keep = np.asarray(keep, dtype=bool).copy()
    if keep.all() or not keep.any() or gradients.shape[0] == 0:
        return keep
    g = gradients.double()
    diagonal = g.pow(2).sum(dim=0)
    squares = diagonal.clone()
    pruned = torch.from_numpy(~keep)
    total = g[:, pruned].sum(dim=1)                  # sum_{b in S} g_tb, per step
    order = torch.sort(diagonal, stable=True).indices.tolist()
    for _ in range(MAX_PASSES):
        swapped = False
        for candidate in order:
            if pruned[candidate]:
                continue
            trial = total + g[:, candidate]              # S + {candidate}
            # removing r from S + {c} leaves |trial - g_r|^2 = |trial|^2 - 2 g_r.trial + |g_r|^2
            gain = 2 * (g.t() @ trial) - squares
            members = pruned.clone()
            members[candidate] = True
            gain[~members] = float('-inf')
            removed = int(torch.argmax(gain))
            if removed == candidate or gain[removed] <= gain[candidate]:
                continue
            pruned[candidate], pruned[removed] = True, False
            total = trial - g[:, removed]
            swapped = True
        if not swapped:
            break
    return ~pruned.numpy()


def pruning_cost(keep: np.ndarray, gradients: torch.Tensor) -> float:
    """``1/2 * sum_t (sum_{b pruned} g_tb)^2``: the loss increase the Fisher predicts.

    Args:
        keep: ``(blocks,)`` bool keep mask.
        gradients: ``(steps, blocks)`` block gradients.
    """
    pruned = torch.from_numpy(~np.asarray(keep, dtype=bool))
    return float(0.5 * gradients.double()[:, pruned].sum(dim=1).pow(2).sum())


class RetrainFree(Criterion):
    """The ``retrain_free`` criterion of the training API: block scores are the Fisher
    diagonal, summed over every step so far (never reset); masks are rearranged per layer
    against the full Fisher block at every update; the layers' weights are fixed (the
    pruning group restores them after each optimizer step).

    Args:
        modules: the layers, by name.
        momentum: unused (the training API passes every criterion its entry's momentum).

    Example::

        config = WeightPruningConfig([{'op_names': ['.*output.dense'], 'pattern': 'channelx1'}],
                                     pruning_type='retrain_free', target_sparsity=0.5,
                                     start_step=0, end_step=32, pruning_frequency=32)
    """

    name = 'retrain_free'
    needs_gradients = True
    fixes_weights = True

    def __init__(self, modules: dict[str, nn.Module], momentum: float = 0.9):
        super().__init__(modules, momentum)
        self.pattern: BlockPattern | None = None
        self.gradients: dict[str, list[torch.Tensor]] = {n: [] for n in modules}

    def use_pattern(self, pattern: Pattern) -> None:
        self.pattern = pattern

    @torch.no_grad()
    def accumulate(self) -> None:
        for name, module in self.modules.items():
            if module.weight.grad is None:
                continue
            g = block_gradients(module.weight, module.weight.grad, self.pattern)
            self.gradients[name].append(g.cpu())
            previous = self.accumulated.get(name)
            self.accumulated[name] = g.pow(2) if previous is None else previous + g.pow(2)
        self.steps += 1

    def scores(self, owner: str) -> dict[str, torch.Tensor]:
        """Every element carries its block's Fisher diagonal (the pattern averages blocks)."""
        fisher = super().scores(owner)
        out = {}
        for name, module in self.modules.items():
            rows, cols = matrix_view(module.weight).shape
            bh, bw = self.pattern.rows or rows, self.pattern.cols or cols
            grid = fisher[name].reshape(rows // bh, 1, cols // bw, 1).expand(-1, bh, -1, bw)
            out[name] = grid.reshape(rows, cols).to(module.weight.device)
        return out

    def refine_keeps(self, keeps: dict, owner: str) -> dict:
        return {n: rearrange(k, torch.stack(self.gradients[n])) if self.gradients[n] else k
                for n, k in keeps.items()}
