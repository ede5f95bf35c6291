"""Recording through endpoint members concurrently, against a REAL scripted loopback server.

The server (``bench/fleet_server.py``) answers deterministically after a fixed latency with a
bounded number of slots, counts the requests it has in flight and can be scripted to fail. So:
the concurrent record equals the sequential one hop for hop, ``max_concurrency`` is the exact
number of requests in flight, 429/500 are retried, a hop that keeps failing names its member and
item, and a recording cut off mid-way resumes without asking any hop twice or losing a reply.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fleet_server import FleetState, serve_in_thread
from bench.fleet_server import endpoint_spec as spec
from hierrouter_graph import ModelSpec, RemoteModelError, RouterConfig
from hierrouter_graph.graph import build_pool
from training.replay.endpoint_hops import HopFailedError
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import tree_size
from training.tasks.items import Item
from training.tasks.jsonl_datasets import write_jsonl_dataset

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])  # loopback only: the test's own server

REPO = Path(__file__).resolve().parents[2]
LATENCY_S = 0.03


@pytest.fixture
def fleet() -> Iterator[tuple[str, FleetState]]:
    with serve_in_thread(LATENCY_S, slots=64) as served:
        yield served


def _config(*specs: ModelSpec) -> RouterConfig:
    return RouterConfig(models=list(specs), horizon=2)


def _pair(url: str, slots: int) -> RouterConfig:
    """Members alpha and beta on one server, ``slots`` requests in flight each."""
    return _config(spec("alpha", url, max_concurrency=slots), spec("beta", url, max_concurrency=slots))


def _items(n: int) -> list[Item]:
    return [
        Item(f"qa/{i}", "qa", f"Question {i}: what is {i} + {i}?", [str(2 * i)], "token_f1", "routing")
        for i in range(n)
    ]


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT fingerprint, prompt_sha, prompt, reply, tokens_in, tokens_out FROM replies "
            "ORDER BY fingerprint, prompt_sha"
        ).fetchall()


def _record(config: RouterConfig, items: list[Item], db: Path, *, concurrent: bool = True) -> Any:
    with ReplayStore(db) as store:
        return record_outcome_tree(
            config, build_pool(config), items, store, progress=False, concurrent=concurrent
        )


def test_concurrent_record_equals_sequential_hop_for_hop(
    fleet: tuple[str, FleetState], tmp_path: Path
) -> None:
    url, server = fleet
    config, items = _pair(url, 8), _items(6)
    sequential = _record(config, items, tmp_path / "seq.sqlite", concurrent=False)
    assert server.max_in_flight == 1 and server.replies == tree_size(6, 2, 2) == 36
    server.reset()
    concurrent = _record(config, items, tmp_path / "con.sqlite")
    assert server.max_in_flight > 8  # two members' hops were in flight together
    assert server.replies == 36 and max(server.answered.values()) == 1
    assert _rows(tmp_path / "seq.sqlite") == _rows(tmp_path / "con.sqlite")
    assert len(_rows(tmp_path / "con.sqlite")) == 36
    for stats in (sequential, concurrent):
        assert (stats.generated, stats.reused, stats.unique_hops) == (36, 0, 36)
    assert (concurrent.tokens_in, concurrent.tokens_out) == (sequential.tokens_in, sequential.tokens_out)
    again = _record(config, items, tmp_path / "con.sqlite")
    assert (again.generated, again.reused) == (0, 36) and server.replies == 36  # nothing asked again


def test_max_concurrency_is_the_number_in_flight_per_member(tmp_path: Path) -> None:
    with (
        serve_in_thread(LATENCY_S, slots=64) as (url_a, a),
        serve_in_thread(LATENCY_S, slots=64) as (url_b, b),
    ):
        config = _config(spec("alpha", url_a, max_concurrency=3), spec("beta", url_b, max_concurrency=5))
        _record(config, _items(8), tmp_path / "tree.sqlite")
        assert (a.max_in_flight, b.max_in_flight) == (3, 5)
        assert a.replies == b.replies == 8 + 16


def test_every_endpoint_member_of_a_stage_is_in_flight_together(tmp_path: Path) -> None:
    names = [f"m{i}" for i in range(8)]  # more members than a default thread pool has threads here
    with serve_in_thread(0.5, slots=64) as (url, server):  # slow enough for all 16 to start first
        config = RouterConfig(models=[spec(n, url, max_concurrency=2) for n in names], horizon=1)
        stats = _record(config, _items(2), tmp_path / "tree.sqlite")
    assert server.max_in_flight == 16 and stats.generated == server.replies == 16


def test_429_and_500_are_retried_then_recorded(fleet: tuple[str, FleetState], tmp_path: Path) -> None:
    url, server = fleet
    server.statuses = [429, 500]
    config = _config(spec("alpha", url), spec("beta", url))
    stats = _record(config, _items(1), tmp_path / "tree.sqlite")
    assert (server.requests, server.replies, stats.generated) == (6 + 2, 6, 6)
    server.reset()
    _record(config, _items(1), tmp_path / "seq.sqlite", concurrent=False)
    assert _rows(tmp_path / "tree.sqlite") == _rows(tmp_path / "seq.sqlite")


def test_a_hop_that_keeps_failing_names_member_and_item(tmp_path: Path) -> None:
    with (
        serve_in_thread(LATENCY_S, slots=64) as (url_a, a),
        serve_in_thread(LATENCY_S, slots=64) as (url_b, b),
    ):
        b.fail_containing = "Question 2:"
        config = _config(spec("alpha", url_a), spec("beta", url_b, max_retries=1))
        with pytest.raises(HopFailedError) as caught:
            _record(config, _items(4), tmp_path / "tree.sqlite")
        error = caught.value
        assert (error.member, error.items) == ("beta", ["qa/2"])
        assert isinstance(error.cause, RemoteModelError) and error.cause.attempts == 2
        assert str(error).startswith(
            "recording the hop of model 'beta' for item 'qa/2' failed: RemoteModelError"
        )
        assert "HTTP 503" in str(error) and "run the same command again to resume" in str(error)
        # every reply that arrived was stored: alpha's 4 and beta's 3 of stage 0
        assert len(_rows(tmp_path / "tree.sqlite")) == a.replies + b.replies == 4 + 3


def test_a_recording_cut_off_resumes_without_asking_twice_or_losing_replies(
    fleet: tuple[str, FleetState], tmp_path: Path
) -> None:
    url, server = fleet
    config, items = _pair(url, 4), _items(5)
    server.fail_after = 13  # the 14th reply on is HTTP 400: a fatal error, like a server gone bad
    with pytest.raises(HopFailedError, match="HTTP 400"):
        _record(config, items, tmp_path / "tree.sqlite")
    assert len(_rows(tmp_path / "tree.sqlite")) == server.replies == 13  # none lost
    first = dict(server.answered)
    server.reset()
    resumed = _record(config, items, tmp_path / "tree.sqlite")
    assert (resumed.generated, resumed.reused) == (30 - 13, 13)
    assert not set(first) & set(server.answered)  # no hop asked twice
    server.reset()
    _record(config, items, tmp_path / "seq.sqlite", concurrent=False)
    assert _rows(tmp_path / "tree.sqlite") == _rows(tmp_path / "seq.sqlite")


def test_kill_9_mid_recording_then_resume_equals_the_sequential_record(tmp_path: Path) -> None:
    with serve_in_thread(0.2, slots=64) as (url, server):
        config = _pair(url, 4)
        config.to_file(tmp_path / "router.yaml")
        items = _items(6)
        write_jsonl_dataset(items, tmp_path / "items.jsonl")
        db = tmp_path / "tree.sqlite"
        command = [sys.executable, "training/record.py", "--config", str(tmp_path / "router.yaml")]
        command += ["--items", str(tmp_path / "items.jsonl"), "--db", str(db), "--no-progress"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while server.replies < 10 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert process.returncode == -signal.SIGKILL, process.stderr.read().decode() if process.stderr else ""
        kept = len(_rows(db))
        assert 0 < kept < 36
        before = dict(server.answered)
        server.reset()
        server.latency_s = LATENCY_S  # the rest need no slow server
        resumed = _record(config, items, db)
        assert (resumed.generated, resumed.reused) == (36 - kept, kept)
        # only the requests in flight at the kill (at most 4 per member) can be asked again
        assert len(set(before) & set(server.answered)) <= 8
        server.reset()
        _record(config, items, tmp_path / "seq.sqlite", concurrent=False)
    assert _rows(db) == _rows(tmp_path / "seq.sqlite")


def test_max_concurrency_is_validated() -> None:
    bad = {"name": "alpha", "source": "org/alpha-1B", "endpoint": {"url": "http://h:1", "max_concurrency": 0}}
    with pytest.raises(ValueError, match=r"endpoint\.max_concurrency\n.*greater than or equal to 1"):
        RouterConfig.model_validate({"models": [bad]})
    assert spec("alpha", "http://127.0.0.1:9").endpoint.max_concurrency == 8  # type: ignore[union-attr]
    same = spec("a", "http://h:1", max_concurrency=32).fingerprint()
    assert spec("a", "http://h:1").fingerprint() == same  # speed, not replies: replay keys unchanged
