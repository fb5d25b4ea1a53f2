"""The public API type-checks: user code against it, and the package faces themselves."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the faces users import from, and the modules behind the newest public names
PUBLIC = ['prunus/__init__.py', 'prunus/compression/__init__.py', 'prunus/compression/torch/__init__.py',
          'prunus/compression/tf/__init__.py', 'prunus/speedup/__init__.py', 'prunus/speedup/tf/__init__.py',
          'prunus/speedup/persist.py', 'prunus/comparison', 'prunus/cli', 'prunus/integrations',
          'prunus/testing', 'prunus/_logging.py', 'prunus/_optional.py']


@pytest.mark.typing
def test_mypy_clean_on_public_api_and_user_code():
    pytest.importorskip('mypy')
    assert (ROOT / 'prunus' / 'py.typed').exists()
    result = subprocess.run([sys.executable, '-m', 'mypy', '--follow-imports=silent', *PUBLIC,
                             'tests/typing/usage.py'], cwd=ROOT, capture_output=True, text=True,
                            timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
