"""prunus.compare on PyTorch: rows, measurements, cache and resume, errors, plots."""
import logging
import sys

import pytest
import torch
from torch import nn

import prunus
from prunus.comparison import Comparison, pareto_front
from prunus.demo import DigitsCNN, accuracy, batches, load_digits_data, train, train_epoch


@pytest.fixture(scope='module')
def digits():
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load_digits_data()
    model = train(DigitsCNN(8), xtr[:600], ytr[:600], epochs=2)
    return model, batches(xtr, ytr, 64)[:3], (xte, yte)


def _run(digits, pruners, **kw):
    model, data, (xte, yte) = digits
    kw.setdefault('budgets', [0.5])
    return prunus.compare(model, pruners, data=data, evaluator=lambda m: accuracy(m, xte, yte),
                          latency_seconds=0.02, progress=False, **kw)


def test_rows_and_measurements(digits):
    model, data, _ = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []

    def finetune(m, pruner):
        calls.append(pruner)
        train_epoch(m, torch.optim.SGD(m.parameters(), lr=0.05), nn.CrossEntropyLoss(), *data[0])

    table = _run(digits, ['l1', 'level', 'taylorfo'], budgets=[0.25, 0.5], finetune=finetune,
                 criterion=nn.CrossEntropyLoss())
    assert isinstance(table, Comparison)
    assert list(table['pruner']) == ['dense'] + ['l1'] * 2 + ['level'] * 2 + ['taylorfo'] * 2
    assert len(calls) == 6
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    dense = table.iloc[0]
    l1 = table[(table.pruner == 'l1') & (table.budget == 0.5)].iloc[0]
    # the classifier is kept whole; every conv loses exactly half its filters
    assert set(l1.layer_sparsity) == {'features.0', 'features.3', 'features.7'}
    assert all(abs(s - 0.5) < 1e-9 for s in l1.layer_sparsity.values())
    assert l1.params < dense.params and l1.flops < dense.flops
    assert l1.params_small < dense.params_small and l1.flops_small < dense.flops_small
    level = table[(table.pruner == 'level') & (table.budget == 0.5)].iloc[0]
    assert level.params_small == dense.params_small  # unstructured: nothing to remove
    assert (table.latency_ms > 0).all() and (table.latency_spread_ms >= 0).all()
    assert table.accuracy_finetuned.notna().all() and table.accuracy_pruned.between(0, 1).all()
    assert (table.seconds[1:] > 0).all()


def test_cache_resumes_and_rejects_another_model(digits, tmp_path, caplog):
    first = _run(digits, ['l1'], cache_dir=tmp_path)

    def must_not_run(m, p):
        raise AssertionError('a cached run was run again')

    _run(digits, ['l1'], cache_dir=tmp_path, finetune=must_not_run)
    with caplog.at_level(logging.INFO, logger='prunus'):
        again = _run(digits, ['l1', 'fpgm'], cache_dir=tmp_path)
    assert 'resuming: 2 of 3 runs' in caplog.text
    assert list(again.pruner) == ['dense', 'l1', 'fpgm']
    assert again.iloc[1].flops_small == first.iloc[1].flops_small
    assert again.iloc[1].layer_sparsity == first.iloc[1].layer_sparsity
    other = DigitsCNN(4)
    with pytest.raises(ValueError, match='holds a comparison of another model'):
        prunus.compare(other, ['l1'], data=digits[1], cache_dir=tmp_path, progress=False)


def test_spec_kinds(digits):
    from prunus.compression.torch import L2FilterPruner, LevelPruner
    made = []

    def factory(model, config_list):
        made.append(config_list)
        return LevelPruner(model, config_list)

    table = _run(digits, {'mine': factory, 'l2 dep': (L2FilterPruner, {'dependency_aware': False}),
                          'fpgm': 'fpgm'}, budgets=[0.3])
    assert list(table.pruner) == ['dense', 'mine', 'l2 dep', 'fpgm']
    assert made[0][0] == {'sparsity': 0.3, 'op_types': ['default']}
    assert made[0][1] == {'exclude': True, 'op_names': ['classifier']}
    template = _run(digits, ['l1'], budgets=[0.4],
                    config_list=[{'sparsity': 0.9, 'op_names': ['features.0']}])
    assert set(template.iloc[1].layer_sparsity) == {'features.0'}
    assert abs(template.iloc[1].layer_sparsity['features.0'] - 0.375) < 1e-9  # round(0.4*8)/8


def test_bad_input_messages(digits):
    model, data, _ = digits
    with pytest.raises(ValueError, match=r'budgets must be sparsities in \[0, 1\); got 1.5'):
        prunus.compare(model, ['l1'], data=data, budgets=[1.5])
    with pytest.raises(ValueError, match="did you mean 'fpgm'"):
        prunus.compare(model, ['fpmg'], data=data)
    with pytest.raises(TypeError, match=r"pruners\['x'\] must be"):
        prunus.compare(model, {'x': 3}, data=data)
    with pytest.raises(ValueError, match='needs example_inputs= or data='):
        prunus.compare(model, ['l1'])
    with pytest.raises(TypeError, match='needs a torch.nn.Module or a keras.Model'):
        prunus.compare(object(), ['l1'], data=data)
    with pytest.raises(ValueError, match="compare: pruner 'taylorfo' at budget 0.5"):
        prunus.compare(model, ['taylorfo'], data=data, progress=False)


def test_pareto_front_oracle():
    assert pareto_front([3, 1, 2, 4, 2], [0.7, 0.2, 0.6, 0.69, 0.5]) == [1, 2, 0]
    assert pareto_front([], []) == []


def test_plot_draws_three_panels_with_front(digits, tmp_path):
    pytest.importorskip('matplotlib')
    table = _run(digits, ['l1', 'level'], budgets=[0.3, 0.6])
    figure = table.plot(tmp_path / 'cmp.png')
    assert (tmp_path / 'cmp.png').stat().st_size > 0
    acc, lat, sparsity = figure.axes[:3]
    assert 'Pareto front' in [line.get_label() for line in acc.get_lines()]
    assert len(lat.containers) == 3  # dense, l1, level error bars
    assert [t.get_text() for t in sparsity.get_xticklabels()] == ['features.0', 'features.3', 'features.7']
    assert table[table.pruner == 'l1'].plot is not None  # slices stay Comparisons


def test_missing_matplotlib_names_the_extra(digits, monkeypatch):
    from prunus.compression.torch import SensitivityAnalysis
    table = Comparison.from_rows([])
    monkeypatch.setitem(sys.modules, 'matplotlib', None)
    monkeypatch.setitem(sys.modules, 'matplotlib.pyplot', None)
    with pytest.raises(ImportError, match=r"Comparison.plot\(\) needs matplotlib.*prunus\[plot\]"):
        table.plot()
    analysis = SensitivityAnalysis(digits[0], lambda m: 1.0, sparsities=[0.5])
    with pytest.raises(ImportError, match=r"SensitivityAnalysis.plot\(\) needs matplotlib.*prunus\[plot\]"):
        analysis.plot()
