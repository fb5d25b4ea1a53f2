"""What a speedup did: channels per layer, parameters and FLOPs before/after, and why
masked channels were kept."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LayerSummary:
    """Channels of one handled layer before and after (``in`` is None without inputs).

    Example::

        small, summary = speedup(model, x, masks, return_summary=True)
        [(layer.name, layer.out_before, layer.out_after) for layer in summary.layers]
    """

    name: str
    type: str
    in_before: int | None
    in_after: int | None
    out_before: int
    out_after: int
    masked_out: int = 0
    producer: bool = True


@dataclass
class SpeedupSummary:
    """Result report of a speedup.

    Attributes:
        layers: one :class:`LayerSummary` per handled layer, in execution order.
        params_before / params_after: parameter counts.
        flops_before / flops_after: FLOPs of one forward on the example input, counted
            by the formulas of ``torch.utils.flop_counter`` (a MAC counts as 2 FLOPs);
            ``flops_after`` is None when the speedup ran with ``check=False``.
        kept: reason -> number of masked output channels that could not be removed.
        zero_weights: weights that are zero in the result (unstructured masks stay as
            zeros; they are not an error).
        seconds: wall time of the speedup pass.
        heads: attention module -> (heads before, heads after), for those that lost heads.
        trace_reused: the dependency-aware pruner's trace of this model and input was
            reused (checked by one plain run of the masked model) instead of tracing again.
        learned_constants: layers whose removed constant inputs learn from the removed
            BatchNorm shifts (``source_weights``); empty with ``learn_constants=False`` or
            where the probe could not run (their constants are then fixed).

    Example::

        small, summary = speedup(model, x, masks, return_summary=True)
        print(summary)            # a table; summary.params_after / params_before etc.
    """

    layers: list[LayerSummary] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int | None = 0
    kept: dict[str, int] = field(default_factory=dict)
    zero_weights: int = 0
    seconds: float = 0.0
    trace_reused: bool = False
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)
    learned_constants: list[str] = field(default_factory=list)

    @property
    def masked_channels(self) -> int:
        """Output channels whose weights the masks zeroed."""
        return sum(layer.masked_out for layer in self.layers)

    @property
    def removed_channels(self) -> int:
        """Output channels physically removed."""
        return sum(layer.out_before - layer.out_after for layer in self.layers
                   if layer.producer)

    def __str__(self) -> str:
        rows = [f'{"layer":40s} {"type":18s} {"in":>11s} {"out":>11s} {"masked":>6s}']
        for s in self.layers:
            cin = '-' if s.in_before is None else f'{s.in_before}->{s.in_after}'
            rows.append(f'{s.name[:40]:40s} {s.type[:18]:18s} {cin:>11s} '
                        f'{f"{s.out_before}->{s.out_after}":>11s} {s.masked_out:6d}')
        after = 'not run' if self.flops_after is None else f'{self.flops_after:,}'
        rows.append(f'params {self.params_before:,} -> {self.params_after:,}; '
                    f'FLOPs {self.flops_before:,} -> {after}; '
                    f'{self.removed_channels}/{self.masked_channels} masked channels '
                    f'removed in {self.seconds:.3f} s')
        if self.heads:
            before = sum(b for b, _ in self.heads.values())
            after = sum(a for _, a in self.heads.values())
            rows.append(f'  attention heads {before} -> {after} in {len(self.heads)} module(s)')
        if self.learned_constants:
            rows.append(f'  constants learn from removed BatchNorm shifts in '
                        f'{len(self.learned_constants)} layer(s)')
        for reason, n in sorted(self.kept.items(), key=lambda kv: -kv[1]):
            rows.append(f'  kept {n} masked channel(s): {reason}')
        if self.zero_weights:
            rows.append(f'  {self.zero_weights:,} zero weights remain (unstructured masks '
                        'are kept as zeros)')
        return '\n'.join(rows)
