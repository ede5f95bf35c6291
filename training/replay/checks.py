"""Checks a replay store file must pass before ``ReplayStore`` opens it.

Why: SQLite happily turns a zero-byte file into a new empty store, adds the replay tables to any
other database it is pointed at, and opens a file with a damaged page — the damage then shows up
much later as a UTF-8 error on one ``get`` or an aborted export. Each case here fails at open with
the file's path and what was expected. ``PRAGMA quick_check`` reads every page once (O(size), a
fraction of a second for the shipped record).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from hierrouter_graph.loading_errors import LoadError

__all__ = ["ReplayStoreError", "check_replay_file"]

_SQLITE_HEADER = b"SQLite format 3\x00"
_REPLAY_TABLES = {"replies", "embeddings", "meta"}
_CREATION_GRACE_S = 1.0
_FIX = "delete or move it to start a new store, or restore it (e.g. import the shipped .jsonl.gz)"


class ReplayStoreError(LoadError):
    """A replay store file that is not a usable replay store; the message names the file."""


def _read_header(path: Path) -> bytes:
    # Another process may have just created the file and not yet written page 1: give it a second.
    deadline = time.monotonic() + _CREATION_GRACE_S
    while True:
        with path.open("rb") as fh:
            header = fh.read(len(_SQLITE_HEADER))
        if header or time.monotonic() >= deadline:
            return header
        time.sleep(0.05)


def _check_header(path: Path) -> None:
    if path.is_dir():
        raise ReplayStoreError(f"{path}: expected a replay store file (SQLite), got a directory")
    header = _read_header(path)
    if not header:
        raise ReplayStoreError(f"{path}: expected a replay store (SQLite), got a zero-byte file; {_FIX}")
    if header != _SQLITE_HEADER:
        raise ReplayStoreError(
            f"{path}: expected a replay store (SQLite), got a file that is not a SQLite database "
            f"(starts with {header[:8]!r}); {_FIX}"
        )


def _check_contents(conn: sqlite3.Connection, path: Path) -> None:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if tables and not tables >= _REPLAY_TABLES:
        raise ReplayStoreError(
            f"{path}: a SQLite database but not a replay store (tables {sorted(tables)}; expected "
            f"{sorted(_REPLAY_TABLES)}); point --replay at a replay store or a new file"
        )
    problems = [" ".join(str(row[0]).split()) for row in conn.execute("PRAGMA quick_check(3)")]
    if problems != ["ok"]:
        raise ReplayStoreError(
            f"{path}: replay store is corrupted (PRAGMA quick_check: {'; '.join(problems)}); {_FIX}"
        )


def check_replay_file(path: Path, busy_timeout_s: float = 60.0) -> None:
    """Raise ``ReplayStoreError`` unless ``path`` is absent or a healthy replay store (or empty DB)."""
    if not path.exists():
        return
    _check_header(path)
    try:
        conn = sqlite3.connect(str(path), timeout=busy_timeout_s)
    except sqlite3.Error as exc:
        raise ReplayStoreError(f"{path}: cannot open the replay store: {exc}") from exc
    try:
        _check_contents(conn, path)
    except sqlite3.DatabaseError as exc:
        raise ReplayStoreError(
            f"{path}: expected a replay store, got a damaged SQLite file ({exc}); {_FIX}"
        ) from exc
    finally:
        conn.close()
