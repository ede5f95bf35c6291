"""Recording an outcome tree through endpoint members: one hop at a time vs concurrent hops.

Part 1 (always): a REAL OpenAI-compatible server in its own process (``bench/fleet_server.py``:
FastAPI + uvicorn, a fixed ``--latency-s`` per request, ``--slots`` N parallel slots, replies
derived from the prompt, with ``usage``) serves two endpoint members, each with
``max_concurrency = N/2`` so the client keeps exactly N requests in flight. The same tree
(``--items`` items, L=2: 6 hops per item) is recorded into two fresh replay stores with
``record_outcome_tree(..., concurrent=False)`` and ``concurrent=True``; the bench prints hops/s
of both, the ratio (target >= 0.8 x N), the server's largest number of requests in flight, and
whether the two records are identical hop for hop (same keys, replies and token counts).

Part 2 (``--real``): the same comparison against ``transformers serve FOLDER
--continuous-batching`` on this CPU (one torch thread) with the converted SmolLM2-135M folder
(``python -m hierrouter_graph prepare`` puts it under ``$HIERROUTER_CACHE`` or
``~/.cache/hierrouter_graph/models/``, float32 as converted), one member with ``--real-slots``
requests in flight, after a concurrent warm-up on other items.

    python bench/fleet_recording.py                        # N=32, 32 items, 0.2 s per request
    python bench/fleet_recording.py --real                 # + transformers serve, a few minutes
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: its sibling `bench` modules (not installed)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.fleet_server import endpoint_spec
from bench.local_server import OFFLINE_ENV, free_port, stop, wait_ready
from hierrouter_graph.config import RouterConfig, default_cache_dir
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.model_spec import EndpointSpec, ModelSpec
from training.replay.record import RecordStats, record_outcome_tree
from training.replay.store import ReplayStore
from training.tasks.items import Item

ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def running(
    command: list[str], log: Path, ready_url: str, env: dict[str, str], timeout: float
) -> Iterator[None]:
    """``command`` as a server process until the block ends; ready once ``ready_url`` answers 200."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_ready(process, log, ready_url, timeout, name=command[0], error=RuntimeError)
        yield
    finally:
        stop(process)


def items(n: int, first: int = 0) -> list[Item]:
    """``n`` distinct short questions, numbered from ``first`` (the trees differ from the first hop on)."""
    numbers = range(first, first + n)
    return [
        Item(
            f"bench/{i}",
            "bench",
            f"Question {i}: what is {i} plus {i + 1}?",
            [str(2 * i + 1)],
            "token_f1",
            "routing",
        )
        for i in numbers
    ]


def rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT fingerprint, prompt_sha, reply, tokens_in, tokens_out FROM replies "
            "ORDER BY fingerprint, prompt_sha"
        ).fetchall()


def record(config: RouterConfig, tree: list[Item], db: Path, concurrent: bool) -> RecordStats:
    with ReplayStore(db) as store:
        return record_outcome_tree(
            config, build_pool(config), tree, store, progress=False, concurrent=concurrent
        )


def compare(label: str, config: RouterConfig, tree: list[Item], workdir: Path, slots: int) -> float:
    """Record ``tree`` both ways; print hops/s, the ratio and whether the records match."""
    sequential = record(config, tree, workdir / f"{label}-seq.sqlite", concurrent=False)
    concurrent = record(config, tree, workdir / f"{label}-con.sqlite", concurrent=True)
    same = rows(workdir / f"{label}-seq.sqlite") == rows(workdir / f"{label}-con.sqlite")
    hops = sequential.generated
    assert hops == concurrent.generated == sequential.unique_hops, (sequential, concurrent)
    seq_rate, con_rate = hops / sequential.wall_s, hops / concurrent.wall_s
    ratio = con_rate / seq_rate
    print(f"[{label}] {hops} hops; sequential {sequential.wall_s:.2f} s = {seq_rate:.2f} hops/s")
    print(f"[{label}] concurrent ({slots} in flight) {concurrent.wall_s:.2f} s = {con_rate:.2f} hops/s")
    print(
        f"[{label}] speed-up {ratio:.2f}x = {ratio / slots:.2f} x N (N={slots}); "
        f"records identical hop for hop: {same}"
    )
    return ratio


