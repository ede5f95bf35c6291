"""Command-line flags made from a settings dataclass's fields (TRL's ``HfArgumentParser`` way).

Why: a CLI that restates its dataclass's fields by hand drifts from it (a new field has no flag,
a flag's default is not the field's, two spellings of one setting). Here each field becomes one
flag: ``--field-name`` (underscores to dashes), its type read from the annotation (``int``,
``float``, ``str``; ``bool`` as ``--x/--no-x``; ``T | None`` as ``T``), its default the one given
(the dataclass's own, or a saved run's), its help the field's docstring (the string literal right
after it in the class body) or its ``metadata["help"]``, its choices ``metadata["choices"]``.
Spellings users already type stay as aliases (``aliases={"learning_rate": ("--lr",)}``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

__all__ = ["PPO_FLAG_ALIASES", "AddsArguments", "add_dataclass_flags", "dataclass_from_flags", "field_docs"]

T = TypeVar("T")

PPO_FLAG_ALIASES: dict[str, tuple[str, ...]] = {
    "num_minibatches": ("--minibatches",),
    "update_epochs": ("--epochs",),
    "learning_rate": ("--lr",),
}
"""The ``PPOArgs`` spellings README, docs and the Makefile use, kept beside each field's own flag."""


class AddsArguments(Protocol):
    """An ``argparse`` parser or argument group."""

    def add_argument(self, *names: str, **options: Any) -> Any: ...


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring: the string literal that follows its annotation in the class body."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # a class made at run time has no source: no docstrings
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    docs: dict[str, str] = {}
    for stmt, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(following.value.value.split())
    return docs


def _flag_type(annotation: Any, where: str) -> tuple[type, bool]:
    """(the scalar type a flag parses, whether None is allowed) of a field's annotation."""
    optional = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        if len(members) != 1:
            raise TypeError(f"{where}: a flag needs one type, the annotation is {annotation}")
        annotation = members[0]
    if annotation not in (int, float, str, bool):
        raise TypeError(f"{where}: no flag for a field of type {annotation} (int, float, str or bool)")
    return annotation, optional


def add_dataclass_flags(
    parser: AddsArguments,
    cls: type,
    defaults: object | None = None,
    *,
    exclude: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    helps: Mapping[str, str] | None = None,
) -> None:
    """One flag per field of the dataclass ``cls`` (except ``exclude``), defaulting to
    ``defaults``'s value of it (an instance of ``cls``; else the field's own default).

    ``aliases``: more spellings of a field's flag; ``helps``: help text that replaces the field's
    docstring (a CLI's own wording). The flag's ``dest`` is the field name, so
    ``dataclass_from_flags`` reads the parsed values back by name.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    docs = {**field_docs(cls), **dict(helps or {})}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        kind, _ = _flag_type(hints[f.name], f"{cls.__name__}.{f.name}")
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        names = [f"--{f.name.replace('_', '-')}", *(aliases or {}).get(f.name, ())]
        options: dict[str, Any] = {"dest": f.name, "default": default}
        help_text = f.metadata.get("help") or docs.get(f.name)
        options["help"] = f"{help_text} (default: %(default)s)" if help_text else "(default: %(default)s)"
        if kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = kind
            if "choices" in f.metadata:
                options["choices"] = tuple(f.metadata["choices"])
        parser.add_argument(*names, **options)


def _field_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def dataclass_from_flags(ns: argparse.Namespace, cls: type[T], base: T | None = None) -> T:
    """``base`` (else ``cls()``) with every field that has a parsed flag set from ``ns``; the
    dataclass's own checks (``__post_init__``) then run on the result."""
    start = base if base is not None else cls()
    assert dataclasses.is_dataclass(start) and not isinstance(start, type)
    given = {f.name: getattr(ns, f.name) for f in dataclasses.fields(start) if f.init and hasattr(ns, f.name)}
    return typing.cast(T, dataclasses.replace(start, **given))
