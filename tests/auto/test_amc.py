"""What AMCPruner adds to the shared invariants: its budget checks and arguments."""
import pytest

from prunus.compression.torch import AMCPruner

from .models import Fidelity, tiny_model


def _amc(tmp_path, **kwargs):
    model = tiny_model()
    fidelity = Fidelity(model)
    return AMCPruner(model, [{'op_types': ['Conv2d']}], lambda data, m: fidelity(m), [(fidelity.x, None)],
                     output_dir=tmp_path, progress=False, **kwargs)


def test_an_unreachable_flops_ratio_is_reported(tmp_path):
    pruner = _amc(tmp_path, flops_ratio=0.1, lbound=0.9, train_episode=1)
    with pytest.raises(ValueError, match=r'flops_ratio=0.1 is unreachable with lbound=0.9: the searchable layers '
                                         r'\(3\) at lbound leave 0\.\d+ of the FLOPs'):
        pruner.compress()


@pytest.mark.parametrize('kwargs,message', [
    ({'flops_ratio': 1.0}, r'flops_ratio must be in \(0, 1\); got 1.0'),
    ({'lbound': 0.0}, r'need 0 < lbound <= rbound <= 1; got lbound=0.0'),
    ({'reward': 'acc'}, "reward must be one of"),
    ({'train_episode': 0}, 'train_episode must be an integer >= 1; got 0'),
])
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _amc(tmp_path, **kwargs)


def test_config_list_takes_no_sparsity(tmp_path):
    model = tiny_model()
    with pytest.raises(ValueError, match="config_list\\[0\\] has key 'sparsity', which AMCPruner does not use"):
        AMCPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2d']}], lambda d, m: 0.0, [(Fidelity(model).x, None)])
