"""The package's import graph, read from the source: imports only go down the layers of
ARCHITECTURE.md, never in a cycle, never inside a function, never of another module's
private name; only the public faces declare ``__all__``."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from dataclasses import dataclass, field

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'prunus'

#: Layer of each module, by longest matching prefix; a module may import its own layer
#: and those below it (smaller numbers), nothing above.
LAYERS = {
    'prunus._interop': 0, 'prunus._logging': 0, 'prunus._optional': 0, 'prunus.compression': 0,
    'prunus.layers': 1,
    'prunus.speedup': 2, 'prunus.tf_speedup': 2,
    'prunus.compression.torch': 3, 'prunus.compression.tf': 3,
    'prunus.demo': 4, 'prunus.__main__': 4, 'prunus.cli': 4, 'prunus.comparison': 4,
    'prunus.integrations': 4, 'prunus.testing': 4,
    # the top-level package is an application face too (``prunus.compare``); every other
    # top-level module has its own entry above, so only ``prunus/__init__.py`` falls here
    'prunus': 4,
}
#: Framework sides: a module of one side never imports the other side.
SIDES = {
    'prunus.layers.torch': 'torch', 'prunus.speedup': 'torch', 'prunus.compression.torch': 'torch',
    'prunus.layers.tf': 'tf', 'prunus.tf_speedup': 'tf', 'prunus.speedup.tf': 'tf',
    'prunus.compression.tf': 'tf',
    'prunus.comparison.torch_backend': 'torch', 'prunus.comparison.keras_backend': 'tf',
    'prunus.cli': 'torch', 'prunus.integrations': 'torch', 'prunus.testing': 'torch',
}
FACES = {'prunus.compression', 'prunus.compression.torch', 'prunus.compression.tf',
         'prunus.speedup', 'prunus.speedup.tf',
         'prunus', 'prunus.comparison', 'prunus.cli', 'prunus.integrations',
         'prunus.integrations.huggingface', 'prunus.integrations.lightning', 'prunus.testing'}


def _by_prefix(table: dict, module: str):
    best = max((p for p in table if module == p or module.startswith(p + '.')), key=len, default=None)
    return None if best is None else table[best]


@dataclass
class Module:
    name: str
    is_package: bool
    tree: ast.Module
    imports: list[tuple[str, int, bool]] = field(default_factory=list)  # (target, line, in function)
    private: list[tuple[str, int]] = field(default_factory=list)  # (what, line)


def _name(path: pathlib.Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    package = parts[-1] == '__init__'
    return '.'.join(parts[:-1] if package else parts), package


def _load() -> dict[str, Module]:
    modules = {}
    for path in sorted(ROOT.rglob('*.py')):
        name, package = _name(path)
        modules[name] = Module(name, package, ast.parse(path.read_text(), str(path)))
    for module in modules.values():
        _read_imports(module, modules)
    return modules


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = module.name.split('.')
    if not module.is_package:
        base = base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return '.'.join(base + ([node.module] if node.module else []))


def _read_imports(module: Module, modules: dict[str, Module]) -> None:
    aliases: dict[str, str] = {}  # local name -> prunus module it is bound to

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.split('.')[0] == 'prunus':
                        module.imports.append((alias.name, child.lineno, inner))
                        if alias.asname:
                            aliases[alias.asname] = alias.name
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(module, child)
                if source.split('.')[0] != 'prunus':
                    continue
                for alias in child.names:
                    target = f'{source}.{alias.name}'
                    if target in modules:  # a submodule, not a name from the package
                        module.imports.append((target, child.lineno, inner))
                        aliases[alias.asname or alias.name] = target
                        continue
                    module.imports.append((source, child.lineno, inner))
                    if alias.name.startswith('_') and not alias.name.startswith('__'):  # dunders are public
                        module.private.append((f'{source}.{alias.name}', child.lineno))
            elif (isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name)
                  and child.value.id in aliases and child.attr.startswith('_')
                  and not child.attr.startswith('__')):
                module.private.append((f'{aliases[child.value.id]}.{child.attr}', child.lineno))
            visit(child, inner)

    visit(module.tree, False)


MODULES = _load()


def test_every_module_has_a_layer():
    missing = [m for m in MODULES if _by_prefix(LAYERS, m) is None]
    assert not missing, missing


def test_imports_only_go_down_the_layers():
    upward = [f'{m.name}:{line} imports {target} (layer {_by_prefix(LAYERS, target)} > '
              f'{_by_prefix(LAYERS, m.name)})'
              for m in MODULES.values() for target, line, _ in m.imports
              if _by_prefix(LAYERS, target) > _by_prefix(LAYERS, m.name)]
    assert not upward, '\n'.join(upward)


def test_no_framework_side_imports_the_other():
    crossing = [f'{m.name}:{line} imports {target}'
                for m in MODULES.values() for target, line, _ in m.imports
                if {_by_prefix(SIDES, m.name), _by_prefix(SIDES, target)} == {'torch', 'tf'}]
    assert not crossing, '\n'.join(crossing)


def _cycle() -> list[str] | None:
    graph = {name: sorted({t for t, _, _ in m.imports if t in MODULES and t != name})
             for name, m in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    for name in graph:
        if name not in state and (found := walk(name)):
            return found
    return None


def test_the_import_graph_has_no_cycle():
    cycle = _cycle()
    assert cycle is None, ' -> '.join(cycle)


def test_no_function_local_import_of_prunus():
    local = [f'{m.name}:{line} imports {target} inside a function'
             for m in MODULES.values() for target, line, inner in m.imports if inner]
    assert not local, '\n'.join(local)


def test_no_module_reads_another_modules_private_names():
    private = [f'{m.name}:{line} uses {what}' for m in MODULES.values() for what, line in m.private]
    assert not private, '\n'.join(private)


def _declares_all(tree: ast.Module) -> bool:
    return any(isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign))
               and any(isinstance(t, ast.Name) and t.id == '__all__'
                       for t in (node.targets if isinstance(node, ast.Assign) else [node.target]))
               for node in tree.body)


def test_only_the_public_faces_declare_all():
    declaring = {n for n, m in MODULES.items() if _declares_all(m.tree)}
    assert declaring == FACES, f'not faces: {sorted(declaring - FACES)}; faces without: {sorted(FACES - declaring)}'


@pytest.mark.parametrize('face', sorted(FACES))
def test_every_public_name_of_a_face_resolves(face):
    if face.endswith('torch') or face == 'prunus.speedup':
        pytest.importorskip('torch')
    if face.endswith('tf'):
        pytest.importorskip('tensorflow')
    module = __import__(face, fromlist=['__all__'])
    assert [n for n in module.__all__ if not hasattr(module, n)] == []


def test_the_checks_see_a_violation():
    """The graph reader finds what it looks for (guards against a checker that passes by
    reading nothing)."""
    fake = Module('prunus.compression.config', False, ast.parse(
        'from prunus.speedup import core\n'
        'def f():\n    from .selection import _hidden\n'))
    MODULES_WITH = {**MODULES, fake.name: fake}
    _read_imports(fake, MODULES_WITH)
    assert ('prunus.speedup.core', 1, False) in fake.imports
    assert ('prunus.compression.selection', 3, True) in fake.imports
    assert fake.private == [('prunus.compression.selection._hidden', 3)]


_WITHOUT_TORCH = '''
import importlib.util, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == 'torch' else real(name, *a)


class NoTorch:  # an install without torch: importing it fails
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.'):
            raise ModuleNotFoundError(name)


sys.meta_path.insert(0, NoTorch())
import keras
from prunus.compression.tf import L1FilterPruner
from prunus.speedup.tf import speedup
model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.Conv2D(2, 3)])
pruner = L1FilterPruner(model, [{'sparsity': 0.5, 'op_types': ['Conv2D']}], dependency_aware=True)
pruner.compress()
print(speedup(model, pruner.get_masks()).layers[0].filters, 'torch' in sys.modules)
'''


def test_the_keras_faces_need_no_torch():
    """The Keras pruners and speedup (with dependency-aware grouping) run where torch is
    not installed: the Keras speedup lives outside the PyTorch speedup package."""
    pytest.importorskip('tensorflow')
    result = subprocess.run([sys.executable, '-c', _WITHOUT_TORCH], capture_output=True, text=True,
                            timeout=300, cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ['2', 'False']
