"""Remote pool members: a ``ModelSpec`` with an ``endpoint`` block, served by an inference server.

The chat model is langchain-huggingface's ``ChatHuggingFace`` over a ``HuggingFaceEndpoint`` (it
converts messages and turns the server's ``usage`` block into ``usage_metadata``, which
``hop.run_hop`` prices from). Its HTTP client is replaced by ``EndpointClient`` because the stock
``InferenceClient``

* goes through huggingface_hub's shared session, which refuses *every* URL — loopback included —
  while ``HF_HUB_OFFLINE=1``, the setting this project recommends for offline serving;
* sends the URL as the request's ``model`` when no name is given, which a pinned
  ``transformers serve`` rejects with HTTP 400;
* has one timeout and no retries, no overall deadline and no check of what came back.

``EndpointClient`` speaks the OpenAI chat-completions protocol (``transformers serve``, vLLM and
TGI all serve it), bounds each attempt by ``timeout_s``, retries transient failures with exponential
backoff and turns everything else into a ``RemoteModelError`` naming the member and the URL. The
graph then applies the member's ``on_error`` policy (``hop.run_hop_with_fallback``).

At most ``max_concurrency`` requests of one client are in flight at once (a semaphore held for
one attempt, released during the backoff sleep), whichever threads send them — the recorder's
per-member worker pool, ``graph.batch``'s threads, the OpenAI-compatible server's routes — so a
process never sends a server more than the slots it was configured for, and never fewer.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import httpx

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.cost import base_rate_from_param_count, param_count_from_name
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.model_spec import ModelSpec

if TYPE_CHECKING:
    from langchain_huggingface import ChatHuggingFace

__all__ = [
    "MAX_BACKOFF_S",
    "MAX_REPLY_BYTES",
    "EndpointClient",
    "RemoteModelError",
    "build_endpoint_member",
    "chat_completions_url",
    "endpoint_concurrency",
    "fallback_members",
]

MAX_BACKOFF_S = 30.0
"""Cap on one backoff sleep, so ``max_retries=10`` cannot sleep for hours."""

MAX_REPLY_BYTES = 8 * 1024 * 1024
"""A chat reply larger than this is not a reply; refusing it bounds memory and time."""

_CHAT_PATH = "/v1/chat/completions"
_RETRY_STATUSES = frozenset({408, 429})


class RemoteModelError(RuntimeError):
    """An endpoint member's server failed (down, slow, error status or garbage) after all retries.

    The message names the member and the URL, so a failed query says which server to look at.
    """

    def __init__(self, model: str, url: str, reason: str, attempts: int) -> None:
        self.model = model
        self.url = url
        self.reason = reason
        self.attempts = attempts
        plural = "s" if attempts != 1 else ""
        super().__init__(f"model {model!r} at {url} failed after {attempts} attempt{plural}: {reason}")


class _Retryable(Exception):
    """A failure another attempt may fix: timeout, refused connection, 5xx/408/429, garbled reply."""


class _Fatal(Exception):
    """A failure another attempt cannot fix: 4xx (bad request, auth, unknown model), no usage."""


def chat_completions_url(base_url: str) -> str:
    """``base_url`` → its chat-completions URL (servers are named by base URL in configs)."""
    base = base_url.rstrip("/")
    if base.endswith(_CHAT_PATH):
        return base
    if base.endswith("/v1"):
        return f"{base}/chat/completions"
    return f"{base}{_CHAT_PATH}"


def _snippet(raw: bytes | str, limit: int = 200) -> str:
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}…"


def _parse_reply(raw: bytes) -> dict[str, Any]:
    """The reply as a chat-completion dict, or an error saying what is wrong with it.

    Checked here, not in ChatHuggingFace, so a garbled reply becomes a RemoteModelError (with the
    fallback policy) rather than a KeyError deep in a graph node.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Retryable(f"reply is not JSON: {_snippet(raw)!r}") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _Retryable(f"reply has no 'choices': {_snippet(raw)!r}")
    message = choices[0].get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), str):
        raise _Retryable(f"reply's first choice has no text message: {_snippet(raw)!r}")
    message.setdefault("role", "assistant")
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise _Fatal(
            "reply has no usage block with prompt_tokens and completion_tokens, so the hop cannot be "
            "priced; use a server that reports usage (transformers serve, vLLM and TGI do)"
        )
    return data


