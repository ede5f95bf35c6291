"""The OpenAI-compatible HTTP app: ``/v1/chat/completions``, ``/v1/models``, ``/v1/threads/{id}``.

How a request runs: it is validated (``protocol.parse_request``), then the compiled graph's
synchronous ``stream`` runs in a worker thread of a bounded pool, so at most ``max_concurrency``
routes are in flight and their hops meet in the members' micro-batchers. Events flow back to the
event loop through a queue; a streaming response turns hop tokens into ``chat.completion.chunk``
server-sent events as the members generate them.

What streams: the answer is the route's last reply that did not decline (``hop.answer_text``).
The hop at the last stage (L − 1) is certainly final, so a local member's reply there (micro-
batched or plain pipeline) is streamed token by token as it is generated; members that produce
their reply in one piece (the cloze specialist, endpoint members) send it whole when their hop
ends, and a refusal is never sent. Earlier hops are not streamed — they may be checked and
replaced — so when the route ends early (STOP) or its last hop declined, the answer is sent whole
at the end. The concatenated deltas equal the non-streaming ``content``.

Threads: with a ``thread_id`` the run uses the checkpointed graph (SQLite by default, see
``cli.py``) with ``durability="sync"``, so every step is on disk before the next starts; runs on
one thread are serialized. Without one, the request is stateless and nothing is stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.graph.state import CompiledStateGraph
from starlette.exceptions import HTTPException as StarletteHTTPException

from hierrouter_graph.graph import HierRouterGraph, InvalidQueryError
from hierrouter_graph.hop import DECLINED_REPLIES, declined
from hierrouter_graph.policy.alpha import same_alpha
from hierrouter_graph.serve.feedback import FeedbackError, FeedbackStore
from hierrouter_graph.serve.protocol import (
    MODEL_ID,
    APIError,
    ParsedRequest,
    completion_body,
    new_completion_id,
    parse_request,
    progress_extension,
    route_extension,
    stream_chunk,
    usage_of,
)

__all__ = ["RouterService", "create_app"]

log = logging.getLogger("hierrouter_graph.serve")
Sink = Callable[[str, Any], None]


def _role(message: BaseMessage) -> str:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, SystemMessage):
        return "system"
    return "assistant" if isinstance(message, AIMessage) else message.type


def _key(message: BaseMessage) -> tuple[str, str]:
    return _role(message), message.text


@dataclass
class _AnswerStream:
    """Turns member-node messages into answer deltas: only the last stage's hop streams live.

    A route's hops run one after another, so the hops finished so far give the stage of the hop
    now running; text streamed since the last hop ended belongs to it.
    """

    pool: frozenset[str]
    sink: Sink
    final_stage: int
    sent: str = ""
    hops_done: int = 0
    hop_text: str = ""
    members: tuple[str, ...] = ()
    """The members that answered the hops finished so far (then the one answering now)."""
    cost: float = 0.0
    """C after the hops finished so far."""
    current: str | None = None

    def _send(self, text: str) -> None:
        if text:
            self.hop_text += text
            self.sent += text
            members = (*self.members, self.current) if self.current else self.members
            self.sink("delta", (text, list(members), self.cost))

    def on_message(self, message: Any, meta: dict[str, Any]) -> None:
        text = message.text if hasattr(message, "text") else str(message.content)
        if meta.get("langgraph_node") not in self.pool or not text or self.hops_done != self.final_stage:
            return
        if not self.hop_text and text in DECLINED_REPLIES:
            return  # a whole-message refusal: not the answer
        self.current = str(meta["langgraph_node"])
        self._send(text)

    def on_hop_end(self, reply: str, model: str, cumulative_cost: float) -> None:
        self.members, self.cost, self.current = (*self.members, model), cumulative_cost, None
        streamed, self.hop_text = self.hop_text, ""
        final, self.hops_done = self.hops_done == self.final_stage, self.hops_done + 1
        if not final or declined(reply):
            return
        if reply.startswith(streamed):
            self._send(reply[len(streamed) :])
            self.hop_text = ""
        else:
            log.warning("streamed text of a hop differs from its reply; the trace is authoritative")

    def finish(self, answer: str) -> None:
        if answer.startswith(self.sent):
            self._send(answer[len(self.sent) :])  # a route that STOPped early, or whose last hop declined
        else:
            log.warning("streamed text differs from the answer; the 'content' of a non-streamed reply is it")


class RouterService:
    """Runs routes for the app: compiled graphs, a bounded worker pool, per-thread locks."""

    def __init__(
        self,
        router: HierRouterGraph,
        *,
        checkpointer: Any = None,
        max_concurrency: int = 16,
        trained_alpha: float | None = None,
        feedback: FeedbackStore | None = None,
    ) -> None:
        self.router = router
        self.feedback = feedback
        """The route log (``feedback.py``): every served route is written to it at completion
        time, keyed by its completion id, for ``POST /v1/feedback``; None: nothing is logged."""
        self.stateless: CompiledStateGraph[Any, Any, Any, Any] = router.builder.compile(name=MODEL_ID)
        self.threaded = (
            router.builder.compile(checkpointer=checkpointer, name=MODEL_ID) if checkpointer else None
        )
        self.pool = frozenset(router.config.model_names)
        if trained_alpha is not None and not same_alpha(trained_alpha, router.alpha):
            raise ValueError(
                f"trained_alpha: {trained_alpha} differs from the alpha={router.alpha} the graph serves "
                "(alpha.serving_alpha); leave it out"
            )
        self.trained_alpha = router.alpha
        """The α a request gets when it names none: the graph's (``alpha.serving_alpha``), so the
        server and the graph report the same α."""
        self.alpha_range: tuple[float, float] | None = router.policy.alpha_range
        """(lo, hi) of an α-conditioned policy: any α in it may be requested; None: only trained_alpha."""
        self.max_concurrency = max_concurrency
        self.executor = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="route")
        self.created = int(time.time())
        self._thread_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def _thread_lock(self, thread_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._thread_locks.setdefault(thread_id, threading.Lock())

    def thread_messages(self, thread_id: str) -> list[BaseMessage] | None:
        if self.threaded is None:
            return None
        state = self.threaded.get_state({"configurable": {"thread_id": thread_id}})
        if not state.values:
            return None
        return list(state.values.get("messages") or [])

    def run(self, request: ParsedRequest, sink: Sink, completion_id: str | None = None) -> None:
        """Run one route (worker thread); reports ``delta``s, then ``done`` or ``error``. With a
        route log, the route is written (one transaction) before ``done`` is reported."""
        try:
            # an α-conditioned graph routes for the request's α; any other was trained for one α,
            # which parse_request has already checked the request asks for
            routing: dict[str, Any] = {"alpha": request.alpha} if self.alpha_range is not None else {}
            if request.thread_id is None:
                config = {"configurable": routing}
                output = self._stream(self.stateless, {"messages": request.messages}, config, request, sink)
            else:
                if self.threaded is None:
                    raise APIError(
                        400, "thread_id: this server keeps no threads (--no-threads)", param="thread_id"
                    )
                with self._thread_lock(request.thread_id):
                    stored = [_key(m) for m in self.thread_messages(request.thread_id) or []]
                    sent = [_key(m) for m in request.messages]
                    # the history a client re-sends is already in the thread: add only the new turn(s)
                    fresh = (
                        request.messages[len(stored) :] if sent[: len(stored)] == stored else request.messages
                    )
                    config = {"configurable": {**routing, "thread_id": request.thread_id}}
                    output = self._stream(self.threaded, {"messages": fresh}, config, request, sink)
            if self.feedback is not None and completion_id is not None:
                self.feedback.log_route(completion_id, output, request.alpha, thread_id=request.thread_id)
            sink("done", output)
        except InvalidQueryError as error:
            sink("error", APIError(400, str(error), param="messages"))
        except APIError as error:
            sink("error", error)
        except Exception as error:  # a failed route must answer its own request, not kill the server
            log.exception("route failed")
            sink(
                "error", APIError(500, f"route failed: {type(error).__name__}: {error}", kind="server_error")
            )

    def _stream(
        self, graph: Any, graph_input: dict[str, Any], config: Any, request: ParsedRequest, sink: Sink
    ) -> dict[str, Any]:
        answer = _AnswerStream(self.pool, sink, self.router.config.horizon - 1) if request.stream else None
        modes = ["messages", "updates", "values"] if answer else ["values"]
        threaded = "thread_id" in config["configurable"]
        extra = {"durability": "sync"} if threaded else {}
        output: dict[str, Any] = {}
        for mode, payload in graph.stream(graph_input, config, stream_mode=modes, **extra):
            if mode == "values":
                output = payload
            elif answer is None:
                continue
            elif mode == "messages":
                answer.on_message(*payload)
            else:
                for node, update in payload.items():
                    if node in self.pool and isinstance(update, dict) and update.get("trace"):
                        hop = update["trace"][-1]
                        answer.on_hop_end(hop["reply"], hop["model"], float(hop["cumulative_cost"]))
        if answer is not None:
            answer.finish(str(output.get("answer", "")))
        return dict(output)


def _error(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


def create_app(service: RouterService) -> FastAPI:
    """The FastAPI app over ``service`` (``cli.py`` builds both and runs uvicorn)."""
    app = FastAPI(title="hierrouter-graph", description="OpenAI-compatible HierRouter endpoint")
    app.state.service = service

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return _error(error)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(APIError(error.status_code, str(error.detail)))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        info = {"pool": sorted(service.pool), "horizon": service.router.config.horizon}
        ids = [MODEL_ID, f"{MODEL_ID}:alpha={service.trained_alpha}"]
        data = [
            {
                "id": i,
                "object": "model",
                "created": service.created,
                "owned_by": "hierrouter-graph",
                MODEL_ID: info,
            }
            for i in ids
        ]
        return {"object": "list", "data": data}

    @app.get("/v1/threads/{thread_id}")
    async def thread(thread_id: str) -> dict[str, Any]:
        # the loop's default pool, not the routes' one: a lookup must not wait behind long routes
        messages = await asyncio.get_running_loop().run_in_executor(None, service.thread_messages, thread_id)
        if messages is None:
            raise APIError(
                404, f"No thread {thread_id!r} on this server.", param="thread_id", code="thread_not_found"
            )
        turns = [{"role": _role(m), "content": m.text} for m in messages]
        return {"id": thread_id, "object": "thread", "messages": turns}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(http: Request) -> JSONResponse | StreamingResponse:
        try:
            body = json.loads(await http.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, f"The request body is not valid JSON: {error}") from None
        request = parse_request(body, service.trained_alpha, service.alpha_range)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def sink(kind: str, payload: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, payload))

        completion_id, created = new_completion_id(), int(time.time())
        service.executor.submit(service.run, request, sink, completion_id)
        if not request.stream:
            while True:
                kind, payload = await events.get()
                if kind == "error":
                    return _error(payload)
                if kind == "done":
                    body = completion_body(completion_id, request, payload, created)
                    return JSONResponse(body, headers=_route_headers(completion_id, body[MODEL_ID]))
        return StreamingResponse(
            _sse(events, completion_id, created, request),
            media_type="text/event-stream",
            headers={COMPLETION_HEADER: completion_id},
        )

    @app.post("/v1/feedback")
    async def feedback(http: Request) -> dict[str, Any]:
        if service.feedback is None:
            raise APIError(404, "This server keeps no route log (--no-feedback).", code="feedback_disabled")
        try:
            body = json.loads(await http.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise APIError(400, f"The request body is not valid JSON: {error}") from None
        if not isinstance(body, dict):
            raise APIError(400, "The request body must be a JSON object.")
        unknown = sorted(set(body) - {"completion_id", "thread_id", "score", "label", "note"})
        if unknown:
            raise APIError(400, f"{unknown[0]}: not a feedback field", param=unknown[0])
        store = service.feedback
        try:
            saved = await asyncio.get_running_loop().run_in_executor(None, lambda: store.add_feedback(**body))
        except FeedbackError as error:
            raise APIError(error.status, str(error), param=error.param) from None
        return {"object": "feedback", **saved}

    return app


COMPLETION_HEADER = "X-HierRouter-Completion-Id"
"""On every completion response: the id ``POST /v1/feedback`` takes (also the body's ``id``)."""


def _route_headers(completion_id: str, extension: dict[str, Any]) -> dict[str, str]:
    """A non-streamed reply's headers: the completion id, the members in route order, C.
    (A streamed reply's headers leave before the route exists: its chunks name the members.)"""
    return {
        COMPLETION_HEADER: completion_id,
        "X-HierRouter-Members": ",".join(extension["members"]),
        "X-HierRouter-Cost": repr(extension["cost"]),
    }


async def _sse(
    events: asyncio.Queue[tuple[str, Any]], completion_id: str, created: int, request: ParsedRequest
) -> AsyncIterator[str]:
    def data(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    opening = {MODEL_ID: progress_extension([], 0.0)}  # no member has answered yet
    yield data(
        stream_chunk(
            completion_id, request, created, delta={"role": "assistant", "content": ""}, extra=opening
        )
    )
    while True:
        kind, payload = await events.get()
        if kind == "delta":
            text, members, cost = payload
            extension = {MODEL_ID: progress_extension(members, cost)}
            yield data(
                stream_chunk(completion_id, request, created, delta={"content": text}, extra=extension)
            )
        elif kind == "error":
            yield data(payload.body())
            break
        else:
            extension = {MODEL_ID: route_extension(payload, request.alpha, request.thread_id)}
            yield data(stream_chunk(completion_id, request, created, finish_reason="stop", extra=extension))
            if request.include_usage:
                usage = stream_chunk(completion_id, request, created, usage_only=usage_of(payload))
                yield data({**usage, **extension})
            break
    yield "data: [DONE]\n\n"
