"""The OpenAI chat-completions wire format, as far as the router speaks it.

Why a module of its own: everything a client can get wrong is decided here, before a request
reaches the graph, so that bad input is an HTTP 400 with an OpenAI-style error body naming the
field (``{"error": {"message", "type", "param", "code"}}``) and never a run error, a 200, or a
crashed worker. The response builders are here too, so the non-streaming reply and the last
streamed chunk carry the same ``hierrouter`` extension field.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any, Literal

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from hierrouter_graph.policy.alpha import AlphaError, resolve_alpha, same_alpha

__all__ = [
    "MODEL_ID",
    "APIError",
    "ChatCompletionRequest",
    "ParsedRequest",
    "completion_body",
    "parse_request",
    "progress_extension",
    "route_extension",
    "stream_chunk",
    "usage_of",
]

MODEL_ID = "hierrouter"
"""The router's model id; ``hierrouter:alpha=<α>`` names the same router at an explicit cost weight."""

_MODEL_PATTERN = re.compile(rf"^{MODEL_ID}(?::alpha=(?P<alpha>[^\s]+))?$")
_THREAD_PATTERN = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class APIError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: StrictStr | list[_TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """The fields the router reads. Other OpenAI fields (``temperature``, ``max_tokens``, ...) are
    accepted and ignored: each pool member decodes with its own ``ModelSpec`` settings."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr
    messages: list[_Message] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: _StreamOptions | None = None
    n: StrictInt | None = None
    alpha: StrictFloat | StrictInt | None = None
    """Extension: the cost weight α of R = Q − α·C (alternative to ``model: "hierrouter:alpha=…"``)."""
    thread_id: StrictStr | None = None
    """Extension: a durable conversation; its turns are checkpointed and survive a restart."""


_FIELDS = {"model", "messages", "stream", "stream_options", "include_usage", "n", "alpha", "thread_id"}
_FIELDS |= {"role", "content", "type", "text"}


def _param(loc: tuple[int | str, ...]) -> str | None:
    """pydantic's error location → OpenAI's ``param`` ("messages[0].content"); union tags dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _FIELDS:
            out += f".{part}" if out else part
        # other strings are pydantic's union-branch tags ("str", "list[_TextPart]"): not fields
    return out or None


class ParsedRequest(BaseModel):
    """A valid request, in the graph's terms."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: str
    messages: list[BaseMessage]
    stream: bool
    include_usage: bool
    alpha: float
    thread_id: str | None


def _to_message(message: _Message) -> BaseMessage:
    if message.role in ("system", "developer"):
        return SystemMessage(message.text())
    if message.role == "user":
        return HumanMessage(message.text())
    return AIMessage(message.text())


def _alpha_from_model(model: str) -> float | None:
    match = _MODEL_PATTERN.match(model)
    if match is None:
        raise APIError(
            400,
            f"The model {model!r} does not exist on this server; use {MODEL_ID!r} or "
            f"'{MODEL_ID}:alpha=<number>' (GET /v1/models lists them).",
            param="model",
            code="model_not_found",
        )
    raw = match.group("alpha")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise APIError(400, f"model: alpha {raw!r} is not a number", param="model") from None
    if not math.isfinite(value) or value < 0:
        raise APIError(400, f"model: alpha must be a finite number >= 0, got {raw!r}", param="model")
    return value


def parse_request(
    body: Any, trained_alpha: float, alpha_range: tuple[float, float] | None = None
) -> ParsedRequest:
    """Validate a decoded JSON body; raises ``APIError`` (400) naming the offending field.

    ``trained_alpha``: the α of a request that names none. ``alpha_range``: the policy takes α as
    an input and serves any α in the range. Otherwise only the α it was trained for is served,
    and any other value is refused rather than silently routed with the trained trade-off.
    """
    if not isinstance(body, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        # the deepest location names the field best (a union's branches each report one)
        first = max(error.errors(), key=lambda e: len(_param(tuple(e["loc"])) or ""))
        param = _param(tuple(first["loc"]))
        raise APIError(400, f"{param or 'body'}: {first['msg']}", param=param) from None
    if request.n not in (None, 1):
        raise APIError(400, "n: the router returns one choice; n must be 1", param="n")
    last = request.messages[-1]
    where = f"messages[{len(request.messages) - 1}]"
    if last.role != "user":
        raise APIError(
            400,
            f"{where}.role: the last message must be the user's query, got {last.role!r}",
            param=f"{where}.role",
        )
    if not last.text().strip():
        raise APIError(
            400, f"{where}.content: the query must be a non-empty string", param=f"{where}.content"
        )
    from_model = _alpha_from_model(request.model)
    from_body = None if request.alpha is None else float(request.alpha)
    if from_body is not None and (not math.isfinite(from_body) or from_body < 0):
        raise APIError(400, f"alpha: must be a finite number >= 0, got {request.alpha}", param="alpha")
    if from_model is not None and from_body is not None and not same_alpha(from_model, from_body):
        raise APIError(400, f"alpha: {from_body} contradicts the model's alpha={from_model}", param="alpha")
    asked = from_body if from_body is not None else from_model
    try:
        alpha = resolve_alpha(asked, trained_alpha, alpha_range)
    except AlphaError as error:
        raise APIError(
            400,
            str(error),
            param="alpha" if from_body is not None else "model",
            code="unsupported_alpha",
        ) from None
    if request.thread_id is not None and not _THREAD_PATTERN.match(request.thread_id):
        raise APIError(
            400, "thread_id: 1–128 characters of letters, digits, '_', '.', ':' or '-'", param="thread_id"
        )
    return ParsedRequest(
        model=request.model,
        messages=[_to_message(m) for m in request.messages],
        stream=request.stream,
        include_usage=bool(request.stream_options and request.stream_options.include_usage),
        alpha=alpha,
        thread_id=request.thread_id,
    )


_HOP_FIELDS = (
    "stage",
    "model",
    "prob",
    "probs",
    "value",
    "reply",
    "tokens_in",
    "tokens_out",
    "cost",
    "cumulative_cost",
    "confidence",
    "fallback_from",
    "error",
    "program",
)


def route_extension(output: dict[str, Any], alpha: float, thread_id: str | None) -> dict[str, Any]:
    """The ``hierrouter`` field: route, per-hop trace (prompts left out: they repeat the context),
    the route's cost C_L, and why it ended (``horizon``: L hops; ``router_stop``: the STOP action)."""
    trace = output.get("trace") or []
    route = [hop["model"] for hop in trace]
    return {
        **progress_extension(route, float(output.get("cost", 0.0))),
        "route": route,
        "trace": [{key: hop[key] for key in _HOP_FIELDS if key in hop} for hop in trace],
        "stop_reason": "router_stop" if output.get("stopped") else "horizon",
        "alpha": alpha,
        "thread_id": thread_id,
    }


def progress_extension(members: list[str], cost: float) -> dict[str, Any]:
    """What every streamed chunk carries: the members that answered so far, in route order (the
    last one the member whose tokens these are), and the cost C they spent before this chunk."""
    return {"members": list(members), "cost": cost}


def usage_of(output: dict[str, Any]) -> dict[str, int]:
    """The route's summed tokens: every hop's prompt and reply (what the pool was paid for)."""
    trace = output.get("trace") or []
    prompt = sum(int(hop["tokens_in"]) for hop in trace)
    completion = sum(int(hop["tokens_out"]) for hop in trace)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(
    completion_id: str, request: ParsedRequest, output: dict[str, Any], created: int | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` object for a finished route."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": request.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": output.get("answer", "")},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": usage_of(output),
        MODEL_ID: route_extension(output, request.alpha, request.thread_id),
    }


def stream_chunk(
    completion_id: str,
    request: ParsedRequest,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    extra: dict[str, Any] | None = None,
    usage_only: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``usage_only`` gives the final usage chunk (empty choices)."""
    chunk: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model,
    }
    if usage_only is not None:
        chunk["choices"] = []
        chunk["usage"] = usage_only
        return chunk
    chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": None}]
    if request.include_usage:
        chunk["usage"] = None
    chunk.update(extra or {})
    return chunk
