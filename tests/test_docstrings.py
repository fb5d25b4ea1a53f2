"""Every public callable has a docstring; public functions and classes show an example.

Public means: the names in a package face's ``__all__`` (functions and classes defined in
prunus), and the public methods and properties those classes define. A function that takes
arguments documents them (``Args:``), and every public function and class has an example
(``Example::`` or a doctest), as the style guide asks.
"""
import importlib
import inspect

import pytest

FACES = ['prunus', 'prunus.compression', 'prunus.compression.torch', 'prunus.compression.tf',
         'prunus.speedup', 'prunus.speedup.tf', 'prunus.comparison', 'prunus.cli',
         'prunus.integrations', 'prunus.integrations.huggingface', 'prunus.integrations.lightning',
         'prunus.testing']


def _public() -> dict[str, object]:
    found: dict[str, object] = {}
    ids: set[int] = set()
    for face in FACES:
        try:
            module = importlib.import_module(face)
        except ImportError:
            continue
        for name in getattr(module, '__all__', []):
            obj = getattr(module, name)
            if not (inspect.isclass(obj) or inspect.isfunction(obj)) or id(obj) in ids:
                continue
            if not getattr(obj, '__module__', '').startswith('prunus'):
                continue
            ids.add(id(obj))
            found[f'{face}.{name}'] = obj
            if inspect.isclass(obj):
                for member_name, member in vars(obj).items():
                    if member_name.startswith('_') or id(member) in ids:
                        continue
                    if inspect.isfunction(member) or isinstance(member, property):
                        ids.add(id(member))
                        found[f'{face}.{name}.{member_name}'] = member
    return found


PUBLIC = _public()


def _doc(obj) -> str:
    return (obj.__doc__ if isinstance(obj, property) else inspect.getdoc(obj)) or ''


def test_every_public_callable_has_a_docstring():
    missing = [name for name, obj in PUBLIC.items() if not _doc(obj).strip()]
    assert not missing, f'{len(missing)} without a docstring: {missing}'


def test_public_functions_document_arguments_and_show_an_example():
    lacking = []
    for name, obj in PUBLIC.items():
        if name.rsplit('.', 1)[0] not in FACES:
            continue  # a method or property: a docstring is enough
        doc = _doc(obj)
        needs = []
        if 'Example' not in doc and '>>>' not in doc:
            needs.append('an example')
        if inspect.isfunction(obj):
            params = [p for p in inspect.signature(obj).parameters if p not in ('self', 'cls')]
            if params and 'Args:' not in doc:
                needs.append('Args:')
        if needs:
            lacking.append(f"{name} ({', '.join(needs)})")
    assert not lacking, f'{len(lacking)} public callables lack: {lacking}'


@pytest.mark.parametrize('face', FACES)
def test_faces_have_all(face):
    try:
        module = importlib.import_module(face)
    except ImportError as exc:
        pytest.skip(str(exc))
    assert getattr(module, '__all__', None), f'{face} has no __all__'
