"""PyTorch and TensorFlow parts of prunus in one process, in either import order."""
import subprocess
import sys

import pytest

pytest.importorskip('torch')
pytest.importorskip('tensorflow')

SCRIPT = '''
import {first}, {second}
import torch
from prunus.compression.torch import L1FilterPruner
from prunus.speedup import speedup
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
pruner = L1FilterPruner(model, [{{'sparsity': 0.5, 'op_names': ['0']}}])
pruner.compress()
x = torch.randn(1, 3, 8, 8)
print(pruner.sparsity_report(x)['0'].flops > 0, tuple(speedup(model, x, pruner)(x).shape))
'''


@pytest.mark.parametrize('first,second', [('tensorflow', 'prunus.compression.torch'),
                                          ('prunus.compression.torch', 'tensorflow')])
def test_torch_flop_counting_and_speedup_survive_tensorflow(first, second):
    result = subprocess.run([sys.executable, '-c', SCRIPT.format(first=first, second=second)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith('True (1, 4, 4, 4)')
