"""Remote (endpoint) pool members without a network: httpx.MockTransport plays the server.

Sockets stay disabled (pytest-socket), so anything here that tried a real connection would fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ValidationError

from hierrouter_graph import (
    EndpointSpec,
    FixedRoutePolicy,
    HierRouterGraph,
    ModelSpec,
    RemoteModelError,
    RouterConfig,
    build_endpoint_member,
    run_hop,
)
from hierrouter_graph.graph import build_pool
from hierrouter_graph.members.remote import MAX_BACKOFF_S, EndpointClient, chat_completions_url

URL = "http://inference.test:8000"
Handler = Callable[[httpx.Request], httpx.Response]


def _reply(text: str = "forty-two", prompt_tokens: int = 31, completion_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class Server:
    """A scripted server: one handler per request (the last one repeats), every request kept."""

    def __init__(self, *handlers: Handler) -> None:
        self.handlers = list(handlers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handlers[min(len(self.requests), len(self.handlers)) - 1](request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def ok(**kw: Any) -> Handler:
    return lambda request: httpx.Response(200, json=_reply(**kw))


def status(code: int, text: str = "") -> Handler:
    return lambda request: httpx.Response(code, text=text or f"error {code}")


def raises(error: type[httpx.HTTPError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error("simulated", request=request)  # type: ignore[call-arg]

    return handler


def _endpoint_spec(name: str = "remote", **endpoint: Any) -> ModelSpec:
    block = {"url": URL, "max_retries": 2, "backoff_s": 0.01, **endpoint}
    return ModelSpec(name=name, source="org/Served-1B", base_rate=0.002, max_new_tokens=16, endpoint=block)


def _member(spec: ModelSpec, server: Server, sleeps: list[float] | None = None) -> Any:
    sleep = sleeps.append if sleeps is not None else (lambda seconds: None)
    return build_endpoint_member(spec, transport=server.transport, sleep=sleep)


class _UsageModel(FakeListChatModel):
    """A local stand-in that reports usage (fixed counts), so its hops have a known price."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        message = AIMessage(
            self.responses[0], usage_metadata={"input_tokens": 20, "output_tokens": 3, "total_tokens": 23}
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


# ---------------------------------------------------------------- configuration


def _local(name: str) -> dict[str, Any]:
    return {"name": name, "source": "offline:smollm2-135m-instruct"}


def _remote(**over: Any) -> dict[str, Any]:
    endpoint = {"url": URL, **over.pop("endpoint", {})}
    return {"name": "remote", "source": "org/Served-1B", "endpoint": endpoint, **over}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (_remote(endpoint={"url": "localhost:8000"}), "models.2.endpoint.url"),
        (_remote(endpoint={"url": "ftp://host/x"}), "models.2.endpoint.url"),
        (_remote(endpoint={"url": "http://host:8000/?token=1"}), "models.2.endpoint.url"),
        (
            _remote(endpoint={"api_key_env": "hf_abcdefghijklmnopqrstuvwxyz12"}),
            "models.2.endpoint.api_key_env",
        ),
        (_remote(endpoint={"api_key_env": "MY KEY"}), "models.2.endpoint.api_key_env"),
        (_remote(endpoint={"timeout_s": 0}), "models.2.endpoint.timeout_s"),
        (_remote(endpoint={"max_retries": -1}), "models.2.endpoint.max_retries"),
        (_remote(endpoint={"backoff_s": -1}), "models.2.endpoint.backoff_s"),
        (_remote(endpoint={"on_error": "retry"}), "models.2.endpoint.on_error"),
        (_remote(endpoint={"bogus": 1}), "models.2.endpoint.bogus"),
        (_remote(endpoint={"on_error": "fallback"}), "fallback_model: required"),
        (_remote(endpoint={"fallback_model": "a"}), "fallback_model: only used"),
        (
            _remote(endpoint={"on_error": "fallback", "fallback_model": "nope"}),
            "models[2].endpoint.fallback_model",
        ),
        (_remote(endpoint={"on_error": "fallback", "fallback_model": "remote"}), "endpoint.fallback_model"),
        (_remote(kind="cloze_mc"), "kind"),
        (_remote(adapter="/some/lora"), "adapter"),
        (_remote(chat_template="{{ x }}"), "chat_template"),
        (_remote(max_input_tokens=64), "max_input_tokens"),
        (_remote(device="cpu"), "device"),
        (_remote(source="org/served"), "base_rate"),
    ],
)
def test_invalid_endpoint_config_names_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        RouterConfig.model_validate({"models": [_local("a"), _local("b"), spec]})
    message = str(raised.value)
    assert field in message
    assert "models.2" in message or "models[2]" in message


