"""Durable threads: a SQLite checkpointer for ``HierRouterGraph`` and the OpenAI-compatible server.

Why: LangGraph keeps a thread's turns in its checkpointer; ``InMemorySaver`` loses them when the
process ends. ``langgraph-checkpoint-sqlite`` writes every checkpoint to one file (WAL mode), so a
conversation survives a restart or a crash. Pass the result as ``HierRouterGraph(checkpointer=…)``;
``python -m hierrouter_graph serve`` uses it by default (``--threads-db``).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

__all__ = ["sqlite_checkpointer"]


def sqlite_checkpointer(path: str | os.PathLike[str]) -> Any:
    """A ``SqliteSaver`` on ``path`` (created with its folder), safe to share between threads.

    The saver serializes its own statements with a lock, so one connection opened with
    ``check_same_thread=False`` serves every worker thread of a server.
    """
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as error:  # pragma: no cover - depends on the installed extras
        raise ImportError(
            "durable threads need langgraph-checkpoint-sqlite: pip install 'hierrouter-graph[serve]'"
        ) from error
    file = Path(path).expanduser()
    file.parent.mkdir(parents=True, exist_ok=True)
    saver = SqliteSaver(sqlite3.connect(str(file), check_same_thread=False))
    saver.setup()
    return saver
