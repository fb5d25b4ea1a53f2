"""The core must import neither torch nor tensorflow."""
import subprocess
import sys


def test_core_imports_no_framework():
    code = ('import sys, prunus.compression, prunus.compression.config, prunus.compression.selection, '
            'prunus.compression.allocation, prunus.compression.registry\n'
            'import pkgutil, importlib\n'
            'for m in pkgutil.iter_modules(prunus.compression.__path__):\n'
            '    if not m.ispkg: importlib.import_module("prunus.compression." + m.name)\n'
            'bad = [m for m in ("torch", "tensorflow", "keras") if m in sys.modules]\n'
            'assert not bad, bad')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
