"""The prunus logger hierarchy: resume messages are visible by default, and configurable."""
import logging
import subprocess
import sys
import textwrap

import pytest

import prunus  # noqa: F401  (installs the default handler)

SCRIPT = textwrap.dedent('''
    import logging, sys, tempfile
    {setup}
    import torch, prunus
    from prunus.demo import DigitsCNN
    folder = tempfile.mkdtemp()
    for _ in range(2):
        prunus.compare(DigitsCNN(4), ['l1'], example_inputs=torch.randn(1, 1, 8, 8),
                       cache_dir=folder, progress=False, latency_seconds=0.01, speedup=False)
''')


def _stderr(setup='', **env):
    import os
    result = subprocess.run([sys.executable, '-c', SCRIPT.format(setup=setup)], capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_hierarchy():
    assert logging.getLogger('prunus.search').parent is logging.getLogger('prunus')
    assert logging.getLogger('prunus.compare').parent is logging.getLogger('prunus')


@pytest.mark.parametrize('setup, env, shown', [
    ('', {}, ['prunus: resuming: 2 of 2 runs']),
    ('', {'PRUNUS_LOG_LEVEL': 'WARNING'}, []),
    ("logging.basicConfig(level=logging.INFO, format='APP %(name)s %(message)s')", {},
     ['APP prunus.compare resuming: 2 of 2 runs']),
])
def test_resume_message_by_default_and_when_configured(setup, env, shown):
    err = _stderr(setup, **env)
    lines = [line.split(' read from ')[0] for line in err.splitlines() if 'resuming' in line]
    assert lines == shown
