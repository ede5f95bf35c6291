"""Replay store: every generation and every context embedding, kept once, on disk, in SQLite.

Why: training replays the SAME hops over and over (PPO samples routes of the same items), and a
small model's reply to an exact prompt never changes for a fixed generation setting. Keyed by
(member fingerprint, exact prompt), a reply is generated once and replayed forever after — across
epochs, runs and processes — and a whole recorded outcome tree can ship inside the repository as a
small deterministic ``.jsonl.gz`` (``export_jsonl_gz`` / ``import_jsonl_gz``, format in ``replay_file.py``).

Durability: SQLite in WAL mode with ``synchronous=NORMAL`` — a commit is atomic, a ``kill -9``
loses at most the transaction in flight, readers never block the writer, and two processes can
share one file (each write waits up to ``busy_timeout_s`` for the other). One connection per store
guarded by a lock makes a store safe to share between threads.

Schema (version 1)::

    replies(fingerprint TEXT, prompt_sha TEXT, prompt TEXT, reply TEXT,
            tokens_in INTEGER, tokens_out INTEGER, created REAL,
            PRIMARY KEY (fingerprint, prompt_sha))
    embeddings(encoder TEXT, text_sha TEXT, dim INTEGER, vector BLOB,   -- float32, little endian
               PRIMARY KEY (encoder, text_sha))
    meta(key TEXT PRIMARY KEY, value TEXT)                               -- schema_version
    confidences(fingerprint TEXT, prompt_sha TEXT, mean_logprob REAL, mean_entropy REAL,
                source TEXT,                     -- 'generation' | 'teacher_forced' (backfill)
                PRIMARY KEY (fingerprint, prompt_sha))

``confidences`` was added to version 1 without a bump: it is optional (a reply without a row has
no known confidence) and created on open, so older stores and older readers keep working.

``prompt_sha`` = sha256 of the prompt text (the hop's cache key) in hex; the full prompt is kept
for inspection. The first write of a key wins (``INSERT OR IGNORE``), so a replayed reply never
changes under a running experiment.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hierrouter_graph.confidence import Confidence
from hierrouter_graph.hop import CachedReply
from hierrouter_graph.policy.encoder import SentenceEncoder
from training.replay.checks import check_replay_file
from training.replay.file import RECORD_FIELDS, read_records, write_records

__all__ = [
    "CONFIDENCE_SOURCES",
    "SCHEMA_VERSION",
    "ReplayStore",
    "StateEncoder",
    "text_sha",
]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    fingerprint TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    prompt TEXT NOT NULL,
    reply TEXT NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (fingerprint, prompt_sha)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS embeddings (
    encoder TEXT NOT NULL,
    text_sha TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (encoder, text_sha)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS confidences (
    fingerprint TEXT NOT NULL,
    prompt_sha TEXT NOT NULL,
    mean_logprob REAL NOT NULL,
    mean_entropy REAL NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (fingerprint, prompt_sha)
) WITHOUT ROWID;
"""

CONFIDENCE_SOURCES = ("generation", "teacher_forced")
"""Where a stored confidence came from: the generation itself, or a backfill that re-scored a
recorded reply with one forward pass (``training/backfill_confidence.py``)."""