def scripted(args: argparse.Namespace, workdir: Path) -> float:
    port = free_port()
    command = [sys.executable, "-m", "bench.fleet_server", "--port", str(port)]
    command += ["--latency-s", str(args.latency_s), "--slots", str(args.slots)]
    base = f"http://127.0.0.1:{port}"
    with running(command, workdir / "fleet.log", f"{base}/health", dict(os.environ), 60):
        per_member = max(args.slots // 2, 1)
        config = RouterConfig(
            models=[endpoint_spec(n, base, max_concurrency=per_member) for n in ("alpha", "beta")], horizon=2
        )
        print(
            f"scripted server: latency {args.latency_s} s, {args.slots} slots; "
            f"2 members x {per_member} in flight"
        )
        ratio = compare("scripted", config, items(args.items), workdir, args.slots)
        stats = httpx.get(f"{base}/stats").json()
        print(f"[scripted] server saw at most {stats['max_in_flight']} requests in flight")
    target = 0.8 * args.slots
    print(f"[scripted] target >= {target:.1f}x: {'met' if ratio >= target else 'NOT met'}")
    return ratio


def real(args: argparse.Namespace, workdir: Path) -> float:
    folder = Path(args.real_folder or default_cache_dir() / "models" / "smollm2-135m-instruct")
    if not (folder / "config.json").is_file():
        raise SystemExit(
            f"--real: no converted model folder at {folder} (run: python -m hierrouter_graph prepare)"
        )
    cli = Path(sys.executable).parent / "transformers"
    port = free_port()
    hub = workdir / "hub"
    hub.mkdir(exist_ok=True)
    env = {**os.environ, **OFFLINE_ENV, "HF_HUB_CACHE": str(hub), "OMP_NUM_THREADS": "1"}
    command = [str(cli), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    command += ["--continuous-batching"]
    base = f"http://127.0.0.1:{port}"
    spec = ModelSpec(
        name="smollm2-135m",
        source="SmolLM2-135M-Instruct",
        base_rate=0.0001,
        max_new_tokens=args.real_tokens,
        endpoint=EndpointSpec(url=base, model=str(folder), timeout_s=300, max_concurrency=args.real_slots),
    )
    config = RouterConfig(models=[spec], horizon=2)
    with running(command, workdir / "serve.log", f"{base}/health", env, 300):
        # warm-up on other items, not measured: continuous batching's first full batches are much
        # slower than later ones, which would favour the sequential run that comes after them
        record(config, items(args.real_slots, first=1000), workdir / "warm.sqlite", concurrent=True)
        print(
            f"transformers serve --continuous-batching {folder.name}: 1 member x {args.real_slots} in flight"
        )
        return compare("transformers-serve", config, items(args.real_items), workdir, args.real_slots)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=32, help="N: the server's parallel slots (default 32)")
    parser.add_argument("--latency-s", type=float, default=0.2, help="seconds per request (default 0.2)")
    parser.add_argument("--items", type=int, default=32, help="items of the tree, 6 hops each (default 32)")
    parser.add_argument("--real", action="store_true", help="also run against `transformers serve`")
    parser.add_argument("--real-folder", default=None, help="model folder (default: the converted SmolLM2)")
    parser.add_argument("--real-slots", type=int, default=8, help="requests in flight (default 8)")
    parser.add_argument("--real-items", type=int, default=8)
    parser.add_argument("--real-tokens", type=int, default=32, help="max_new_tokens per hop (default 32)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleet-recording-") as tmp:
        began = time.perf_counter()
        scripted(args, Path(tmp))
        if args.real:
            real(args, Path(tmp))
        print(f"total {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
