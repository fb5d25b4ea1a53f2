"""What a comparison measures on a PyTorch model: copies, masks, FLOPs, speedup, latency."""
from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

from prunus.compression.torch import get_masks
from prunus.compression.torch.flops import call_model, module_flops
from prunus.speedup import SpeedupError, speedup


_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class TorchBackend:
    """The PyTorch side of :func:`prunus.compare`."""

    framework = 'torch'

    def __init__(self, model: nn.Module, example_inputs: Any, latency_seconds: float) -> None:
        self.example = example_inputs
        self.latency_seconds = latency_seconds
        self.dense_flops = module_flops(model, example_inputs)

    @staticmethod
    def example_from(data: Any) -> Any:
        """The first sample of the first batch (a tensor or an ``(x, y)`` pair)."""
        batch = next(iter(data))
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return x[:1]

    def copy(self, model: nn.Module) -> nn.Module:
        return copy.deepcopy(model)

    @staticmethod
    def output_layer(model: nn.Module) -> str | None:
        """The last prunable layer registered: the classifier, kept whole by default."""
        names = [n for n, m in model.named_modules() if isinstance(m, _PRODUCERS)]
        return names[-1] if names else None

    @staticmethod
    def masks(model: nn.Module, pruner: Any) -> dict[str, dict[str, Any]]:
        return get_masks(model) or (pruner.get_masks() if hasattr(pruner, 'get_masks') else {})

    @staticmethod
    def layer_sparsity(masks: dict) -> dict[str, float]:
        return {n: 1.0 - float((e['weight'] != 0).float().mean()) for n, e in masks.items()}

    @staticmethod
    def nonzero_params(model: nn.Module) -> int:
        return sum(int((p != 0).sum()) for p in model.parameters())

    @staticmethod
    def params(model: nn.Module) -> int:
        return sum(p.numel() for p in model.parameters())

    def flops(self, masks: dict) -> int:
        """Dense FLOPs with each masked layer's count scaled by its weight density."""
        total = self.dense_flops.get('', 0)
        for name, sparsity in self.layer_sparsity(masks).items():
            total -= round(self.dense_flops.get(name, 0) * sparsity)
        return int(total)

    def shrink(self, model: nn.Module, masks: dict) -> tuple[nn.Module, int, int]:
        """The sped-up model, its parameters and FLOPs; raises SpeedupError."""
        small, summary = speedup(model, self.example, masks, return_summary=True)
        return small, summary.params_after, int(summary.flops_after)

    def latency(self, model: nn.Module) -> tuple[float, float]:
        """Median and interquartile range of one forward pass, in milliseconds."""
        was_training = model.training
        model.eval()
        timer = benchmark.Timer(stmt='with torch.no_grad(): call(model, x)',
                                globals={'torch': torch, 'call': call_model, 'model': model,
                                         'x': self.example},
                                num_threads=torch.get_num_threads())
        try:
            measured = timer.blocked_autorange(min_run_time=self.latency_seconds)
        finally:
            model.train(was_training)
        return 1000 * measured.median, 1000 * measured.iqr


SHRINK_ERRORS = (SpeedupError, ValueError, TypeError, RuntimeError)
Backend = TorchBackend
