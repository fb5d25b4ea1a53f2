"""Schedules and patterns of the framework-agnostic core, checked against their formulas."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from prunus.compression import (DECAY_TYPES, StepSchedule, agp_sparsity, decay_sparsity,
                                lottery_round_sparsity, parse_pattern)

FORMULAS = {
    'linear': lambda p, si, sf: si + (sf - si) * p,
    # Intel Neural Compressor's IterativeScheduler formulas.
    'cos': lambda p, si, sf: si + (sf - si) * (1 - math.cos(p * math.pi / 2)),
    'exp': lambda p, si, sf: 1 - (1 - si) * ((1 - sf) / (1 - si)) ** p,
    'cube': lambda p, si, sf: si + (sf - si) * p ** 3,
}


def test_core_imports_no_framework():
    code = ('import sys, prunus.compression, prunus.compression.pruning_yaml; '
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)


@pytest.mark.parametrize('decay', DECAY_TYPES)
@pytest.mark.parametrize('seed', range(4))
def test_each_decay_follows_its_formula_at_every_update(decay, seed):
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, 20))
    end = start + int(rng.integers(5, 200))
    frequency = int(rng.integers(1, 17))
    initial, final = sorted(rng.uniform(0, 0.95, size=2))
    schedule = StepSchedule(start, end, frequency, final, initial, decay)
    steps = schedule.update_steps()
    # INC's grid: start, start + f, ... up to end; the last point is at the target
    updates = (end - start) // frequency
    assert steps == [start + k * frequency for k in range(updates + 1)]
    assert [s for s in range(end + 30) if schedule.is_update_step(s)] == steps
    for k, step in enumerate(steps):
        expected = FORMULAS[decay](k / updates, initial, final) if updates else final
        assert schedule.sparsity_at(step) == pytest.approx(expected, abs=1e-12)
    assert schedule.sparsity_at(steps[-1]) == final == schedule.sparsity_at(end)  # exact
    values = [schedule.sparsity_at(s) for s in steps]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_one_shot_when_start_equals_end_or_frequency_exceeds_the_span():
    schedule = StepSchedule(7, 7, 3, 0.6)
    assert schedule.one_shot and schedule.update_steps() == [7]
    assert schedule.sparsity_at(7) == 0.6 and not schedule.is_update_step(6)
    schedule = StepSchedule(2, 22, 1000, 0.8)  # INC: a single update at start, to the target
    assert schedule.one_shot and schedule.update_steps() == [2] and schedule.sparsity_at(2) == 0.8


def test_agp_cubic_formula():
    for t in range(0, 12):
        expected = 0.8 + (0.1 - 0.8) * (1 - min(max(t - 2, 0), 8) / 8) ** 3
        assert agp_sparsity(t, 2, 8, 0.1, 0.8) == pytest.approx(expected)
    assert agp_sparsity(10, 2, 8, 0.1, 0.8) == 0.8


def test_decay_values_at_sixty_percent_are_inc_s():
    values = {d: round(decay_sparsity(d, 0.6, 0.0, 0.8), 4) for d in DECAY_TYPES}
    assert values == {'linear': 0.48, 'cos': 0.3298, 'exp': 0.6193, 'cube': 0.1728}


def test_nni_agp_end_point_is_the_last_update_epoch_before_end():
    from prunus.compression.schedules import nni_agp_sparsity
    assert nni_agp_sparsity(9, 0, 10, 1, 0.0, 0.8) == 0.8
    assert nni_agp_sparsity(8, 0, 10, 1, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * (1 - 8 / 9) ** 3)
    # frequency 4, end 10: span 8, so the update at epoch 8 is final
    assert nni_agp_sparsity(8, 0, 10, 4, 0.0, 0.8) == 0.8
    assert nni_agp_sparsity(4, 0, 10, 4, 0.0, 0.8) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)
    assert nni_agp_sparsity(0, 0, 10, 1, 0.0, 0.8) == 0.0


def test_lottery_rounds_prune_a_constant_fraction_of_survivors():
    per_round = 1 - (1 - 0.8) ** (1 / 5)
    for k in range(1, 6):
        before, after = lottery_round_sparsity(0.8, 5, k - 1), lottery_round_sparsity(0.8, 5, k)
        assert (after - before) / (1 - before) == pytest.approx(per_round)
    assert lottery_round_sparsity(0.8, 5, 5) == 0.8


def test_bad_decay_and_schedule_rejected():
    with pytest.raises(ValueError, match="sparsity_decay_type must be one of linear, cos, exp, cube; got 'quad'"):
        decay_sparsity('quad', 0.5, 0, 0.5)
    with pytest.raises(ValueError, match=r'end_step \(3\) must be >= start_step \(5\)'):
        StepSchedule(5, 3)


def test_nm_pattern_prunes_exactly_n_of_every_m():
    rng = np.random.default_rng(0)
    scores = rng.random((6, 16))
    pattern = parse_pattern('2:4')
    items = pattern.reduce(scores)
    keep = pattern.expand(scores, np.zeros(items.shape, dtype=bool))
    groups = keep.reshape(6, 4, 4)
    assert (groups.sum(axis=2) == 2).all()
    # the pruned two are the two lowest of their group
    lowest = np.argsort(scores.reshape(6, 4, 4), axis=2)[:, :, :2]
    assert not np.take_along_axis(groups, lowest, axis=2).any()


def test_block_and_channel_patterns():
    scores = np.arange(32.0).reshape(8, 4)
    four_by_one = parse_pattern('oc_pattern_4x1')
    assert four_by_one.reduce(scores).shape == (8,)
    keep = four_by_one.expand(scores, np.array([True, False] * 4))
    assert (keep.reshape(2, 4, 4) == keep.reshape(2, 4, 4)[:, :1, :]).all()  # 4 rows share each block
    rows = parse_pattern('1xchannel')
    assert rows.reduce(scores).tolist() == scores.mean(axis=1).tolist()
    assert parse_pattern('channelx1').reduce(scores).shape == (4,)
    with pytest.raises(ValueError, match="pattern '3x1' needs the weight of 'fc'"):
        parse_pattern('3x1').check((8, 4), 'fc')
    with pytest.raises(ValueError, match="unknown pattern '2-4'"):
        parse_pattern('2-4')
