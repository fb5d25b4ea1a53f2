"""The main job: a short run on the real digits data."""
import subprocess
import sys

import pytest

pytest.importorskip('torch')
pytest.importorskip('sklearn')


def test_demo_prunes_and_recovers_accuracy():
    from prunus.demo import format_table, run_demo
    dense_acc, dense_params, dense_flops, rows = run_demo(
        sparsity=0.5, epochs=8, finetune_epochs=2, pruners=('l1', 'level', 'taylorfo', 'l1+reconstruct'),
        progress=False)
    assert dense_acc > 0.9
    assert [r.pruner for r in rows] == ['l1', 'level', 'taylorfo', 'l1+reconstruct']
    for row in rows:
        assert row.accuracy_finetuned > dense_acc - 0.1
        assert row.params < dense_params and row.flops < dense_flops
    by_name = {row.pruner: row for row in rows}
    # Filter pruning shrinks the model physically; unstructured zeros stay in place.
    assert by_name['l1'].params_small < dense_params and by_name['l1'].flops_small < dense_flops
    assert by_name['level'].params_small == dense_params
    # the refit model is far closer to the dense one before any fine-tuning
    assert by_name['l1+reconstruct'].accuracy_pruned > by_name['l1'].accuracy_pruned + 0.2
    assert by_name['l1+reconstruct'].flops_small == by_name['l1'].flops_small
    assert 'taylorfo' in format_table(dense_acc, dense_params, dense_flops, rows)


def test_cli_rejects_bad_sparsity():
    result = subprocess.run([sys.executable, '-m', 'prunus', 'demo', '--sparsity', '1.5'],
                            capture_output=True, text=True)
    assert result.returncode == 2 and '--sparsity must be in [0, 1); got 1.5' in result.stderr
