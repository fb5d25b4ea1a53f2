"""Write docs/api/*.md from the public faces' ``__all__`` (run after changing a face).

    python docs/gen_api.py          # rewrite the pages
    python docs/gen_api.py --check  # exit 1 if a page is out of date (the tests run this)

Each object is documented where it is defined, so lazily exported names (``prunus.speedup``)
and re-exports appear too.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PAGES = {
    'compression': ('prunus.compression', 'The framework-free core: config rules and the pruner registry.'),
    'compression-torch': ('prunus.compression.torch', 'PyTorch pruners with the legacy-NNI API and the training API.'),
    'compression-tf': ('prunus.compression.tf', 'Keras 3 pruners.'),
    'speedup': ('prunus.speedup', 'Physical removal of pruned channels (PyTorch), and saving the result.'),
    'speedup-tf': ('prunus.speedup.tf', 'Physical removal of pruned channels (Keras 3).'),
    'comparison': ('prunus.comparison', 'Comparing pruners: prunus.compare.'),
    'cli': ('prunus.cli', 'The prunus command line.'),
    'integrations': ('prunus.integrations', 'Training-loop callbacks.'),
    'testing': ('prunus.testing', 'Helpers the tests and benchmarks use to check a speedup.'),
    'prunus': ('prunus', 'The top-level package.'),
}
EXTRA = {'integrations': ['prunus.integrations.huggingface.PruningCallback',
                          'prunus.integrations.lightning.PruningCallback']}


def _where(face: str, name: str) -> str | None:
    obj = getattr(importlib.import_module(face), name)
    if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return None  # constants and tables are described by their module's docstring
    return f'{obj.__module__}.{obj.__qualname__}'


def render(page: str, seen: set[str]) -> str:
    """The page's markdown; objects already in ``seen`` (another face's) are linked, not repeated."""
    face, title = PAGES[page]
    module = importlib.import_module(face)
    lines = [f'# `{face}`', '', title, '', f'::: {face}', '    options:', '      members: false', '']
    targets = [t for t in (_where(face, n) for n in getattr(module, '__all__', [])) if t]
    elsewhere = []
    for target in targets + EXTRA.get(page, []):
        if target in seen:
            elsewhere.append(target)
            continue
        seen.add(target)
        lines += [f'::: {target}', '']
    if elsewhere:
        lines += ['Also exported here: ' + ', '.join(f'[`{t.rsplit(".", 1)[1]}`][{t}]' for t in elsewhere), '']
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help='only report stale pages')
    args = parser.parse_args(argv)
    stale: list[str] = []
    seen: set[str] = set()
    for page in PAGES:
        path = HERE / 'api' / f'{page}.md'
        text = render(page, seen)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    if stale:
        print('out of date (run python docs/gen_api.py):', *stale, sep='\n  ')
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