def test_valid_endpoint_config_round_trips(tmp_path: Path) -> None:
    spec = _remote(
        endpoint={"url": "http://127.0.0.1:8000/", "on_error": "fallback", "fallback_model": "a"},
        source="org/served",
        base_rate=0.004,
    )
    config = RouterConfig.model_validate({"models": [_local("a"), spec]})
    endpoint = config.spec("remote").endpoint
    assert isinstance(endpoint, EndpointSpec)
    assert endpoint.url == "http://127.0.0.1:8000"  # trailing slash dropped
    assert (endpoint.timeout_s, endpoint.max_retries, endpoint.backoff_s) == (60.0, 2, 0.5)
    for suffix in (".yaml", ".json"):
        config.to_file(tmp_path / f"r{suffix}")
        assert RouterConfig.from_file(tmp_path / f"r{suffix}") == config
    # a size in the source prices a member without base_rate
    RouterConfig.model_validate({"models": [_remote(source="HuggingFaceTB/SmolLM2-135M-Instruct")]})


def test_fingerprint_of_local_specs_is_unchanged_and_endpoints_add_only_the_served_name() -> None:
    plain = ModelSpec(name="a", source="offline:smollm2-135m-instruct")
    # byte-identical to the fingerprint recorded before endpoints existed (replay stores key on it)
    assert plain.fingerprint() == (
        '{"chat_template": null, "dtype": "auto", "generation_kwargs": {}, "kind": "generate", '
        '"max_input_tokens": null, "max_new_tokens": 128, "source": "offline:smollm2-135m-instruct", '
        '"system_prompt": null}'
    )
    base = _endpoint_spec()
    local_twin = ModelSpec(name="remote", source="org/Served-1B", base_rate=0.002, max_new_tokens=16)
    assert base.fingerprint() != local_twin.fingerprint()
    assert base.fingerprint() != _endpoint_spec(model="served-name").fingerprint()
    assert base.fingerprint() != _endpoint_spec().model_copy(update={"max_new_tokens": 7}).fingerprint()
    # where and how patiently it is served does not change what it generates
    moved = _endpoint_spec(url="https://elsewhere:9000", timeout_s=5, max_retries=0)
    assert moved.fingerprint() == base.fingerprint()


@pytest.mark.parametrize(
    ("base", "full"),
    [
        ("http://h:1", "http://h:1/v1/chat/completions"),
        ("http://h:1/", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1", "http://h:1/v1/chat/completions"),
        ("http://h:1/v1/chat/completions", "http://h:1/v1/chat/completions"),
        ("https://h/prefix", "https://h/prefix/v1/chat/completions"),
    ],
)
def test_chat_completions_url(base: str, full: str) -> None:
    assert chat_completions_url(base) == full


# ---------------------------------------------------------------- the request and its price


def test_request_body_and_cost_from_the_servers_usage() -> None:
    server = Server(ok(text="forty-two", prompt_tokens=31, completion_tokens=5))
    spec = _endpoint_spec(model="served-name").model_copy(
        update={"system_prompt": "Be terse.", "generation_kwargs": {"top_p": 0.5}}
    )
    member = _member(spec, server)
    result = run_hop(member, "What is 6*7?", "Solve.")
    assert (result.reply, result.tokens_in, result.tokens_out) == ("forty-two", 31, 5)
    assert result.cost == pytest.approx(0.002 * (31 + 5))
    assert member.counter is None  # nothing local counts: the usage block is the price
    (request,) = server.requests
    assert str(request.url) == f"{URL}/v1/chat/completions"
    assert "authorization" not in request.headers
    body = json.loads(request.content)
    assert body == {
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Solve.\n\nWhat is 6*7?"},
        ],
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 0.5,
        "model": "served-name",
    }