def text_sha(text: str) -> str:
    """Hex sha256 of a text: fixed-size keys however long the prompt or context grows."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


StateEncoder = SentenceEncoder
"""What the environment needs of an encoder (the library's protocol, under training's name)."""


class ReplayStore:
    """SQLite replay store; implements ``hierrouter_graph.hop.ReplyCache`` (``get`` / ``put``)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        check_replay_file(self.path, busy_timeout_s)  # zero-byte, foreign or damaged: fail here, named
        # Autocommit mode: every write below opens its own explicit BEGIN IMMEDIATE transaction.
        self._conn = sqlite3.connect(
            str(self.path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        with self._transaction() as conn:  # not executescript: it would COMMIT mid-transaction
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        version = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
        if int(version) != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: replay schema v{version}, this code reads v{SCHEMA_VERSION}")

    # ------------------------------------------------------------------------------ plumbing

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write: BEGIN IMMEDIATE takes the write lock up front (waiting on another
        process through busy_timeout) instead of failing when a read upgrades to a write."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> ReplayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ replies

    def get(self, fingerprint: str, prompt: str) -> CachedReply | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT r.reply, r.tokens_in, r.tokens_out, c.mean_logprob, c.mean_entropy FROM replies r "
                "LEFT JOIN confidences c ON c.fingerprint = r.fingerprint AND c.prompt_sha = r.prompt_sha "
                "WHERE r.fingerprint=? AND r.prompt_sha=?",
                (fingerprint, text_sha(prompt)),
            ).fetchone()
        if row is None:
            return None
        confidence = Confidence(float(row[3]), float(row[4])) if row[3] is not None else None
        return CachedReply(row[0], int(row[1]), int(row[2]), confidence)

    def put(self, fingerprint: str, prompt: str, reply: CachedReply) -> None:
        self.put_many([(fingerprint, prompt, reply)])

    def put_many(self, rows: Iterable[tuple[str, str, CachedReply]]) -> int:
        """Store many replies in ONE transaction (all or nothing); returns how many were new."""
        now = time.time()
        rows = list(rows)
        values = [
            (fp, text_sha(prompt), prompt, r.reply, int(r.tokens_in), int(r.tokens_out), now)
            for fp, prompt, r in rows
        ]
        if not values:
            return 0
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?)", values)
            added = conn.total_changes - before
            self._insert_confidences(
                conn, [(fp, prompt, r.confidence, "generation") for fp, prompt, r in rows if r.confidence]
            )
            return added

    @staticmethod
    def _insert_confidences(
        conn: sqlite3.Connection, rows: Sequence[tuple[str, str, Confidence | None, str]]
    ) -> None:
        values = []
        for fp, prompt, confidence, source in rows:
            if confidence is None or confidence.mean_entropy is None:  # OpenVINO: no entropy
                continue
            if source not in CONFIDENCE_SOURCES:
                raise ValueError(f"confidence source must be one of {CONFIDENCE_SOURCES}, got {source!r}")
            values.append((fp, text_sha(prompt), confidence.mean_logprob, confidence.mean_entropy, source))
        conn.executemany("INSERT OR IGNORE INTO confidences VALUES (?, ?, ?, ?, ?)", values)

    def put_confidences(self, rows: Iterable[tuple[str, str, Confidence, str]]) -> int:
        """Add confidences of stored replies, (fingerprint, prompt, confidence, source); first wins."""
        rows = list(rows)
        with self._transaction() as conn:
            before = conn.total_changes
            self._insert_confidences(conn, rows)
            return conn.total_changes - before

    def replies_without_confidence(self, fingerprint: str) -> list[tuple[str, CachedReply]]:
        """(prompt, reply) of ``fingerprint``'s stored replies that have no confidence yet."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT r.prompt, r.reply, r.tokens_in, r.tokens_out FROM replies r "
                "LEFT JOIN confidences c ON c.fingerprint = r.fingerprint AND c.prompt_sha = r.prompt_sha "
                "WHERE r.fingerprint=? AND c.prompt_sha IS NULL ORDER BY r.prompt_sha",
                (fingerprint,),
            ).fetchall()
        return [(prompt, CachedReply(reply, int(ti), int(to))) for prompt, reply, ti, to in rows]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return self.get(*key) is not None

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    # ------------------------------------------------------------------------------ embeddings

    def get_embeddings(self, encoder_name: str, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """The stored embeddings among ``texts`` (missing texts are simply absent)."""
        by_sha = {text_sha(t): t for t in texts}
        return {by_sha[sha]: vector for sha, vector in self.get_embedding_rows(encoder_name, by_sha).items()}

    def get_embedding_rows(self, encoder_name: str, shas: Iterable[str]) -> dict[str, torch.Tensor]:
        """The stored embeddings among the texts whose ``text_sha`` is in ``shas``, by sha."""
        wanted = list(dict.fromkeys(shas))
        found: dict[str, torch.Tensor] = {}
        with self._lock:
            for start in range(0, len(wanted), 500):  # stay under SQLite's bound-parameter limit
                chunk = wanted[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT text_sha, dim, vector FROM embeddings WHERE encoder=? AND text_sha IN ({marks})",
                    (encoder_name, *chunk),
                ).fetchall()
                for sha, dim, blob in rows:
                    found[sha] = torch.from_numpy(np.frombuffer(blob, dtype="<f4", count=int(dim)).copy())
        return found

    def put_embeddings(self, encoder_name: str, texts: Sequence[str], vectors: torch.Tensor) -> None:
        """Store ``vectors[i]`` (float32) as the embedding of ``texts[i]``, in one transaction."""
        self.put_embedding_rows(encoder_name, [text_sha(t) for t in texts], vectors)

    def put_embedding_rows(self, encoder_name: str, shas: Sequence[str], vectors: torch.Tensor) -> int:
        """Store ``vectors[i]`` as the embedding of the text whose ``text_sha`` is ``shas[i]``.

        Existing rows are kept (first writer wins); returns how many rows were added.
        """
        if vectors.ndim != 2 or vectors.shape[0] != len(shas):
            raise ValueError(f"expected [{len(shas)}, dim] vectors, got {tuple(vectors.shape)}")
        array = vectors.detach().to("cpu", torch.float32).numpy().astype("<f4", copy=False)
        values = [(encoder_name, sha, int(array.shape[1]), array[i].tobytes()) for i, sha in enumerate(shas)]
        with self._transaction() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO embeddings VALUES (?, ?, ?, ?)", values)
            return int(conn.total_changes - before)

    # ------------------------------------------------------------------------------ inspection

    def stats(self) -> dict[str, Any]:
        """Counts for logs and summaries: replies (total and per fingerprint), embeddings, tokens."""
        with self._lock:
            per_fp = self._conn.execute(
                "SELECT fingerprint, COUNT(*) FROM replies GROUP BY fingerprint ORDER BY fingerprint"
            ).fetchall()
            tokens = self._conn.execute(
                "SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0) FROM replies"
            ).fetchone()
            per_encoder = self._conn.execute(
                "SELECT encoder, COUNT(*) FROM embeddings GROUP BY encoder ORDER BY encoder"
            ).fetchall()
        return {
            "path": str(self.path),
            "replies": sum(n for _, n in per_fp),
            "replies_per_fingerprint": {fp: n for fp, n in per_fp},
            "tokens_in": int(tokens[0]),
            "tokens_out": int(tokens[1]),
            "embeddings": sum(n for _, n in per_encoder),
            "embeddings_per_encoder": {name: n for name, n in per_encoder},
        }

    # ------------------------------------------------------------------------------ export/import

    def export_jsonl_gz(self, path: str | os.PathLike[str], fingerprints: Iterable[str] | None = None) -> int:
        """Write the replies (optionally only some fingerprints) as a reproducible gzip JSONL
        (``training/replay/file.py``: same replies, same bytes; written atomically). Returns the
        number of rows."""
        wanted = None if fingerprints is None else sorted(set(fingerprints))
        columns = ", ".join(f"r.{name}" for name in RECORD_FIELDS)
        query = (
            f"SELECT {columns}, c.mean_logprob, c.mean_entropy, c.source FROM replies r LEFT JOIN "
            "confidences c ON c.fingerprint = r.fingerprint AND c.prompt_sha = r.prompt_sha"
        )
        params: tuple[str, ...] = ()
        if wanted is not None:
            query += f" WHERE r.fingerprint IN ({','.join('?' * len(wanted))})" if wanted else " WHERE 0"
            params = tuple(wanted)
        query += " ORDER BY r.fingerprint, r.prompt_sha"
        with self._lock:
            return write_records(path, self._conn.execute(query, params))

    def import_jsonl_gz(self, path: str | os.PathLike[str]) -> int:
        """Load an exported file (one transaction); existing keys are kept. Returns rows added."""
        rows, confidences = read_records(path)
        added = self.put_many(rows)
        if confidences:
            self.put_confidences(confidences)
        return added
