"""examples/compare_pruners.ipynb runs top to bottom (its cells assert what they show)."""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')
pytest.importorskip('matplotlib')

import prunus  # noqa: E402

NOTEBOOK = Path(__file__).resolve().parents[1] / 'examples' / 'compare_pruners.ipynb'


@pytest.mark.notebook
def test_compare_pruners_notebook_executes(tmp_path, monkeypatch):
    # the kernel is a new process: make it import this prunus, whatever is installed
    root = str(Path(prunus.__file__).resolve().parents[1])
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join([root, os.environ.get('PYTHONPATH', '')]))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                                     resources={'metadata': {'path': str(tmp_path)}})
    client.execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    assert any('image/png' in o.get('data', {}) for o in outputs)
    text = ''.join(o.get('text', '') for o in outputs)
    assert 'reloaded test accuracy' in text
