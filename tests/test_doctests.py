"""The doctest examples in prunus's docstrings are true."""
import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / 'prunus'
MODULES = sorted('.'.join(p.relative_to(ROOT.parent).with_suffix('').parts).removesuffix('.__init__')
                 for p in ROOT.rglob('*.py') if '>>>' in p.read_text())


def test_there_are_doctests():
    assert len(MODULES) >= 5


@pytest.mark.parametrize('name', MODULES)
def test_doctests(name):
    failures, tried = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert tried and not failures
