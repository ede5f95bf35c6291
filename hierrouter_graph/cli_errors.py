"""Run a command-line ``main`` so that a bad input file prints one clear line, not a traceback.

Why: a user who points ``--policy`` at a truncated folder or ``--config`` at a broken file needs
the file's name and what was expected, which the loaders put in the exception message; the 40
lines of traceback around it only hide that. ``--debug`` (anywhere on the command line) or
``HIERROUTER_DEBUG=1`` lets the traceback through for a bug report. Errors that are not about the
user's input (bugs) still raise as usual.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from hierrouter_graph.graph import InvalidQueryError
from hierrouter_graph.loading_errors import LoadError
from hierrouter_graph.policy.signature import PolicyMismatchError

__all__ = ["INPUT_ERRORS", "one_line", "run_cli"]

INPUT_ERRORS: tuple[type[BaseException], ...] = (
    LoadError,
    PolicyMismatchError,
    InvalidQueryError,
    ValidationError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    sqlite3.DatabaseError,
)
"""What counts as "the input is wrong" (every loader in the project raises one of these)."""


def one_line(exc: BaseException, limit: int = 600) -> str:
    """The exception's message on one line (validation errors span several), at most ``limit`` chars."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_cli(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str] | None = None,
    *,
    extra: tuple[type[BaseException], ...] = (),
) -> int:
    """``main(argv)`` with ``--debug`` removed; an input error becomes ``error: ...`` and status 2.

    ``extra``: more exception types to treat as input errors (e.g. the training sandbox's refusal).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HIERROUTER_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        return int(main(args) or 0)
    except (*INPUT_ERRORS, *extra) as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2