def test_model_is_omitted_without_a_served_name_and_generation_kwargs_override_greedy() -> None:
    server = Server(ok())
    spec = _endpoint_spec().model_copy(update={"generation_kwargs": {"temperature": 0.7, "seed": 3}})
    run_hop(_member(spec, server), "q", "Solve.")
    body = server.bodies()[0]
    assert "model" not in body
    assert (body["temperature"], body["seed"]) == (0.7, 3)


def test_api_key_comes_from_the_named_env_var_and_never_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = _endpoint_spec(api_key_env="HIERROUTER_TEST_KEY")
    monkeypatch.delenv("HIERROUTER_TEST_KEY", raising=False)
    with pytest.raises(ValueError, match=r"models\[remote\]\.endpoint\.api_key_env.*HIERROUTER_TEST_KEY"):
        build_endpoint_member(spec)
    monkeypatch.setenv("HIERROUTER_TEST_KEY", "s3cret-value")
    server = Server(ok())
    member = _member(spec, server)
    run_hop(member, "q", "Solve.")
    assert server.requests[0].headers["authorization"] == "Bearer s3cret-value"
    client = member.chat_model.llm.client
    assert "s3cret" not in repr(client) and "s3cret" not in repr(member.chat_model)


def test_async_invoke_uses_the_same_client() -> None:
    server = Server(ok(prompt_tokens=9, completion_tokens=2))
    member = _member(_endpoint_spec(), server)
    message = asyncio.run(member.chat_model.ainvoke([HumanMessage("hi")]))
    assert message.usage_metadata["input_tokens"] == 9
    assert message.usage_metadata["output_tokens"] == 2
    assert len(server.requests) == 1


# ---------------------------------------------------------------- failures: retries, timeouts, garbage


def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    server = Server(status(503), raises(httpx.ConnectError), ok(text="finally"))
    sleeps: list[float] = []
    member = _member(_endpoint_spec(max_retries=3, backoff_s=0.25), server, sleeps)
    assert run_hop(member, "q", "Solve.").reply == "finally"
    assert len(server.requests) == 3
    assert sleeps == [0.25, 0.5]


def test_out_of_retries_names_model_url_attempts_and_cause() -> None:
    server = Server(status(503, "overloaded"))
    sleeps: list[float] = []
    member = _member(_endpoint_spec(max_retries=2, backoff_s=0.1), server, sleeps)
    with pytest.raises(RemoteModelError) as raised:
        run_hop(member, "q", "Solve.")
    error = raised.value
    assert (error.model, error.url, error.attempts) == ("remote", URL, 3)
    assert "'remote'" in str(error) and URL in str(error) and "HTTP 503: overloaded" in str(error)
    assert sleeps == [0.1, 0.2]
    assert len(server.requests) == 3


def test_backoff_really_sleeps_and_is_capped() -> None:
    server = Server(raises(httpx.ConnectError))
    member = build_endpoint_member(_endpoint_spec(max_retries=2, backoff_s=0.02), transport=server.transport)
    start = time.monotonic()
    with pytest.raises(RemoteModelError, match="cannot connect"):
        run_hop(member, "q", "Solve.")
    assert 0.06 <= time.monotonic() - start < 2.0  # slept 0.02 + 0.04
    client = EndpointClient(name="x", url=URL, backoff_s=20.0, max_retries=10)
    assert [client.backoff(k) for k in (1, 2, 3)] == [20.0, MAX_BACKOFF_S, MAX_BACKOFF_S]


