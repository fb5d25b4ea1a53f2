"""AutoCompressPruner: rounds of annealing + ADMM + speedup (needs the ADMM pruner)."""
import pytest
import torch.nn.functional as F

from prunus.compression import available_pruners
from prunus.compression.torch import pruned_flops

from .models import Fidelity, example_input, tiny_model

pytestmark = pytest.mark.skipif('admm' not in available_pruners('torch'), reason='ADMMPruner is not available')
CONVS = ('conv1', 'conv2', 'conv3')


def _trainer(fidelity):
    def trainer(model, optimizer, criterion, epoch):
        model.train()
        for _ in range(2):
            optimizer.zero_grad()
            F.mse_loss(model(fidelity.x), fidelity.reference).backward()
            optimizer.step()
    return trainer


def _compress(tmp_path, budget):
    from prunus.compression.torch import AutoCompressPruner
    model, x = tiny_model(), example_input()
    fidelity = Fidelity(model)
    pruner = AutoCompressPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], _trainer(fidelity), fidelity, x,
                                num_iterations=2, stop_temperature=60, cool_down_rate=0.8, admm_num_iterations=2,
                                admm_training_epochs=1, experiment_data_dir=tmp_path, budget=budget, progress=False)
    return model, pruner.compress(), x


def test_weight_budget_is_met_on_the_physically_smaller_model(tmp_path):
    model, out, _ = _compress(tmp_path, 'sparsity')
    dense = tiny_model()
    left = sum(getattr(out, c).weight.numel() for c in CONVS) / sum(getattr(dense, c).weight.numel() for c in CONVS)
    assert out is model and out.conv2.out_channels < 16
    assert abs((1 - left) - 0.5) <= 0.01
    assert (tmp_path / 'round0' / 'search_history.json').exists() and (tmp_path / 'search_history.json').exists()


def test_a_rerun_resumes_after_the_last_finished_round(tmp_path):
    import json
    _, first, _ = _compress(tmp_path, 'flops')
    best = json.loads((tmp_path / 'best_config.json').read_text())
    assert len(best['rounds']) == 2 and best['config_list'] == best['rounds'][-1]
    from prunus.compression.torch import AutoCompressPruner
    model, x = tiny_model(), example_input()
    fidelity = Fidelity(model)
    pruner = AutoCompressPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], _trainer(fidelity), fidelity, x,
                                num_iterations=2, stop_temperature=60, cool_down_rate=0.8, admm_num_iterations=2,
                                admm_training_epochs=1, experiment_data_dir=tmp_path, budget='flops', progress=False)
    again = pruner.compress()
    assert fidelity.calls == 0 and again.conv2.out_channels == first.conv2.out_channels


def test_flops_budget_is_met(tmp_path):
    _, out, x = _compress(tmp_path, 'flops')
    assert abs(pruned_flops(out, x, {}) / pruned_flops(tiny_model(), x, {}) - 0.5) <= 0.01


def test_dummy_input_is_required():
    from prunus.compression.torch import AutoCompressPruner
    model = tiny_model()
    with pytest.raises(ValueError, match='needs dummy_input'):
        AutoCompressPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], _trainer(Fidelity(model)),
                           Fidelity(model), None)
