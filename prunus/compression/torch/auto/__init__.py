"""Automatic pruners: searches for a per-layer sparsity allocation under one budget."""
from .amc import AMCPruner
from .annealing import SimulatedAnnealingPruner
from .autocompress import AutoCompressPruner
from .base import AutoPruner
from .cost import CostModel, pruned_flops
from .netadapt import NetAdaptPruner
from .sensitivity import SensitivityPruner
from .sensitivity_analysis import SensitivityAnalysis
