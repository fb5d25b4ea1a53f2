"""Searches that never hang or resume another run.

* A default ``ProcessPoolExecutor`` forks workers after torch has started its OpenMP
  threads; without prunus' after-fork hook their first parallel operator waits forever.
  The search runs in a subprocess with a deadline, so a regression fails instead of hanging.
* A search resumes from ``experiment_data_dir`` only for the same model, config and
  evaluator; anything else starts fresh and says so.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import torch
from torch import nn

from prunus.compression.torch import SimulatedAnnealingPruner

CONFIG = [{'sparsity': 0.5, 'op_types': ['Conv2d']}]


def test_search_with_a_default_process_pool_does_not_deadlock(tmp_path):
    script = textwrap.dedent(f'''
        import torch
        from concurrent.futures import ProcessPoolExecutor
        from torch import nn
        from prunus.compression.torch import SimulatedAnnealingPruner
        from tests.auto.test_reliability import Scorer, net

        torch.set_num_threads(2)
        Scorer()(net())  # the parent's OpenMP team exists now
        with ProcessPoolExecutor(2) as pool:
            pruner = SimulatedAnnealingPruner(net(), {CONFIG!r}, Scorer(), experiment_data_dir={str(tmp_path)!r},
                                              executor=pool, progress=False, stop_temperature=80)
            pruner.compress()
        print('done', pruner.best_score is not None)
    ''')
    env = {k: v for k, v in __import__('os').environ.items() if k != 'OMP_NUM_THREADS'}
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=240,
                            cwd=__import__('pathlib').Path(__file__).parents[2], env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'done True' in result.stdout


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


class Scorer:
    """A picklable evaluator on fixed data; ``calls`` counts evaluations in this process."""

    calls = 0

    def __init__(self, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(16, 1, 6, 6, generator=generator)

    def __call__(self, model: nn.Module) -> float:
        type(self).calls += 1
        with torch.no_grad():
            # large enough for torch's parallel kernels: a forked worker meets OpenMP here
            busy = float(nn.functional.conv2d(torch.ones(64, 16, 32, 32), torch.ones(32, 16, 3, 3)).sum()) * 0
            return float(-model(self.x).pow(2).mean()) + busy


def _run(tmp_path, model, evaluator, caplog):
    before = Scorer.calls
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='prunus.search'):
        pruner = SimulatedAnnealingPruner(model, CONFIG, evaluator, experiment_data_dir=tmp_path, progress=False,
                                          stop_temperature=60)
        pruner.compress()
    return Scorer.calls - before, caplog.text, pruner.best_score


def test_resume_only_for_the_same_model_config_and_evaluator(tmp_path, caplog):
    first, _, score = _run(tmp_path, net(0), Scorer(0), caplog)
    assert first > 0
    again, text, score_again = _run(tmp_path, net(0), Scorer(0), caplog)
    assert again == 0 and 'resuming' in text and score_again == score
    other_model, text, _ = _run(tmp_path, net(1), Scorer(0), caplog)
    assert other_model > 0 and 'different model' in text
    other_data, text, _ = _run(tmp_path, net(1), Scorer(7), caplog)
    assert other_data > 0 and 'different evaluator' in text
    other_fn, text, _ = _run(tmp_path, net(1), lambda m: Scorer(7)(m) * 2, caplog)
    assert other_fn > 0 and 'different evaluator' in text
