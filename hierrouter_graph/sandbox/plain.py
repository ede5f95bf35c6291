"""Plain data: the only values that cross from sandboxed code to the side that judges it.

Why: a verdict computed from a live object can be forged (an ``__eq__`` that is always true, a
``__bool__`` that lies). What crosses the boundary is therefore a tagged JSON encoding of exact
builtin types only — ``None``, ``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``,
``list``, ``tuple``, ``set``, ``frozenset``, ``dict`` — rebuilt on the trusted side as fresh
builtin objects whose comparisons are the interpreter's own. Subclasses, instances of user
classes, generators and anything else are refused while encoding (the sandboxed side reports an
error for that expression) and while decoding (a forged payload is a :class:`PlainDataError`).

This module uses only the standard library and defines nothing but the codec: its source is
also run *inside* the sandbox (``bootstrap.py`` prepends it), so one codec serves both sides.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_ITEMS", "PlainDataError", "decode_plain", "encode_plain"]

# Bounds on what one value may hold: deeper or bigger values are an error, not a slow verdict.
MAX_DEPTH = 64
MAX_ITEMS = 100_000


class PlainDataError(ValueError):
    """A value is not plain data (encoding), or a payload is not a valid encoding (decoding)."""


class _Budget:
    def __init__(self) -> None:
        self.items = 0

    def take(self, depth: int) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise PlainDataError(f"value holds more than {MAX_ITEMS} items")
        if depth > MAX_DEPTH:
            raise PlainDataError(f"value nests deeper than {MAX_DEPTH} levels")


def _enc(value: Any, depth: int, budget: _Budget) -> list[Any]:
    budget.take(depth)
    kind = type(value)
    if value is None:
        return ["none"]
    if kind is bool or kind is int or kind is str:
        return [kind.__name__, value]
    if kind is float:
        return ["float", value.hex() if math.isfinite(value) else repr(value)]
    if kind is complex:
        return ["complex", _enc(value.real, depth + 1, budget), _enc(value.imag, depth + 1, budget)]
    if kind is bytes:
        return ["bytes", value.hex()]
    if kind is list or kind is tuple or kind is set or kind is frozenset:
        return [kind.__name__, [_enc(v, depth + 1, budget) for v in value]]
    if kind is dict:
        return ["dict", [[_enc(k, depth + 1, budget), _enc(v, depth + 1, budget)] for k, v in value.items()]]
    if _is_numpy_value(kind):
        # numpy's own scalar and array types (never a subclass): their builtin value, as a
        # benchmark's `==` against a literal would see it.
        return _enc(value.tolist(), depth + 1, budget)
    raise PlainDataError(f"a {kind.__module__}.{kind.__qualname__} is not plain data")


def _is_numpy_value(kind: type) -> bool:
    """An exact numpy scalar or ndarray type, when the code already imported numpy."""
    import sys

    numpy = sys.modules.get("numpy")
    if numpy is None or kind.__module__ != "numpy":
        return False
    return kind is numpy.ndarray or (
        issubclass(kind, numpy.generic) and kind.__module__ == "numpy" and kind in numpy.sctypeDict.values()
    )


def encode_plain(value: Any) -> list[Any]:
    """``value`` as a JSON-serialisable tagged tree; :class:`PlainDataError` if it is not plain."""
    return _enc(value, 0, _Budget())


def _float(text: Any) -> float:
    if not isinstance(text, str):
        raise PlainDataError(f"a float is encoded as a string, got {type(text).__name__}")
    if text in ("inf", "-inf", "nan"):
        return float(text)
    return float.fromhex(text)


def _dec(node: Any, depth: int, budget: _Budget) -> Any:
    budget.take(depth)
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise PlainDataError(f"expected a [tag, payload] list, got {str(node)[:60]!r}")
    tag, payload = node[0], node[1:]
    if tag == "none" and not payload:
        return None
    if len(payload) == 1:
        (data,) = payload
        if tag == "bool" and type(data) is bool:
            return data
        if tag == "int" and type(data) is int:
            return data
        if tag == "str" and type(data) is str:
            return data
        if tag == "float":
            return _float(data)
        if tag == "bytes" and type(data) is str:
            return bytes.fromhex(data)
        if tag in ("list", "tuple", "set", "frozenset") and type(data) is list:
            items = [_dec(v, depth + 1, budget) for v in data]
            try:
                return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
            except TypeError as exc:  # an unhashable member of a set
                raise PlainDataError(f"invalid {tag}: {exc}") from None
        if tag == "dict" and type(data) is list:
            out: dict[Any, Any] = {}
            for pair in data:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise PlainDataError("a dict is encoded as [key, value] pairs")
                try:
                    out[_dec(pair[0], depth + 1, budget)] = _dec(pair[1], depth + 1, budget)
                except TypeError as exc:
                    raise PlainDataError(f"invalid dict key: {exc}") from None
            return out
    if tag == "complex" and len(payload) == 2:
        real, imag = (_dec(p, depth + 1, budget) for p in payload)
        if type(real) is float and type(imag) is float:
            return complex(real, imag)
    raise PlainDataError(f"invalid plain-data node with tag {tag!r}")


def decode_plain(node: Any) -> Any:
    """Rebuild the value :func:`encode_plain` encoded, from fresh builtin objects only."""
    try:
        return _dec(node, 0, _Budget())
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, PlainDataError):
            raise
        raise PlainDataError(f"invalid plain-data payload: {exc}") from None
