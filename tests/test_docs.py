"""The API reference: pages current with the faces' __all__, and mkdocs builds it strictly."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_api_pages_list_every_public_name():
    result = subprocess.run([sys.executable, 'docs/gen_api.py', '--check'], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]


@pytest.mark.docs
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip('mkdocs')
    pytest.importorskip('mkdocstrings')
    pytest.importorskip('material')
    result = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--strict', '--site-dir',
                             str(tmp_path / 'site')], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    warnings = [line for line in result.stderr.splitlines() if 'WARNING -' in line]
    assert result.returncode == 0 and not warnings, '\n'.join(warnings) or result.stderr[-3000:]
    page = (tmp_path / 'site' / 'api' / 'speedup' / 'index.html').read_text()
    assert 'prunus.speedup.persist.load' in page and 'weights_only' in page