class EndpointClient:
    """The ``client`` of a ``HuggingFaceEndpoint``: chat completions with timeouts and retries.

    It implements the one method ChatHuggingFace calls, ``chat_completion(messages=..., **params)``.
    The request body is built here from the ModelSpec (``max_tokens``, greedy ``temperature=0``
    unless ``generation_kwargs`` says otherwise, the served ``model`` name); of ChatHuggingFace's own
    params only ``stop`` is honoured, because its defaults (temperature 0.8, the URL as model name)
    are the wrong ones for a router that must price and replay what it routes.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        model: str | None = None,
        body: Mapping[str, Any] | None = None,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        max_concurrency: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"models[{name}].endpoint.max_concurrency: expected >= 1, got {max_concurrency}")
        self.name = name
        self.url = url
        self.endpoint = chat_completions_url(url)
        self.model = model
        self.body = dict(body or {})
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_concurrency = max_concurrency
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._sleep = sleep
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # as many pooled (and kept-alive) connections as slots: httpx's default keeps 20, so 32
        # concurrent requests would reconnect on every call
        limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._http = httpx.Client(transport=transport, timeout=httpx.Timeout(timeout_s), limits=limits)

    def __repr__(self) -> str:  # no headers: the API key must never reach a log or a trace
        return f"EndpointClient(name={self.name!r}, url={self.url!r}, model={self.model!r})"

    def backoff(self, retry: int) -> float:
        """Seconds to sleep before retry number ``retry`` (1-based): backoff_s · 2^(retry−1), capped."""
        return float(min(self.backoff_s * 2 ** (retry - 1), MAX_BACKOFF_S))

    def request_body(self, messages: list[dict[str, Any]], stop: list[str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": messages, **self.body}
        if self.model is not None:
            body["model"] = self.model
        if stop:
            body["stop"] = list(stop)
        return body

    def chat_completion(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """One chat completion; retried on transient failures; RemoteModelError when out of tries."""
        body = self.request_body(messages, params.get("stop"))
        attempts = self.max_retries + 1
        last: Exception | None = None
        for attempt in range(1, attempts + 1):
            try:
                with self._slots:
                    return self._attempt(body)
            except _Fatal as error:
                raise RemoteModelError(self.name, self.url, str(error), attempt) from error
            except _Retryable as error:
                last = error
                if attempt < attempts:
                    self._sleep(self.backoff(attempt))
        raise RemoteModelError(self.name, self.url, str(last), attempts) from last

    def _attempt(self, body: dict[str, Any]) -> dict[str, Any]:
        """One POST, bounded by ``timeout_s`` in total (httpx alone bounds each read, not the sum)."""
        deadline = time.monotonic() + self.timeout_s
        try:
            with self._http.stream("POST", self.endpoint, json=body, headers=self._headers) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_REPLY_BYTES:
                        raise _Fatal(f"reply is larger than {MAX_REPLY_BYTES} bytes")
                    if time.monotonic() > deadline:
                        raise _Retryable(f"no complete reply within timeout_s={self.timeout_s:g}")
                    chunks.append(chunk)
                status = response.status_code
        except httpx.TimeoutException as error:
            raise _Retryable(f"timed out (timeout_s={self.timeout_s:g}, {type(error).__name__})") from None
        except httpx.ConnectError as error:
            raise _Retryable(f"cannot connect ({error}); is the server running?") from None
        except httpx.HTTPError as error:
            raise _Retryable(f"{type(error).__name__}: {error}") from None
        raw = b"".join(chunks)
        if status in _RETRY_STATUSES or status >= 500:
            raise _Retryable(f"HTTP {status}: {_snippet(raw)}")
        if status >= 400:
            raise _Fatal(f"HTTP {status}: {_snippet(raw)}")
        return _parse_reply(raw)

    def close(self) -> None:
        self._http.close()


class _AsyncEndpointClient:
    """``async_client`` for ChatHuggingFace's ``ainvoke``: the same client, off the event loop.

    Its own ``max_concurrency`` threads, not ``asyncio.to_thread``: the loop's default executor
    has ``min(32, cores + 4)`` workers (6 on 2 cores), which would queue ``abatch`` hops behind
    each other long before the server's slots are full.
    """

    def __init__(self, client: EndpointClient) -> None:
        self.client = client
        self._executor: ThreadPoolExecutor | None = None
        self._guard = threading.Lock()

    def _threads(self) -> ThreadPoolExecutor:
        with self._guard:  # made on first use: a member only ever invoked synchronously holds none
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.client.max_concurrency, thread_name_prefix=f"endpoint-{self.client.name}"
                )
            return self._executor

    async def chat_completion(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        call = partial(self.client.chat_completion, messages, **params)
        return await asyncio.get_running_loop().run_in_executor(self._threads(), call)


def _base_rate(spec: ModelSpec) -> float:
    """The spec's price, else 0.001/B params read from its name or source (config validation
    guarantees one of them says a size)."""
    if spec.base_rate is not None:
        return spec.base_rate
    params = param_count_from_name(spec.name) or param_count_from_name(spec.source)
    if params is None:  # unreachable for a validated spec; kept for hand-built ones
        raise ValueError(f"models[{spec.name}].base_rate: set it, or name a size in name/source")
    return base_rate_from_param_count(params)


def _api_key(spec: ModelSpec) -> str | None:
    assert spec.endpoint is not None
    variable = spec.endpoint.api_key_env
    if variable is None:
        return None
    key = os.environ.get(variable)
    if not key:
        raise ValueError(
            f"models[{spec.name}].endpoint.api_key_env: environment variable {variable} is not set"
        )
    return key


def _chat_model(spec: ModelSpec, client: EndpointClient) -> ChatHuggingFace:
    """ChatHuggingFace over a HuggingFaceEndpoint whose clients are ``client``.

    ``disable_streaming`` keeps LangGraph's message streaming on the request/response path, the
    only one the client implements (and the one that returns a usage block on every server).
    """
    from langchain_huggingface import ChatHuggingFace, HuggingFaceEndpoint

    assert spec.endpoint is not None
    settings: dict[str, Any] = {  # its `model` field is derived from endpoint_url by a validator
        "endpoint_url": spec.endpoint.url,
        "max_new_tokens": spec.max_new_tokens,
        "temperature": None,
        "top_p": None,
        "typical_p": None,
        "timeout": math.ceil(spec.endpoint.timeout_s),
        "huggingfacehub_api_token": None,
    }
    llm = HuggingFaceEndpoint(**settings)
    llm.client = client
    llm.async_client = _AsyncEndpointClient(client)
    chat = ChatHuggingFace(llm=llm, disable_streaming=True)
    chat.model_id = spec.endpoint.model or spec.source  # reported as response_metadata["model_name"]
    return chat


def build_endpoint_member(
    spec: ModelSpec,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> PoolMember:
    """The PoolMember of an endpoint spec. No network here: a down server fails its first hop.

    ``transport``/``sleep`` exist for tests (an ``httpx.MockTransport``, a recording sleep).
    """
    endpoint = spec.endpoint
    if endpoint is None:
        raise ValueError(f"models[{spec.name}].endpoint: not set; build local members with build_pool_member")
    body = {"max_tokens": spec.max_new_tokens, "temperature": 0.0, **spec.generation_kwargs}
    client = EndpointClient(
        name=spec.name,
        url=endpoint.url,
        model=endpoint.model,
        body=body,
        api_key=_api_key(spec),
        timeout_s=endpoint.timeout_s,
        max_retries=endpoint.max_retries,
        backoff_s=endpoint.backoff_s,
        max_concurrency=endpoint.max_concurrency,
        transport=transport,
        sleep=sleep,
    )
    return PoolMember(
        name=spec.name,
        chat_model=_chat_model(spec, client),
        base_rate=_base_rate(spec),
        counter=None,  # priced from the server's usage block; _parse_reply insists on one
        system_prompt=spec.system_prompt,
        max_input_tokens=None,
        fingerprint=spec.fingerprint(),
        extra={
            "endpoint_url": endpoint.url,
            "on_error": endpoint.on_error,
            "max_concurrency": endpoint.max_concurrency,
        },
    )


def endpoint_concurrency(member: PoolMember) -> int | None:
    """How many hops ``member`` may have in flight at once: its ``endpoint.max_concurrency``, or
    None for a member that is not served by an endpoint (local members batch instead)."""
    if "endpoint_url" not in member.extra:
        return None
    return int(member.extra.get("max_concurrency", 1))


def fallback_members(config: RouterConfig, pool: Mapping[str, PoolMember]) -> dict[str, PoolMember]:
    """name → the member that answers for it when its server fails (on_error: fallback only).

    Read from the config, not the member, so it also holds for endpoint members supplied through
    ``chat_models``.
    """
    out: dict[str, PoolMember] = {}
    for spec in config.models:
        if spec.endpoint is not None and spec.endpoint.on_error == "fallback":
            assert spec.endpoint.fallback_model is not None  # EndpointSpec validation
            out[spec.name] = pool[spec.endpoint.fallback_model]
    return out
