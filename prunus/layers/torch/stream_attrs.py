"""Width attributes a model's own forward reads, kept in step with its layers.

After the residual stream shrinks, some models still read the old width from a plain
attribute (torchvision's ``VisionTransformer.hidden_dim`` reshapes the patch embedding
with it). Each rule recognizes such a module by its structure and recomputes the
attribute from the layer that now holds the width.
"""
from __future__ import annotations

from torch import nn


def _patch_embedding_width(module: nn.Module) -> None:
    """torchvision ViT: ``hidden_dim`` is the patch embedding conv's output channels."""
    conv = getattr(module, 'conv_proj', None)
    if isinstance(conv, nn.Conv2d) and isinstance(getattr(module, 'hidden_dim', None), int):
        module.hidden_dim = conv.out_channels


RULES = [_patch_embedding_width]


def sync_width_attributes(model: nn.Module) -> None:
    """Recomputes (in place) the width attributes the rules know, on every module of ``model``.

    Args:
        model: the model whose layers the speedup just narrowed.

    Example::

        sync_width_attributes(vit)   # vit.hidden_dim == vit.conv_proj.out_channels
    """
    for module in model.modules():
        for rule in RULES:
            rule(module)
