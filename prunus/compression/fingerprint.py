"""Short digests telling one search's inputs from another's, so a search resumes from
``experiment_data_dir`` only when it is the same search: the same model (architecture
and weights), config and evaluator. Framework-free: the model digest takes the
framework's own ``(name, dtype, shape, bytes)`` records."""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import types
from typing import Any, Iterable


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, 'little'))
        digest.update(part)
    return digest.hexdigest()[:16]


def records_digest(records: Iterable[tuple[str, str, tuple, bytes]], structure: str = '') -> str:
    """Digest of a model's tensors ``(name, dtype, shape, raw bytes)`` and its structure."""
    parts = [structure.encode()]
    for name, dtype, shape, raw in records:
        parts += [f'{name}|{dtype}|{tuple(shape)}'.encode(), raw]
    return _sha(*parts)


def config_digest(config_list: Any) -> str:
    return _sha(json.dumps(config_list, sort_keys=True, default=repr).encode())


def _code_bytes(code: types.CodeType) -> bytes:
    consts = b''.join(_code_bytes(c) if isinstance(c, types.CodeType) else repr(c).encode()
                      for c in code.co_consts)
    return code.co_code + consts + repr(code.co_names).encode()


class _Pickler(pickle.Pickler):
    """Pickles tensors by their values: torch's own pickling embeds a random
    serialization id, so the same data would digest differently every time."""

    def persistent_id(self, obj: Any) -> Any:
        if type(obj).__module__.startswith('torch') and hasattr(obj, 'detach') and hasattr(obj, 'dtype'):
            flat = obj.detach().cpu().contiguous().reshape(-1)
            try:
                raw = flat.numpy().tobytes()
            except (TypeError, RuntimeError):  # bfloat16 and other types numpy lacks
                raw = repr(flat.tolist()).encode()
            return ('tensor', str(obj.dtype), tuple(obj.shape), hashlib.sha256(raw).hexdigest())
        return None


def _value_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=4).dump(value)
        return buffer.getvalue()
    except Exception:  # an unpicklable capture: its type and identity-free repr
        return f'{type(value).__module__}.{type(value).__qualname__}'.encode()


def callable_digest(fn: Any) -> str:
    """Digest of what an evaluator computes: for a function its code and the values it
    closes over or is bound to; for a callable object its pickled state (a class
    holding the validation data digests the data); None for no evaluator."""
    if fn is None:
        return 'none'
    if isinstance(fn, types.MethodType):
        return _sha(callable_digest(fn.__func__).encode(), _value_bytes(fn.__self__))
    if isinstance(fn, types.FunctionType):
        cells = [_value_bytes(c.cell_contents) for c in (fn.__closure__ or ()) if _filled(c)]
        defaults = _value_bytes(fn.__defaults__)
        return _sha(f'{fn.__module__}.{fn.__qualname__}'.encode(), _code_bytes(fn.__code__), defaults, *cells)
    if hasattr(fn, 'func') and hasattr(fn, 'args'):  # functools.partial
        return _sha(callable_digest(fn.func).encode(), _value_bytes((fn.args, fn.keywords)))
    kind = f'{type(fn).__module__}.{type(fn).__qualname__}'.encode()
    call = getattr(type(fn), '__call__', None)
    code = _code_bytes(call.__code__) if isinstance(call, types.FunctionType) else b''
    return _sha(kind, code, _value_bytes(fn))


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True
