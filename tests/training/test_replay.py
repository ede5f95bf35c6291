"""Replay store: ReplyCache round trip, durability under kill -9, concurrency, export/import."""

from __future__ import annotations

import gzip
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from hierrouter_graph.hop import CachedReply
from training.replay.readers import CachedEncoder
from training.replay.store import ReplayStore, text_sha

REPO = Path(__file__).resolve().parents[2]


def _rows(tag: str, n: int, fp: str = "fp") -> list[tuple[str, str, CachedReply]]:
    return [(fp, f"{tag} prompt {i}", CachedReply(f"{tag} reply {i}", i, 2 * i)) for i in range(n)]


def _run(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], cwd=REPO)


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_round_trip_and_reopen(tmp_path: Path) -> None:
    db = tmp_path / "replay.sqlite"
    with ReplayStore(db) as store:
        assert store.get("fp", "p") is None
        store.put("fp", "p", CachedReply("r", 3, 4))
        store.put("fp", "p", CachedReply("later", 9, 9))  # first write wins: replays never change
        assert store.get("fp", "p") == CachedReply("r", 3, 4)
        assert store.get("other-fp", "p") is None
        assert store.put_many(_rows("x", 5)) == 5
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with ReplayStore(db) as store:
        assert len(store) == 6
        assert store.get("fp", "x prompt 3") == CachedReply("x reply 3", 3, 6)
        row = store._conn.execute(
            "SELECT prompt FROM replies WHERE prompt_sha=?", (text_sha("p"),)
        ).fetchone()
        assert row == ("p",)  # the full prompt is kept for inspection
        stats = store.stats()
    assert stats["replies"] == 6 and stats["replies_per_fingerprint"] == {"fp": 6}
    assert stats["tokens_in"] == 3 + sum(range(5))


def test_kill_9_mid_transaction_keeps_every_committed_batch(tmp_path: Path) -> None:
    db = tmp_path / "crash.sqlite"
    script = """
        import os, signal, sys
        from hierrouter_graph.hop import CachedReply
        from training.replay.store import ReplayStore
        store = ReplayStore(sys.argv[1])
        for b in range(5):
            store.put_many([("fp", f"b{b} p{i}", CachedReply("x" * 200 + str(i), i, i)) for i in range(100)])
        with store._transaction() as conn:  # batch 5 is in flight (big enough to spill into the WAL)
            for i in range(20000):
                conn.execute("INSERT INTO replies VALUES ('fp', ?, 'p', ?, 1, 1, 0)", (f"sha{i}", "y" * 500))
            os.kill(os.getpid(), signal.SIGKILL)
    """
    assert _run(script, str(db)).wait(timeout=60) == -9
    with ReplayStore(db) as store:
        assert len(store) == 500
        for b in range(5):
            assert store.get("fp", f"b{b} p42") == CachedReply("x" * 200 + "42", 42, 42)
    assert _integrity(db) == "ok"


def test_two_processes_and_threads_write_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "shared.sqlite"
    script = """
        import sys
        from hierrouter_graph.hop import CachedReply
        from training.replay.store import ReplayStore
        with ReplayStore(sys.argv[1]) as store:
            for b in range(300):
                store.put_many([("child", f"{b}/{i}", CachedReply("c", b, i)) for i in range(10)])
    """
    child = _run(script, str(db))
    store = ReplayStore(db)
    while not store.stats()["replies_per_fingerprint"].get("child"):  # wait until the child writes
        assert child.poll() is None, "the writer process died before writing"
        time.sleep(0.01)

    def write(tag: str) -> None:
        for b in range(20):
            store.put_many([("parent", f"{tag}{b}/{i}", CachedReply("p", b, i)) for i in range(10)])
            assert store.get("parent", f"{tag}{b}/3") == CachedReply("p", b, 3)

    threads = [threading.Thread(target=write, args=(t,)) for t in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    overlapped = child.poll() is None
    assert child.wait(timeout=60) == 0
    assert overlapped, "the child finished before the parent wrote: no concurrency was tested"
    assert store.stats()["replies_per_fingerprint"] == {"child": 3000, "parent": 400}
    store.close()
    assert _integrity(db) == "ok"


def test_export_is_deterministic_and_imports_back(tmp_path: Path) -> None:
    first, second = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    with ReplayStore(first) as store:
        store.put_many(_rows("z", 30, fp="fp-1") + _rows("y", 3, fp="fp-2"))
        store.put("fp-1", "ünïcode ‖ prompt", CachedReply("réponse", 1, 1))
        assert store.export_jsonl_gz(tmp_path / "tree.jsonl.gz") == 34
        assert store.export_jsonl_gz(tmp_path / "only-2.jsonl.gz", fingerprints=["fp-2"]) == 3
        assert store.export_jsonl_gz(tmp_path / "none.jsonl.gz", fingerprints=[]) == 0
    blob = (tmp_path / "tree.jsonl.gz").read_bytes()
    assert blob[4:8] == b"\0\0\0\0"  # gzip mtime 0: same content, same bytes
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    with ReplayStore(second) as store:
        assert store.import_jsonl_gz(tmp_path / "tree.jsonl.gz") == 34
        assert store.import_jsonl_gz(tmp_path / "tree.jsonl.gz") == 0
        assert store.get("fp-1", "ünïcode ‖ prompt") == CachedReply("réponse", 1, 1)
        store.export_jsonl_gz(tmp_path / "again.jsonl.gz")
    assert (tmp_path / "again.jsonl.gz").read_bytes() == blob
    lines = gzip.decompress(blob).decode().splitlines()
    assert len(lines) == 34 and '"created"' not in lines[0]


class _CountingEncoder:
    name, dim = "fake-encoder", 3

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, texts) -> torch.Tensor:
        self.seen += list(texts)
        return torch.tensor([[len(t), 0.5, -1.0] for t in texts], dtype=torch.float32)


def test_cached_encoder_encodes_each_text_once_across_reopen(tmp_path: Path) -> None:
    db = tmp_path / "emb.sqlite"
    inner = _CountingEncoder()
    with ReplayStore(db) as store:
        cached = CachedEncoder(inner, store)
        out = cached.encode(["a", "bb", "a"])
        assert out.tolist() == [[1, 0.5, -1], [2, 0.5, -1], [1, 0.5, -1]]
        cached.encode(["bb", "ccc"])
        assert inner.seen == ["a", "bb", "ccc"]
        assert (cached.name, cached.dim) == ("fake-encoder", 3)
    with ReplayStore(db) as store:
        again = CachedEncoder(inner, store).encode(["ccc", "a"])
        assert store.stats()["embeddings_per_encoder"] == {"fake-encoder": 3}
        assert set(store.get_embeddings("fake-encoder", ["a", "zz"])) == {"a"}
        with pytest.raises(ValueError, match="vectors"):
            store.put_embeddings("fake-encoder", ["a"], torch.zeros(2, 3))
    assert again.tolist() == [[3, 0.5, -1], [1, 0.5, -1]]
    assert inner.seen == ["a", "bb", "ccc"]
