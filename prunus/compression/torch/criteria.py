"""Every PyTorch pruning criterion, as pure functions of tensors: lower score = pruned first.

The one-shot pruners' criteria (:func:`magnitude`, :func:`l1_filter`, :func:`l2_filter`,
:func:`fpgm`, :func:`bn_scale`, :func:`apoz_score`, :func:`mean_activation_score`,
:func:`taylor_fo_contribution`) take what they need (weights, a layer's filter matrix,
collected statistics) and return one score per weight or per output channel, so each can
be tested on hand-built tensors without a model.

The training API's element-wise criteria turn a layer into a score matrix shaped like
:func:`matrix_view` of its weight:

==============  ==================================================================
magnitude       ``|w|`` at the time of the update
gradient        ``|dL/dw|`` summed over the steps since the last update
snip            ``|w * dL/dw|`` summed over the steps since the last update (Lee et al. 2019)
snip_momentum   ``score <- momentum * score + |w * dL/dw|`` every step, never reset
retrain_free    per channel block, ``(sum over the block of w * dL/dw)^2`` summed over
                every step, on fixed weights (:mod:`.fisher_masks`, Kwon et al. 2022)
==============  ==================================================================

Gradient criteria read gradients in ``accumulate()``, which the training API calls just
before each optimizer step (after any gradient clipping or unscaling).
"""
from __future__ import annotations

import torch
from torch import nn

from ..criteria import geometric_median_distance
from ..patterns import BlockPattern, NMPattern, Pattern


def magnitude(weight: torch.Tensor) -> torch.Tensor:
    """Unstructured magnitude |w| (Level pruning)."""
    return weight.detach().abs()


def l1_filter(filters: torch.Tensor) -> torch.Tensor:
    """Sum of absolute weights of each filter (rows of ``filters``); Li et al. 2017."""
    return filters.detach().abs().sum(dim=1)


