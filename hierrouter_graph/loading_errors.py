"""Errors for files that cannot be loaded, phrased as "<file>: expected X, got Y", and the helpers
every loader uses to raise them.

Why one module: a truncated weights file, a hand-edited JSON or a config from another version
must fail with the file's path and what was expected — not ``KeyError: 'pool'`` or a bare
``JSONDecodeError`` — and the CLIs print exactly these messages as one line (``cli.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

__all__ = [
    "LoadError",
    "read_json_object",
    "require_fields",
    "validation_error_in",
]


class LoadError(ValueError):
    """A file exists but is not what was expected; the message names the file and the expectation."""


def read_json_object(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ``what`` says what the file should be (for the message)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{file}: missing (expected {what})") from None
    except UnicodeDecodeError as exc:
        raise LoadError(f"{file}: expected {what} (UTF-8 JSON), got undecodable bytes: {exc.reason}") from exc
    if not text.strip():
        raise LoadError(f"{file}: expected {what} (a JSON object), got an empty file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LoadError(
            f"{file}: expected {what}, got invalid JSON at line {exc.lineno} column {exc.colno} "
            f"({exc.msg}; truncated?)"
        ) from exc
    if not isinstance(data, dict):
        raise LoadError(f"{file}: expected {what} (a JSON object), got a JSON {type(data).__name__}")
    return data


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", list: "a list", dict: "an object"}


def require_fields(path: str | os.PathLike[str], data: Mapping[str, Any], fields: Mapping[str, type]) -> None:
    """Raise ``LoadError`` for the first missing or mistyped field (dotted names reach into objects)."""
    for dotted, kind in fields.items():
        value: Any = data
        for part in dotted.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise LoadError(f"{path}: missing field {dotted!r} ({_TYPE_NAMES.get(kind, kind.__name__)})")
            value = value[part]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise LoadError(
                f"{path}: field {dotted!r} should be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                f"got {json.dumps(value)[:60]}"
            )


def validation_error_in(exc: ValidationError, file: str | os.PathLike[str]) -> ValidationError:
    """The same validation error, its title naming ``file`` (so the message says which file)."""
    keep = ("type", "loc", "input", "ctx")
    details: list[Any] = [{k: v for k, v in err.items() if k in keep} for err in exc.errors()]
    try:
        return ValidationError.from_exception_data(f"{exc.title} in {file}", details)
    except (TypeError, ValueError, KeyError):
        return exc
