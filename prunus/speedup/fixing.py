"""Fixing a fine-tuned sped-up model's constant paths for inference."""
from __future__ import annotations

from torch import nn

from prunus.layers.torch import constants


def fix_constants(model: nn.Module) -> list[str]:
    """Fix the learnable constant paths a speedup left in ``model`` (in place), for
    deployment after fine-tuning.

    A speedup carries what removed constant channels contributed on small paths that keep
    learning during fine-tuning (``carried_constants``, or the kept ``source_weights`` with
    the shared ``removed_shifts``; see :mod:`prunus.layers.torch.constants`). Once
    training is over they are only constants:
    a Linear's or an unpadded conv's goes into its bias (the layer gets its original class
    back), a zero-padded conv's becomes a non-trainable buffer (``fixed_constants``), and
    the eval-mode offsets are added in. The model then computes what it computed in eval
    mode before, has no parameters beyond the layers' own weights and biases, and its
    paths no longer change in training (nor does a stale-statistics offset fade).

    Args:
        model: a model returned by :func:`prunus.speedup.speedup` (fine-tuned or not).

    Returns:
        The names of the layers whose paths were fixed.

    Example::

        small = speedup(model, x, pruner)
        train(small)                  # the paths learn with the weights
        fix_constants(small)          # then fixed for deployment: ['features.3', 'fc']
        save(small, 'small.pt')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'fix_constants: model must be a torch.nn.Module, got {type(model).__name__}')
    return [name for name, module in model.named_modules() if constants.fix_paths(module)]