@pytest.mark.parametrize("code", [400, 401, 404, 422])
def test_client_errors_are_not_retried(code: int) -> None:
    server = Server(status(code, "Server is pinned to '/m'; requested 'x'."))
    with pytest.raises(RemoteModelError) as raised:
        run_hop(_member(_endpoint_spec(), server), "q", "Solve.")
    assert len(server.requests) == 1 and raised.value.attempts == 1
    assert f"HTTP {code}" in str(raised.value) and "pinned" in str(raised.value)


def test_read_timeout_is_retried_then_reported() -> None:
    server = Server(raises(httpx.ReadTimeout))
    with pytest.raises(RemoteModelError, match=r"timed out \(timeout_s=60"):
        run_hop(_member(_endpoint_spec(max_retries=1), server), "q", "Solve.")
    assert len(server.requests) == 2


class _Trickle(httpx.SyncByteStream):
    """A server that never finishes its reply: one byte every 50 ms, forever."""

    def __iter__(self) -> Iterator[bytes]:
        while True:
            time.sleep(0.05)
            yield b" "


def test_a_reply_that_never_ends_is_cut_at_timeout_s() -> None:
    server = Server(lambda request: httpx.Response(200, stream=_Trickle()))
    member = _member(_endpoint_spec(timeout_s=0.3, max_retries=1), server)
    start = time.monotonic()
    with pytest.raises(RemoteModelError, match="no complete reply within timeout_s=0.3"):
        run_hop(member, "q", "Solve.")
    assert time.monotonic() - start < 2.0  # 2 attempts x 0.3 s, never a hang
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("handler", "message", "requests"),
    [
        (lambda r: httpx.Response(200, text="<html>Bad gateway</html>"), "not JSON", 3),
        (lambda r: httpx.Response(200, json={"error": "model crashed"}), "no 'choices'.*model crashed", 3),
        (lambda r: httpx.Response(200, json={"choices": [{"message": {"content": None}}]}), "no text", 3),
        (lambda r: httpx.Response(200, json={**_reply(), "usage": None}), "no usage block", 1),
        (
            lambda r: httpx.Response(200, json={**_reply(), "usage": {"prompt_tokens": "3"}}),
            "no usage block",
            1,
        ),
    ],
)
def test_garbage_replies_become_clear_errors(handler: Handler, message: str, requests: int) -> None:
    server = Server(handler)
    with pytest.raises(RemoteModelError, match=message):
        run_hop(_member(_endpoint_spec(), server), "q", "Solve.")
    assert len(server.requests) == requests  # garbled: retried; no usage: the server never sends it


# ---------------------------------------------------------------- the policy in the graph


def _graph(
    on_error: str, route: list[str], remote: Server, backup: BaseMessage | None = None
) -> HierRouterGraph:
    block: dict[str, Any] = {"on_error": on_error}
    if on_error == "fallback":
        block["fallback_model"] = "backup"
    config = RouterConfig(
        models=[
            ModelSpec(name="backup", source="local/backup-135M", base_rate=0.001),
            _endpoint_spec(**block),
        ],
        horizon=len(route),
    )
    chat_models: dict[str, Any] = {
        "backup": _UsageModel(responses=["backup answer"]),
        "remote": _member(config.spec("remote"), remote),
    }
    return HierRouterGraph(
        config, policy=FixedRoutePolicy(config.model_names, route), chat_models=chat_models
    )


def test_fail_policy_fails_the_query_naming_model_and_url() -> None:
    graph = _graph("fail", ["backup", "remote"], Server(raises(httpx.ConnectError)))
    with pytest.raises(RemoteModelError, match=rf"'remote' at {URL} failed after 3 attempts: cannot connect"):
        graph.invoke("What is 6*7?")


