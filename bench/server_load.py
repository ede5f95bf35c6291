"""Load test of the graph behind a real ``langgraph dev`` server, over HTTP.

Why: a server runs many graph runs at once, each hop in a worker thread, which is exactly what
micro-batching coalesces; and a server must survive bad input. This bench starts ``langgraph dev``
on a free loopback port with the default offline pool (``HIERROUTER_CONFIG`` points at a copy with
this run's settings), sends ``--runs`` runs with at most ``--concurrency`` in flight, and reports
throughput and p50/p95 latency. It then checks that nothing was lost or duplicated: every run has
its own thread, whose run list holds exactly one successful run, whose output carries exactly L
hops (stages 0..L-1), a final answer equal to the trace's replies (``hop.answer_text``) and the
query that was sent (each query is tagged with its run number), and whose checkpointed state
holds the same trace. Last, malformed inputs (missing, empty, blank, non-string query) must come
back as ``InvalidQueryError`` from the graph's input validation while valid runs sent alongside
them still succeed.

    PYTHONPATH=. python bench/server_load.py [--runs 200] [--concurrency 8] [--max-new-tokens 8]
        [--max-batch-size 16] [--batch-wait-ms 5]

Exit status 1 when any check fails, so the script doubles as an end-to-end smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from hierrouter_graph import RouterConfig, default_config
from hierrouter_graph.hop import answer_text, extend_context

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
ASSISTANT = "hierrouter"
SAMPLE_QUERIES = [
    "What is 12 * 7? Put the final answer in \\boxed{}.",
    "Write a Python function that returns the largest of three numbers.",
    "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth",
    "A train travels 60 km in 1.5 hours. What is its average speed in km/h?",
    "Explain why the sky is blue in two sentences.",
    "What is the derivative of x^3 + 2x?",
    "Which gas do plants absorb from the air?\nA. Oxygen\nB. Nitrogen\nC. Carbon dioxide\nD. Helium",
    "def is_even(n):\n    # complete this function",
]
MALFORMED: list[tuple[str, dict[str, Any]]] = [
    ("missing query", {}),
    ("null query", {"query": None}),
    ("empty query", {"query": ""}),
    ("blank query", {"query": "   \n"}),
    ("integer query", {"query": 42}),
    ("list query", {"query": ["What is 2 + 2?"]}),
]


@dataclass
class RunOutcome:
    index: int
    query: str
    thread_id: str
    status: int
    seconds: float
    body: Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_config(args: argparse.Namespace) -> RouterConfig:
    """The default pool with this run's generation length and micro-batching settings."""
    config = default_config()
    models = []
    for spec in config.models:
        update: dict[str, Any] = {"max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms}
        if spec.kind == "generate" and args.max_new_tokens is not None:
            update["max_new_tokens"] = args.max_new_tokens
        models.append(spec.model_copy(update=update))
    return RouterConfig.model_validate({**config.model_dump(), "models": models})


def start_server(config_file: Path, port: int, log: Path, jobs: int) -> subprocess.Popen[bytes]:
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
    if cli is None:
        raise SystemExit("langgraph CLI not found: pip install 'langgraph-cli[inmem]'")
    env = {
        **os.environ,
        **OFFLINE_ENV,
        "HIERROUTER_CONFIG": str(config_file),
    }
    # --n-jobs-per-worker: runs executed at once. `langgraph dev` runs ONE at a time without it
    # (its help says 10; langgraph-api 0.16.7 passes 1), which would leave nothing to micro-batch.
    command = [cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--n-jobs-per-worker", str(jobs)]
    with log.open("wb") as sink:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], log: Path, port: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"langgraph dev exited early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ok", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        raise SystemExit(f"langgraph dev not ready after {timeout}s:\n{log.read_text()[-4000:]}")
    if not re.search(rf"127\.0\.0\.1:{port}", log.read_text()):
        raise SystemExit(f"the server did not take port {port} (it picks another silently); see {log}")


async def one_run(client: httpx.AsyncClient, index: int, payload: dict[str, Any]) -> RunOutcome:
    thread = (await client.post("/threads", json={})).json()["thread_id"]
    started = time.perf_counter()
    response = await client.post(
        f"/threads/{thread}/runs/wait", json={"assistant_id": ASSISTANT, "input": payload}
    )
    seconds = time.perf_counter() - started
    body = (
        response.json() if response.headers.get("content-type", "").startswith("application/json") else None
    )
    return RunOutcome(index, str(payload.get("query")), thread, response.status_code, seconds, body)


async def send_all(
    client: httpx.AsyncClient, payloads: list[dict[str, Any]], concurrency: int
) -> list[RunOutcome]:
    gate = asyncio.Semaphore(concurrency)

    async def bounded(index: int, payload: dict[str, Any]) -> RunOutcome:
        async with gate:
            return await one_run(client, index, payload)

    return list(await asyncio.gather(*(bounded(i, p) for i, p in enumerate(payloads))))


def trace_problems(outcome: RunOutcome, horizon: int, pool: list[str]) -> list[str]:
    """Everything wrong with one run's answer (empty list: a complete, consistent trace)."""
    body = outcome.body
    if outcome.status != 200 or not isinstance(body, dict):
        return [f"HTTP {outcome.status}: {str(body)[:200]}"]
    if "__error__" in body:
        return [f"run failed: {body['__error__']}"]
    trace = body.get("trace") or []
    problems = []
    if [hop.get("stage") for hop in trace] != list(range(horizon)):
        problems.append(f"stages {[hop.get('stage') for hop in trace]} != 0..{horizon - 1}")
    if any(hop.get("model") not in pool for hop in trace):
        problems.append(f"unknown model in route {[hop.get('model') for hop in trace]}")
    context = str(body.get("query", ""))
    for hop in trace:
        context = extend_context(context, str(hop.get("reply", "")))
    if (
        not isinstance(body.get("answer"), str)
        or not trace
        or body["answer"] != answer_text(outcome.query, context)
    ):
        problems.append("answer missing or not the trace's replies (hop.answer_text)")
    if body.get("query") != outcome.query:
        problems.append(f"answered {str(body.get('query'))[:40]!r}, not its own query")
    if not math.isclose(body.get("cost", -1.0), sum(hop.get("cost", 0.0) for hop in trace), rel_tol=1e-9):
        problems.append("cost is not the sum of the hop costs")
    return problems


async def server_side_problems(client: httpx.AsyncClient, outcome: RunOutcome) -> list[str]:
    """The thread holds exactly one successful run and the same trace in its checkpoint."""
    runs = (await client.get(f"/threads/{outcome.thread_id}/runs")).json()
    statuses = [run.get("status") for run in runs]
    problems = [] if statuses == ["success"] else [f"thread runs: {statuses}"]
    state = (await client.get(f"/threads/{outcome.thread_id}/state")).json()
    if state.get("values", {}).get("trace") != outcome.body.get("trace"):
        problems.append("checkpointed trace differs from the returned one")
    return problems


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


async def drive(args: argparse.Namespace, base: str, horizon: int, pool: list[str]) -> bool:
    ok = True
    limits = httpx.Limits(max_connections=args.concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:
        warm = await one_run(client, -1, {"query": "What is 2 + 2?"})
        if trace_problems(warm, horizon, pool):
            print(f"warm-up run failed: {trace_problems(warm, horizon, pool)}")
            return False

        payloads = [{"query": f"[#{i}] {SAMPLE_QUERIES[i % len(SAMPLE_QUERIES)]}"} for i in range(args.runs)]
        started = time.perf_counter()
        outcomes = await send_all(client, payloads, args.concurrency)
        wall = time.perf_counter() - started

        latencies = [o.seconds for o in outcomes]
        print(f"{args.runs} runs, concurrency {args.concurrency}: {wall:.1f} s wall")
        print(f"throughput: {args.runs / wall:.2f} runs/s  ({args.runs * horizon / wall:.2f} hops/s)")
        print(
            f"latency: p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s, "
            f"max {max(latencies):.2f} s"
        )

        bad = {o.index: trace_problems(o, horizon, pool) for o in outcomes}
        for outcome in outcomes:
            if not bad[outcome.index]:
                bad[outcome.index] = await server_side_problems(client, outcome)
        failed = {i: p for i, p in bad.items() if p}
        answered = [o.body.get("query") for o in outcomes if isinstance(o.body, dict)]
        duplicates = len(answered) - len(set(answered))
        empty = sum(
            1 for o in outcomes if isinstance(o.body, dict) and not str(o.body.get("answer", "")).strip()
        )
        print(
            f"complete traces: {args.runs - len(failed)}/{args.runs} (exactly {horizon} hops, answer, "
            f"own query, one successful run per thread, checkpoint matches); duplicates: {duplicates}; "
            f"blank answers: {empty}"
        )
        for index, problems in list(failed.items())[:10]:
            print(f"  run {index}: {'; '.join(problems)}")
        ok &= not failed and duplicates == 0

        print("malformed inputs (sent together with 4 valid runs):")
        mixed = [payload for _, payload in MALFORMED] + [
            {"query": f"[valid {i}] What is {i} + {i}?"} for i in range(4)
        ]
        results = await send_all(client, mixed, args.concurrency)
        for (label, _), outcome in zip(MALFORMED, results, strict=False):
            error = outcome.body.get("__error__", {}) if isinstance(outcome.body, dict) else {}
            clean = outcome.status == 200 and error.get("error") == "InvalidQueryError"
            ok &= clean
            print(
                f"  {label:14s} → HTTP {outcome.status} {error.get('error')}: {error.get('message')}"
                f"{'' if clean else '   <-- NOT a clean validation error'}"
            )
        valid = results[len(MALFORMED) :]
        served = sum(not trace_problems(o, horizon, pool) for o in valid)
        after = await one_run(client, -2, {"query": "Still there? What is 3 + 4?"})
        served += not trace_problems(after, horizon, pool)
        print(f"valid runs around the malformed ones: {served}/{len(valid) + 1} complete")
        ok &= served == len(valid) + 1
    return ok


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the pool's (128)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--jobs", type=int, default=None, help="--n-jobs-per-worker (default: concurrency)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per HTTP request")
    args = parser.parse_args()

    config = server_config(args)
    workdir = Path(tempfile.mkdtemp(prefix="server-load-"))
    config_file = workdir / "router.yaml"
    config.to_file(config_file)
    port, log = free_port(), workdir / "server.log"
    started = time.perf_counter()
    process = start_server(config_file, port, log, args.jobs or args.concurrency)
    try:
        wait_ready(process, log, port)
        print(
            f"langgraph dev on 127.0.0.1:{port} ready in {time.perf_counter() - started:.1f} s (log: {log})"
        )
        print(
            f"pool {config.model_names}, L={config.horizon}, "
            f"max_new_tokens={args.max_new_tokens or 'default'}, "
            f"max_batch_size={args.max_batch_size}, batch_wait_ms={args.batch_wait_ms}"
        )
        ok = asyncio.run(drive(args, f"http://127.0.0.1:{port}", config.horizon, config.model_names))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
