"""Every benchmark starts as its docstring says to run it (checked with --help).

A benchmark is a script under ``benchmarks/`` with an ``if __name__ == '__main__':`` block;
the modules without one are helpers that benchmarks import, not run on their own.
"""
import ast
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import prunus

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / 'benchmarks').glob('*.py')
                 if "if __name__ == '__main__':" in p.read_text())


def _commands(script: Path) -> list[list[str]]:
    doc = ast.get_docstring(ast.parse(script.read_text())) or ''
    return [shlex.split(line.split('#')[0]) for line in doc.splitlines()
            if f'benchmarks/{script.name}' in line and 'python' in line]


@pytest.mark.parametrize('script', SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_docstring_command_starts(script, tmp_path):
    commands = _commands(script)
    assert commands, f'{script.name} says nowhere in its docstring how to run it'
    words = commands[0]
    env = dict(os.environ)
    while '=' in words[0]:
        key, _, value = words.pop(0).partition('=')
        env[key] = value
    assert words[0] == 'python' and words[1] == f'benchmarks/{script.name}'
    # only prunus itself on the path (as when installed): no 'tests' package to lean on
    (tmp_path / 'prunus').symlink_to(Path(prunus.__file__).resolve().parent)
    env['PYTHONPATH'] = str(tmp_path)
    result = subprocess.run([sys.executable, words[1], '--help'], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'usage:' in result.stdout
