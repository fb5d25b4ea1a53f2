"""The training API means what Intel Neural Compressor meant: the caller's step, catching up
skipped steps, caps that warn, and the module's own YAML example loading as written."""
from __future__ import annotations

import re
import textwrap
import warnings

import pytest
import torch
from torch import nn

from prunus.compression import pruning_yaml
from prunus.compression.torch import Pruning, WeightPruningConfig


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))


def _zeros(model):
    return [float((m.weight == 0).float().mean()) for m in model if isinstance(m, nn.Linear)]


def test_the_module_docstring_yaml_loads_with_its_pattern():
    block = re.search(r'::\n\n(.*?)\n\n', pruning_yaml.__doc__, re.S).group(1)
    config = pruning_yaml.load_pruning_yaml(textwrap.dedent(block) + '\n')
    (settings,) = config.resolved()
    assert settings['pattern'] == '2:4' and settings['excluded_op_names'] == ['conv1']


def test_steps_follow_the_caller_and_skipped_steps_are_caught_up():
    model = _model()
    config = WeightPruningConfig(target_sparsity=0.5, pattern='unstructured', pruning_type='magnitude',
                                 start_step=0, end_step=10, pruning_frequency=5, sparsity_decay_type='linear',
                                 pruning_scope='local')
    pruning = Pruning(config, model)
    pruning.on_step_begin(local_step=0)          # no end hook: the next begin ends the step
    pruning.on_step_begin(local_step=7)          # update step 5 was skipped: caught up
    assert _zeros(model) == [0.25, 0.25]
    pruning.on_step_begin(local_step=30)         # far past end_step: at the target
    pruning.on_train_end()
    assert _zeros(model) == [0.5, 0.5]


def test_only_on_step_begin_calls_still_prune():
    model = _model()
    config = WeightPruningConfig(target_sparsity=0.5, pattern='unstructured', pruning_type='magnitude',
                                 start_step=2, end_step=2, pruning_scope='local')
    pruning = Pruning(config, model)
    for step in range(4):
        pruning.on_step_begin(step)
    assert _zeros(model) == [0.5, 0.5]


@pytest.mark.parametrize('kwargs, message', [
    ({'pattern': '2:4', 'target_sparsity': 0.8},
     r"sparsity 0.8 is above what pattern '2:4' can reach; capped at 0.5"),
    ({'pattern': 'unstructured', 'target_sparsity': 0.95, 'max_sparsity_ratio_per_layer': 0.9,
      'pruning_scope': 'local'},
     r'sparsity 0.95 is above max_sparsity_ratio_per_layer 0.9; each layer is capped at 0.9'),
])
def test_caps_warn(kwargs, message):
    model = _model()
    pruning = Pruning(WeightPruningConfig(pruning_type='magnitude', start_step=0, end_step=0, **kwargs), model)
    with pytest.warns(UserWarning, match=message):
        pruning.on_step_begin(0)
        pruning.on_step_end()


def test_no_warning_when_the_target_is_reachable():
    model = _model()
    pruning = Pruning(WeightPruningConfig(pruning_type='magnitude', pattern='2:4', target_sparsity=0.5,
                                          start_step=0, end_step=0, pruning_scope='local'), model)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        pruning.on_step_begin(0)
        pruning.on_step_end()
        pruning.on_train_end()
    assert _zeros(model) == [0.5, 0.5]
