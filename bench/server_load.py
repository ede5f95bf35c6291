"""Load test of the router behind a real server, over HTTP: the OpenAI-compatible endpoint
(``python -m hierrouter_graph serve``, the default) or ``langgraph dev`` (``--server langgraph``).

Why: a server runs many routes at once, each hop in a worker thread, which is exactly what
micro-batching coalesces; and a server must survive bad input. This bench starts the server on a
free loopback port with the default offline pool (a config copy with this run's settings), sends
``--runs`` valid requests with at most ``--concurrency`` in flight and reports throughput and
p50/p95 latency, then checks that nothing was lost or duplicated and every response is complete.

OpenAI endpoint: every valid request names its own thread (``thread_id``) and a tagged query;
every fourth is streamed (SSE). A response is complete when it is HTTP 200 with exactly L hops
(stages 0..L-1, pool members only), an answer equal to the trace's replies (``hop.answer_text``;
for a streamed one, the concatenated deltas), usage equal to the hops' summed tokens and a cost
equal to their summed costs; afterwards each thread must hold exactly its one question and that
answer (none lost, none duplicated). ``--malformed`` bad requests (missing/blank/non-string
fields, unknown model, untrained α, invalid JSON, ...) are shuffled in among the valid ones: each
must be a 4xx with an OpenAI-style error naming the expected field, and none may disturb the
valid requests around it.

``langgraph dev``: each run has its own thread whose run list must hold exactly one successful
run with the same checks on its output and checkpoint; malformed inputs come back from
``/runs/wait`` as HTTP 200 ``InvalidQueryError`` run errors (that server validates in the graph).

    python bench/server_load.py [--runs 200] [--malformed 50] [--concurrency 8] [--max-new-tokens 8]
        [--server openai|langgraph] [--max-batch-size 16] [--batch-wait-ms 5]

Exit status 1 when any check fails, so the script doubles as an end-to-end smoke test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from local_server import OFFLINE_ENV, free_port, stop, wait_ready

from hierrouter_graph import RouterConfig, default_config
from hierrouter_graph.hop import answer_text

ROOT = Path(__file__).resolve().parents[1]
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


def server_config(args: argparse.Namespace) -> RouterConfig:
    """The pool (``--config``, else the default) with this run's generation and batching settings."""
    config = RouterConfig.from_file(args.config) if args.config else default_config()
    models = []
    for spec in config.models:
        update: dict[str, Any] = {"max_batch_size": args.max_batch_size, "batch_wait_ms": args.batch_wait_ms}
        if spec.kind == "generate" and args.max_new_tokens is not None:
            update["max_new_tokens"] = args.max_new_tokens
        models.append(spec.model_copy(update=update))
    return RouterConfig.model_validate({**config.model_dump(), "models": models})


def start_server(
    kind: str, config_file: Path, port: int, log: Path, jobs: int, workdir: Path
) -> subprocess.Popen[bytes]:
    """``python -m hierrouter_graph serve`` (kind "openai") or ``langgraph dev`` (kind "langgraph")."""
    env = {**os.environ, **OFFLINE_ENV, "HIERROUTER_CONFIG": str(config_file)}
    if kind == "openai":
        command = [sys.executable, "-m", "hierrouter_graph", "serve", "--config", str(config_file)]
        command += ["--host", "127.0.0.1", "--port", str(port), "--max-concurrency", str(jobs)]
        command += ["--threads-db", str(workdir / "threads.sqlite"), "--log-level", "warning"]
    else:
        cli = shutil.which("langgraph", path=str(Path(sys.executable).parent)) or shutil.which("langgraph")
        if cli is None:
            raise SystemExit("langgraph CLI not found: pip install 'langgraph-cli[inmem]'")
        # --n-jobs-per-worker: runs executed at once. `langgraph dev` runs ONE at a time without it
        # (its help says 10; langgraph-api 0.16.7 passes 1), which would leave nothing to micro-batch.
        command = [cli, "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1", "--port", str(port)]
        command += ["--n-jobs-per-worker", str(jobs)]
    with log.open("wb") as sink:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)


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
    replies = [str(hop.get("reply", "")) for hop in trace]
    if not isinstance(body.get("answer"), str) or not trace or body["answer"] != answer_text(replies):
        problems.append("answer missing or not the trace's last reply (hop.answer_text)")
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


