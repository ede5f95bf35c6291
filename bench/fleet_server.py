"""A scripted OpenAI-compatible server: fixed latency, N parallel slots, deterministic replies.

Why: recording through endpoint members must be measured and tested against a real HTTP server
whose speed is known exactly — a real fleet's latency varies, a mock transport has none. Every
``POST /v1/chat/completions`` waits for one of ``slots`` slots (an asyncio semaphore, like a
vLLM/TGI server's batch slots), holds it for ``latency_s``, and answers a reply derived from the
request's model and messages (sha256), with a ``usage`` block (whitespace-split word counts).

Tests script failures by setting fields of its ``FleetState`` (statuses to answer next, a reply
count after which it fails, a prompt that always fails) and read what it saw there (requests,
replies, the most requests in flight, how often each prompt was answered); ``GET /stats`` shows
the same over HTTP. ``serve_in_thread`` runs it on a free loopback port in the calling process;
``python -m bench.fleet_server --port N`` in its own.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bench.local_server import free_port
from hierrouter_graph.model_spec import EndpointSpec, ModelSpec

__all__ = ["FleetState", "endpoint_spec", "make_app", "reply_for", "serve_in_thread"]


def reply_for(model: str, messages: list[dict[str, Any]]) -> str:
    """The server's deterministic answer: a function of the served model and the exact messages."""
    text = "\x1e".join(f"{m.get('role')}\x1f{m.get('content')}" for m in messages)
    digest = hashlib.sha256(f"{model}\x1d{text}".encode()).hexdigest()
    return f"{model} answers {digest[:12]} (reply {int(digest[12:16], 16) % 97})"


def endpoint_spec(name: str, url: str, **endpoint: Any) -> ModelSpec:
    """An endpoint member served here as ``org/<name>`` (its own replies), 2 quick retries."""
    block = EndpointSpec(
        **{"url": url, "model": f"org/{name}", "max_retries": 2, "backoff_s": 0.01, **endpoint}
    )
    return ModelSpec(name=name, source=f"org/{name}-1B", base_rate=0.002, max_new_tokens=16, endpoint=block)


@dataclass
class FleetState:
    """What the server does (set by tests) and what it saw (read by tests, ``GET /stats``)."""

    latency_s: float
    slots: int
    statuses: list[int] = field(default_factory=list)
    """Answer the next requests with these statuses, in order (then normally)."""
    fail_after: int | None = None
    """After this many 200 replies, answer HTTP 400 (a fatal error for the client)."""
    fail_containing: str | None = None
    """Answer HTTP 503 to every request whose last message contains this text."""
    requests: int = 0
    replies: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    answered: Counter[str] = field(default_factory=Counter)
    """``model`` + "\x1d" + last message text → how many 200 replies it got."""

    def reset(self) -> None:
        """Normal service and fresh counts (``in_flight`` stays: requests may still be running)."""
        self.statuses, self.fail_after, self.fail_containing = [], None, None
        self.requests = self.replies = self.max_in_flight = 0
        self.answered = Counter()


def make_app(latency_s: float, slots: int) -> FastAPI:
    """The app; its ``FleetState`` is ``app.state.fleet``."""
    if slots < 1 or latency_s < 0:
        raise ValueError(f"slots must be >= 1 and latency_s >= 0, got {slots}, {latency_s}")
    app = FastAPI()
    state = FleetState(latency_s=latency_s, slots=slots)
    app.state.fleet = state
    gate: dict[str, asyncio.Semaphore] = {}  # made inside the server's event loop

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        return {
            "requests": state.requests,
            "replies": state.replies,
            "max_in_flight": state.max_in_flight,
            "in_flight": state.in_flight,
            "answered": dict(state.answered),
        }

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        messages = body["messages"]
        last = str(messages[-1]["content"])
        state.requests += 1
        semaphore = gate.setdefault("slots", asyncio.Semaphore(state.slots))
        async with semaphore:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            try:
                await asyncio.sleep(state.latency_s)
            finally:
                state.in_flight -= 1
        if state.statuses:
            status = state.statuses.pop(0)
            return JSONResponse({"error": {"message": f"scripted HTTP {status}"}}, status_code=status)
        if state.fail_containing is not None and state.fail_containing in last:
            return JSONResponse({"error": {"message": "scripted: this prompt always fails"}}, status_code=503)
        if state.fail_after is not None and state.replies >= state.fail_after:
            return JSONResponse({"error": {"message": "scripted: server stopped answering"}}, status_code=400)
        model = str(body.get("model") or "served")
        reply = reply_for(model, messages)
        state.replies += 1
        state.answered[f"{model}\x1d{last}"] += 1
        prompt_tokens = sum(len(str(m["content"]).split()) for m in messages)
        return JSONResponse(
            {
                "id": f"chatcmpl-{state.replies}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(reply.split()),
                    "total_tokens": prompt_tokens + len(reply.split()),
                },
            }
        )

    return app


@contextmanager
def serve_in_thread(
    latency_s: float, slots: int, host: str = "127.0.0.1"
) -> Iterator[tuple[str, FleetState]]:
    """The server on a free port of ``host`` in a background thread; yields (base URL, its state)."""
    app = make_app(latency_s, slots)
    port = free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="fleet-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the scripted server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}", app.state.fleet
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-s", type=float, default=0.2)
    parser.add_argument("--slots", type=int, default=32)
    ns = parser.parse_args()
    uvicorn.run(make_app(ns.latency_s, ns.slots), host=ns.host, port=ns.port, log_level="warning")


if __name__ == "__main__":
    main()