def l2_filter(filters: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of each filter."""
    return filters.detach().float().pow(2).sum(dim=1).sqrt()


def fpgm(filters: torch.Tensor) -> torch.Tensor:
    """Sum of Euclidean distances from each filter to all others (He et al. 2019).

    Filters closest to the geometric median have the smallest sum: they are the most
    replaceable by the rest, so they are pruned first. Computed by the shared core
    (float64), so Keras' FPGMPruner gives the same scores on the same weights.
    """
    rows = filters.detach().to('cpu', torch.float64).numpy()
    return torch.from_numpy(geometric_median_distance(rows))


def bn_scale(gamma: torch.Tensor) -> torch.Tensor:
    """|gamma| of a BatchNorm layer (network slimming, Liu et al. 2017)."""
    return gamma.detach().abs()


def apoz_score(zero_count: torch.Tensor, total_count: torch.Tensor | int) -> torch.Tensor:
    """1 - APoZ: channels whose activations are most often zero score lowest (Hu et al. 2016)."""
    return 1.0 - zero_count.double() / total_count


def mean_activation_score(activation_sum: torch.Tensor, total_count: torch.Tensor | int) -> torch.Tensor:
    """Mean activation per channel (Molchanov et al. 2017, sec. 2.2)."""
    return activation_sum.double() / total_count


def taylor_fo_contribution(filters: torch.Tensor, filter_grads: torch.Tensor) -> torch.Tensor:
    """One batch's first-order Taylor contribution per filter: sum over its weights of (w*g)^2.

    Summed over batches this is the filter importance of Molchanov et al. (2019).
    """
    return (filters.detach().float() * filter_grads.detach().float()).pow(2).sum(dim=1)


def matrix_view(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``(out_channels, -1)`` with the input channel varying fastest.

    For a convolution ``(out, in, kh, kw)`` this is ``(out, kh * kw * in)``, so groups of
    consecutive columns run along input channels (the N:M convention).
    """
    if weight.dim() <= 2:
        return weight.reshape(weight.shape[0], -1)
    return weight.movedim(1, -1).reshape(weight.shape[0], -1)


def from_matrix(matrix: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`matrix_view` for a weight of ``shape``."""
    if len(shape) <= 2:
        return matrix.reshape(shape)
    return matrix.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)


class Criterion:
    """Scores of one group of layers; ``accumulate`` is called before each optimizer step."""

    needs_gradients = False

    def __init__(self, modules: dict[str, nn.Module], momentum: float = 0.9):
        self.modules = modules
        self.momentum = momentum
        self.accumulated: dict[str, torch.Tensor] = {}
        self.steps = 0

    def step_score(self, module: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def accumulate(self) -> None:
        if not self.needs_gradients:
            return
        for name, module in self.modules.items():
            if module.weight.grad is None:
                continue
            score = matrix_view(self.step_score(module)).double()
            previous = self.accumulated.get(name)
            self.accumulated[name] = score if previous is None else self.combine(previous, score)
        self.steps += 1

    def combine(self, previous: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return previous + score

    def scores(self, owner: str) -> dict[str, torch.Tensor]:
        """Current score matrices; gradient criteria raise if they saw no gradient."""
        if not self.needs_gradients:
            return {n: matrix_view(m.weight.detach().abs()).double() for n, m in self.modules.items()}
        missing = [n for n in self.modules if n not in self.accumulated]
        if missing:
            raise RuntimeError(f"{owner}: the '{self.name}' criterion has no gradients for '{missing[0]}'; "
                               'call on_before_optimizer_step() after loss.backward() in every step.')
        return dict(self.accumulated)

    def after_update(self) -> None:
        """Called once masks were recomputed from the scores."""

    #: Whether the criterion keeps the layers' weights fixed while it scores them.
    fixes_weights = False

    def use_pattern(self, pattern: Pattern) -> None:
        """Told the entry's pattern once, before any step (criteria that score whole blocks use it)."""

    def refine_keeps(self, keeps: dict, owner: str) -> dict:
        """The item keep masks after the count per layer is chosen; as they are by default."""
        return keeps

    @property
    def name(self) -> str:
        return type(self).__name__.lower()


class Magnitude(Criterion):
    name = 'magnitude'


class Gradient(Criterion):
    name = 'gradient'
    needs_gradients = True

    def step_score(self, module: nn.Module) -> torch.Tensor:
        return module.weight.grad.abs()

    def after_update(self) -> None:
        self.accumulated.clear()


class Snip(Gradient):
    name = 'snip'

    def step_score(self, module: nn.Module) -> torch.Tensor:
        return (module.weight.detach() * module.weight.grad).abs()


class SnipMomentum(Snip):
    name = 'snip_momentum'

    def combine(self, previous: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        return previous * self.momentum + score

    def after_update(self) -> None:
        """The momentum score is kept across updates."""


CRITERIA: dict[str, type[Criterion]] = {
    'magnitude': Magnitude, 'gradient': Gradient, 'snip': Snip, 'snip_momentum': SnipMomentum,
    # pattern_lock keeps masks fixed and group_lasso prunes by magnitude after regularizing.
    'pattern_lock': Magnitude, 'group_lasso': Magnitude,
    # LPOT's element-wise magnitude pruner (its defaults differ, see pruning_config).
    'basic_magnitude': Magnitude,
}


def group_norms(matrix: torch.Tensor, pattern: Pattern) -> torch.Tensor:
    """Each element's group L2 norm under ``pattern`` (its own |w| when unstructured)."""
    rows, cols = matrix.shape
    if isinstance(pattern, BlockPattern):
        bh, bw = pattern.rows or rows, pattern.cols or cols
        blocks = matrix.reshape(rows // bh, bh, cols // bw, bw)
        norms = blocks.pow(2).sum(dim=(1, 3), keepdim=True).sqrt()
        return norms.expand_as(blocks).reshape(rows, cols)
    if isinstance(pattern, NMPattern):
        groups = matrix.reshape(rows, cols // pattern.m, pattern.m)
        return groups.pow(2).sum(dim=2, keepdim=True).sqrt().expand_as(groups).reshape(rows, cols)
    return matrix.abs()


@torch.no_grad()
def add_group_lasso_grad(module: nn.Module, pattern: Pattern, coeff: float) -> None:
    """Adds the gradient of ``coeff * sum_g ||w_g||_2`` over the pattern's groups."""
    if coeff == 0 or module.weight.grad is None:
        return
    matrix = matrix_view(module.weight.detach())
    penalty = coeff * matrix / group_norms(matrix, pattern).clamp_min(1e-12)
    module.weight.grad.add_(from_matrix(penalty, module.weight.shape))