# ------------------------------------------------------------------ the OpenAI-compatible endpoint
USER = {"role": "user", "content": "What is 2 + 2?"}
MALFORMED_OPENAI: list[tuple[str, Any, str | None]] = [
    ("invalid JSON", b'{"model": "hierrouter", "messages": [', None),
    ("missing model", {"messages": [USER]}, "model"),
    ("unknown model", {"model": "gpt-4o", "messages": [USER]}, "model"),
    ("untrained alpha", {"model": "hierrouter:alpha=0.5", "messages": [USER]}, "model"),
    ("alpha not a number", {"model": "hierrouter", "alpha": "low", "messages": [USER]}, "alpha"),
    ("missing messages", {"model": "hierrouter"}, "messages"),
    ("empty messages", {"model": "hierrouter", "messages": []}, "messages"),
    (
        "null content",
        {"model": "hierrouter", "messages": [{"role": "user", "content": None}]},
        "messages[0].content",
    ),
    (
        "blank query",
        {"model": "hierrouter", "messages": [{"role": "user", "content": " \n"}]},
        "messages[0].content",
    ),
    (
        "integer content",
        {"model": "hierrouter", "messages": [{"role": "user", "content": 7}]},
        "messages[0].content",
    ),
    ("bad role", {"model": "hierrouter", "messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
    ("stream not a boolean", {"model": "hierrouter", "messages": [USER], "stream": "yes"}, "stream"),
    ("n = 3", {"model": "hierrouter", "messages": [USER], "n": 3}, "n"),
]


@dataclass
class Reply:
    index: int
    status: int
    seconds: float
    body: Any
    streamed: str | None = None


async def post_completion(client: httpx.AsyncClient, index: int, payload: Any) -> Reply:
    """One request; a streamed one is read to the end and its deltas joined."""
    raw = payload if isinstance(payload, bytes) else None
    started = time.perf_counter()
    headers = {"content-type": "application/json"}
    if raw is not None or not payload.get("stream"):
        content = raw if raw is not None else json.dumps(payload).encode()
        response = await client.post("/v1/chat/completions", content=content, headers=headers)
        return Reply(index, response.status_code, time.perf_counter() - started, response.json())
    deltas, final = [], None
    async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
        if response.status_code != 200:
            await response.aread()
            return Reply(index, response.status_code, time.perf_counter() - started, response.json())
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            if "error" in chunk:
                return Reply(index, 500, time.perf_counter() - started, chunk)
            for choice in chunk.get("choices", []):
                deltas.append(choice["delta"].get("content") or "")
            if chunk.get("hierrouter"):
                final = chunk
    return Reply(index, 200, time.perf_counter() - started, final, streamed="".join(deltas))


def completion_problems(reply: Reply, query: str, thread: str, horizon: int, pool: list[str]) -> list[str]:
    """Everything wrong with one valid request's response (empty: complete and its own)."""
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict) or "hierrouter" not in body:
        return [f"HTTP {reply.status}: {str(body)[:200]}"]
    ext = body["hierrouter"]
    trace = ext.get("trace") or []
    problems = []
    if [hop.get("stage") for hop in trace] != list(range(horizon)) or ext.get("route") != [
        hop.get("model") for hop in trace
    ]:
        problems.append(f"route {ext.get('route')} is not {horizon} hops")
    if any(hop.get("model") not in pool for hop in trace):
        problems.append(f"unknown model in route {ext.get('route')}")
    answer = reply.streamed if reply.streamed is not None else body["choices"][0]["message"]["content"]
    if answer != answer_text([str(hop.get("reply", "")) for hop in trace]):
        problems.append("answer is not the trace's last reply (hop.answer_text)")
    if ext.get("thread_id") != thread:
        problems.append(f"answered on thread {ext.get('thread_id')}, not {thread}")
    if not math.isclose(ext.get("cost", -1.0), sum(hop.get("cost", 0.0) for hop in trace), rel_tol=1e-9):
        problems.append("cost is not the sum of the hop costs")
    if reply.streamed is None:
        usage = body.get("usage") or {}
        if usage.get("prompt_tokens") != sum(h["tokens_in"] for h in trace) or usage.get(
            "completion_tokens"
        ) != sum(h["tokens_out"] for h in trace):
            problems.append(f"usage {usage} is not the hops' summed tokens")
    return problems


async def drive_openai(args: argparse.Namespace, base: str, horizon: int, pool: list[str]) -> bool:
    rng = random.Random(0)
    valid: list[dict[str, Any]] = [
        {
            "model": "hierrouter",
            "thread_id": f"load-{i}",
            "stream": i % 4 == 3,
            "messages": [{"role": "user", "content": f"[#{i}] {SAMPLE_QUERIES[i % len(SAMPLE_QUERIES)]}"}],
        }
        for i in range(args.runs)
    ]
    bad = [MALFORMED_OPENAI[i % len(MALFORMED_OPENAI)] for i in range(args.malformed)]
    order: list[tuple[str, int]] = [("valid", i) for i in range(len(valid))] + [
        ("bad", i) for i in range(len(bad))
    ]
    rng.shuffle(order)
    limits = httpx.Limits(max_connections=args.concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=args.timeout, limits=limits) as client:
        warm = await post_completion(client, -1, {"model": "hierrouter", "messages": [USER]})
        if warm.status != 200:
            print(f"warm-up request failed: HTTP {warm.status} {warm.body}")
            return False
        gate = asyncio.Semaphore(args.concurrency)

        async def bounded(position: int, kind: str, index: int) -> Reply:
            async with gate:
                payload = valid[index] if kind == "valid" else bad[index][1]
                return await post_completion(client, position, payload)

        started = time.perf_counter()
        replies = await asyncio.gather(*(bounded(n, kind, i) for n, (kind, i) in enumerate(order)))
        wall = time.perf_counter() - started

        by_kind: dict[str, list[tuple[int, Reply]]] = {"valid": [], "bad": []}
        for (kind, index), reply in zip(order, replies, strict=True):
            by_kind[kind].append((index, reply))
        latencies = [reply.seconds for _, reply in by_kind["valid"]]
        print(
            f"{args.runs} valid + {args.malformed} malformed requests, concurrency {args.concurrency}: "
            f"{wall:.1f} s wall"
        )
        print(f"throughput: {args.runs / wall:.2f} completions/s  ({args.runs * horizon / wall:.2f} hops/s)")
        print(
            f"latency of valid requests: p50 {percentile(latencies, 0.5):.2f} s, "
            f"p95 {percentile(latencies, 0.95):.2f} s, max {max(latencies):.2f} s"
        )
        failed: dict[int, list[str]] = {}
        for index, reply in by_kind["valid"]:
            payload = valid[index]
            problems = completion_problems(
                reply, payload["messages"][0]["content"], payload["thread_id"], horizon, pool
            )
            if not problems:  # the thread holds exactly this question and this answer
                stored = (await client.get(f"/v1/threads/{payload['thread_id']}")).json().get("messages")
                answer = (
                    reply.streamed
                    if reply.streamed is not None
                    else reply.body["choices"][0]["message"]["content"]
                )
                expected = [payload["messages"][0], {"role": "assistant", "content": answer}]
                if stored != expected:
                    problems.append(f"thread holds {len(stored or [])} messages, not its question and answer")
            if problems:
                failed[index] = problems
        streamed = sum(1 for i, _ in by_kind["valid"] if valid[i]["stream"])
        print(
            f"complete responses: {args.runs - len(failed)}/{args.runs} ({streamed} streamed; exactly "
            f"{horizon} hops, answer = trace, usage and cost = sums, own thread holding exactly its "
            "question and answer)"
        )
        for index, problems in list(failed.items())[:10]:
            print(f"  request {index}: {'; '.join(problems)}")
        clean = 0
        for index, reply in by_kind["bad"]:
            label, _, param = bad[index]
            error = reply.body.get("error", {}) if isinstance(reply.body, dict) else {}
            if 400 <= reply.status < 500 and error.get("param") == param and error.get("message"):
                clean += 1
            else:
                print(
                    f"  malformed {label!r}: HTTP {reply.status} {str(reply.body)[:200]}  <-- NOT a clean 4xx"
                )
        print(f"malformed requests answered 4xx naming the field: {clean}/{len(bad)}")
        for label, _, param in MALFORMED_OPENAI:
            example = next((r for i, r in by_kind["bad"] if bad[i][0] == label), None)
            if example is not None:
                print(
                    f"  {label:22s} → HTTP {example.status} param={param}: "
                    f"{example.body['error']['message'][:70]}"
                )
    return not failed and clean == len(bad)


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--server", choices=["openai", "langgraph"], default="openai")
    parser.add_argument("--config", default=None, help="RouterConfig file (default: offline pool)")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--malformed", type=int, default=50, help="bad requests mixed in (openai server)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the pool's (128)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument(
        "--jobs", type=int, default=None, help="routes run at once by the server (default: concurrency)"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per HTTP request")
    args = parser.parse_args()

    config = server_config(args)
    workdir = Path(tempfile.mkdtemp(prefix="server-load-"))
    config_file = workdir / "router.yaml"
    config.to_file(config_file)
    port, log = free_port(), workdir / "server.log"
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    process = start_server(args.server, config_file, port, log, args.jobs or args.concurrency, workdir)
    try:
        ready_url = f"{base}/health" if args.server == "openai" else f"{base}/ok"
        wait_ready(process, log, ready_url, 900, error=SystemExit)
        if args.server == "langgraph" and not re.search(rf"127\.0\.0\.1:{port}", log.read_text()):
            raise SystemExit(f"the server did not take port {port} (it picks another silently); see {log}")
        name = "python -m hierrouter_graph serve" if args.server == "openai" else "langgraph dev"
        print(f"{name} on 127.0.0.1:{port} ready in {time.perf_counter() - started:.1f} s (log: {log})")
        print(
            f"pool {config.model_names}, L={config.horizon}, "
            f"max_new_tokens={args.max_new_tokens or 'default'}, "
            f"max_batch_size={args.max_batch_size}, batch_wait_ms={args.batch_wait_ms}"
        )
        drive_fn = drive_openai if args.server == "openai" else drive
        ok = asyncio.run(drive_fn(args, base, config.horizon, config.model_names))
    finally:
        stop(process, timeout=30)
    print("ALL CHECKS PASSED" if ok else "SOME CHECKS FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
