"""Automatic pruners: searches for a per-layer sparsity allocation under one budget."""
from .annealing import SimulatedAnnealingPruner
from .base import AutoPruner
from .netadapt import NetAdaptPruner
from .cost import CostModel, pruned_flops

__all__ = ['AutoPruner', 'CostModel', 'pruned_flops', 'SimulatedAnnealingPruner', 'NetAdaptPruner']
