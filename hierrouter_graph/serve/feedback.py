"""The route log and its outcomes: what a served route decided, and how well it did.

Why: a router trained once on a benchmark tree meets other traffic when deployed. To learn from
that traffic off-policy, every served route is logged at completion time — per hop the state the
policy decided in (context text c_t, stage ℓ_t, cost C_t, α), the action, the policy's probability
of it, and the hop's δ — keyed by the completion id the client got. ``POST /v1/feedback`` then
attaches a score in [0, 1] (or a label mapped to one) to a logged route; ``training/from_feedback.py``
reads the scored routes and improves the policy with an importance-weighted, clipped estimator
that needs exactly those logged probabilities.

Durability: one SQLite file in WAL mode with ``synchronous=FULL``; a route (its row and its hops)
and a feedback row are each one transaction, so a kill -9 leaves every acknowledged write on disk
and never half a route.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hierrouter_graph.hop import extend_context

__all__ = ["LABEL_SCORES", "FeedbackError", "FeedbackStore", "LoggedHop", "LoggedRoute"]

LABEL_SCORES: dict[str, float] = {"good": 1.0, "correct": 1.0, "neutral": 0.5, "bad": 0.0, "wrong": 0.0}
"""Labels a client may send instead of a score."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS routes (
    completion_id TEXT PRIMARY KEY, thread_id TEXT, created REAL NOT NULL, alpha REAL,
    query TEXT NOT NULL, route TEXT NOT NULL, cost REAL NOT NULL, policy TEXT
);
CREATE INDEX IF NOT EXISTS routes_thread ON routes(thread_id, created);
CREATE TABLE IF NOT EXISTS hops (
    completion_id TEXT NOT NULL REFERENCES routes(completion_id), stage INTEGER NOT NULL,
    context TEXT NOT NULL, cost_before REAL NOT NULL, alpha REAL, action TEXT NOT NULL,
    prob REAL NOT NULL, hop_cost REAL NOT NULL, PRIMARY KEY (completion_id, stage)
);
CREATE TABLE IF NOT EXISTS feedback (
    completion_id TEXT PRIMARY KEY REFERENCES routes(completion_id), score REAL NOT NULL,
    label TEXT, note TEXT, created REAL NOT NULL
);
"""


class FeedbackError(ValueError):
    """Bad feedback: ``status`` (404 unknown id, 409 duplicate, 400 otherwise) and the ``param``."""

    def __init__(self, status: int, message: str, param: str) -> None:
        super().__init__(message)
        self.status, self.param = status, param


@dataclass(frozen=True)
class LoggedHop:
    """One decision as served: the state (context, stage, cost before, α), action, π(action|state), δ."""

    stage: int
    context: str
    cost_before: float
    alpha: float | None
    action: str
    prob: float
    hop_cost: float


@dataclass(frozen=True)
class LoggedRoute:
    """A served route with its score: what the off-policy trainer reads."""

    completion_id: str
    cost: float
    alpha: float | None
    score: float
    created: float
    hops: tuple[LoggedHop, ...]


def hops_of(output: Mapping[str, Any], alpha: float | None) -> list[LoggedHop]:
    """The logged hops of a finished graph run: contexts rebuilt as the graph built them (query,
    then each reply appended), the routed member as the action (the one the policy chose, even
    when a fallback answered)."""
    context, hops = str(output.get("query", "")), []
    for hop in output.get("trace") or []:
        hops.append(
            LoggedHop(
                stage=int(hop["stage"]),
                context=context,
                cost_before=float(hop["cumulative_cost"]) - float(hop["cost"]),
                alpha=alpha,
                action=str(hop.get("fallback_from", hop["model"])),
                prob=float(hop["prob"]),
                hop_cost=float(hop["cost"]),
            )
        )
        context = extend_context(context, str(hop["reply"]))
    return hops


def parse_score(score: Any, label: Any) -> tuple[float, str | None]:
    """(score, label) of a feedback body: exactly one of a score in [0, 1] or a known label."""
    if (score is None) == (label is None):
        raise FeedbackError(400, "score: send exactly one of 'score' (0..1) or 'label'", "score")
    if label is not None:
        if not isinstance(label, str) or label not in LABEL_SCORES:
            raise FeedbackError(400, f"label: expected one of {sorted(LABEL_SCORES)}, got {label!r}", "label")
        return LABEL_SCORES[label], label
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        raise FeedbackError(400, f"score: expected a number in [0, 1], got {score!r}", "score")
    if not 0.0 <= float(score) <= 1.0:
        raise FeedbackError(400, f"score: must lie in [0, 1], got {score}", "score")
    return float(score), None


class FeedbackStore:
    """The route log and feedback in one SQLite file (thread-safe; one connection, one lock)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._lock = threading.Lock()
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def log_route(
        self,
        completion_id: str,
        output: Mapping[str, Any],
        alpha: float | None,
        *,
        thread_id: str | None = None,
        policy: str | None = None,
        created: float | None = None,
    ) -> list[LoggedHop]:
        """Write a finished route and its hops in one transaction; returns the hops logged."""
        hops = hops_of(output, alpha)
        route = [hop.action for hop in hops]
        when = time.time() if created is None else created
        with self._transaction() as db:
            db.execute(
                "INSERT INTO routes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (completion_id, thread_id, when, alpha, str(output.get("query", "")), json.dumps(route),
                 float(output.get("cost", 0.0)), policy),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO hops VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(completion_id, h.stage, h.context, h.cost_before, h.alpha, h.action, h.prob, h.hop_cost)
                 for h in hops],
            )  # fmt: skip
        return hops

    def add_feedback(
        self,
        *,
        completion_id: str | None = None,
        thread_id: str | None = None,
        score: Any = None,
        label: Any = None,
        note: Any = None,
    ) -> dict[str, Any]:
        """Attach a score to a logged route: by ``completion_id``, or a thread's latest route.

        Raises ``FeedbackError``: 400 bad field, 404 unknown id, 409 a route already scored.
        """
        value, label = parse_score(score, label)
        if note is not None and not isinstance(note, str):
            raise FeedbackError(400, f"note: expected a string, got {type(note).__name__}", "note")
        if (completion_id is None) == (thread_id is None):
            raise FeedbackError(
                400, "completion_id: send exactly one of 'completion_id' or 'thread_id'", "completion_id"
            )
        with self._transaction() as db:
            if completion_id is not None:
                if not isinstance(completion_id, str):
                    raise FeedbackError(400, "completion_id: expected a string", "completion_id")
                row = db.execute("SELECT completion_id FROM routes WHERE completion_id = ?", (completion_id,))
                param, wanted = "completion_id", completion_id
            else:
                if not isinstance(thread_id, str):
                    raise FeedbackError(400, "thread_id: expected a string", "thread_id")
                row = db.execute(
                    "SELECT completion_id FROM routes WHERE thread_id = ? ORDER BY created DESC, rowid DESC "
                    "LIMIT 1",
                    (thread_id,),
                )
                param, wanted = "thread_id", thread_id
            found = row.fetchone()
            if found is None:
                raise FeedbackError(404, f"{param}: no route logged for {wanted!r}", param)
            target = found[0]
            if db.execute("SELECT 1 FROM feedback WHERE completion_id = ?", (target,)).fetchone():
                raise FeedbackError(409, f"{param}: the route {target!r} already has feedback", param)
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?)", (target, value, label, note, time.time())
            )
        return {"completion_id": target, "score": value, "label": label, "note": note}

    def scored_routes(self) -> list[LoggedRoute]:
        """Every route with feedback, oldest first, with its hops in stage order."""
        with self._lock:
            routes = self._db.execute(
                "SELECT r.completion_id, r.cost, r.alpha, f.score, r.created FROM routes r "
                "JOIN feedback f USING (completion_id) ORDER BY r.created, r.completion_id"
            ).fetchall()
            hops: dict[str, list[LoggedHop]] = {}
            for row in self._db.execute(
                "SELECT h.completion_id, stage, context, cost_before, alpha, action, prob, hop_cost "
                "FROM hops h JOIN feedback f USING (completion_id) ORDER BY h.completion_id, stage"
            ):
                hops.setdefault(row[0], []).append(LoggedHop(*row[1:]))
        return [LoggedRoute(cid, cost, alpha, score, created, tuple(hops.get(cid, ())))
                for cid, cost, alpha, score, created in routes]  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Rows per table (what a health check or a report states)."""
        with self._lock:
            return {
                table: int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
                for table in ("routes", "hops", "feedback")
            }