def test_fallback_policy_answers_with_the_fallback_and_charges_its_price() -> None:
    server = Server(status(500))
    out = _graph("fallback", ["remote", "remote"], server).invoke("What is 6*7?")
    assert len(server.requests) == 2 * 3  # each hop tried the server (1 + 2 retries) first
    for hop in out["trace"]:
        assert hop["model"] == "backup" and hop["fallback_from"] == "remote"
        assert "'remote'" in hop["error"] and URL in hop["error"] and "HTTP 500" in hop["error"]
        assert (hop["tokens_in"], hop["tokens_out"]) == (20, 3)
        assert hop["cost"] == pytest.approx(0.001 * 23)  # the fallback's rate, not remote's 0.002
        assert hop["prob"] == 1.0  # the router's probability of what it routed to
    assert out["cost"] == pytest.approx(2 * 0.001 * 23)
    assert out["answer"] == "backup answer"  # the last hop's reply


def test_no_fallback_when_the_server_answers() -> None:
    out = _graph("fallback", ["backup", "remote"], Server(ok(prompt_tokens=40, completion_tokens=10))).invoke(
        "q?"
    )
    first, second = out["trace"]
    assert "fallback_from" not in first and "fallback_from" not in second and "error" not in second
    assert (second["model"], second["tokens_in"], second["tokens_out"]) == ("remote", 40, 10)
    assert second["cost"] == pytest.approx(0.002 * 50)
    assert out["cost"] == pytest.approx(0.001 * 23 + 0.002 * 50)


def test_a_failing_fallback_fails_the_query_naming_both() -> None:
    config = RouterConfig(
        models=[
            _endpoint_spec("first", on_error="fallback", fallback_model="second"),
            _endpoint_spec("second", url="http://other.test:1"),
        ],
        horizon=1,
    )
    chat_models = {name: _member(config.spec(name), Server(status(502))) for name in config.model_names}
    graph = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["first"]), chat_models)
    with pytest.raises(RemoteModelError, match=r"'second' at http://other.test:1 .*as fallback for first"):
        graph.invoke("q")


def test_mixed_pool_local_model_and_endpoint_in_one_graph(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    remote_spec = _endpoint_spec()
    config = RouterConfig(models=[tiny_specs[0], remote_spec], horizon=2, cache_dir=tmp_path)
    # the endpoint member built from its spec alone: no network at build time, no local weights
    built = build_pool(config)
    assert built["remote"].counter is None and built["remote"].base_rate == 0.002
    assert built["tiny-a"].counter is not None
    server = Server(ok(text="remote says hi", prompt_tokens=77, completion_tokens=4))
    graph = HierRouterGraph(
        config,
        FixedRoutePolicy(config.model_names, ["tiny-a", "remote"]),
        {"tiny-a": built["tiny-a"], "remote": _member(remote_spec, server)},
    )
    local, remote = graph.invoke("What is seven times six?")["trace"]
    assert local["model"] == "tiny-a" and remote["model"] == "remote"
    assert remote["cost"] == pytest.approx(0.002 * 81)
    sent = server.bodies()[0]["messages"][-1]["content"]
    assert local["reply"] in sent  # the remote hop saw the local hop's reply in its context
    # LangGraph's message streaming (Studio) must not switch the endpoint to a streamed request
    before = len(server.requests)
    chunks = list(graph.stream("Which planet is largest?", stream_mode="messages"))
    assert len(server.requests) == before + 1 and "stream" not in server.bodies()[-1]
    assert any(message.content == "remote says hi" for message, _ in chunks)


def test_endpoint_spec_dispatches_without_loading(tmp_path: Path) -> None:
    from hierrouter_graph.members.local import build_pool_member

    member = build_pool_member(_endpoint_spec(), tmp_path)
    assert member.extra == {"endpoint_url": URL, "on_error": "fail", "max_concurrency": 8}
    assert member.chat_model.model_id == "org/Served-1B"
    assert not any(tmp_path.iterdir())  # nothing resolved, converted or cached
