"""The OpenAI-compatible app in process (FastAPI's TestClient: no sockets), on the tiny pool.

Bad input must be an HTTP 400 with an OpenAI-style error naming the field, and must never disturb
the requests around it; the streamed deltas must add up to the non-streamed answer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hierrouter_graph import HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.checkpoint import sqlite_checkpointer
from hierrouter_graph.policy.protocol import FixedRoutePolicy, PolicyTraits
from hierrouter_graph.serve import RouterService, create_app

QUERY = [{"role": "user", "content": "What is seven times six?"}]


@pytest.fixture(scope="module")
def client(tiny_specs: list[ModelSpec], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve-app")
    config = RouterConfig(models=tiny_specs, horizon=2, cache_dir=root / "cache")
    service = RouterService(
        HierRouterGraph(config), checkpointer=sqlite_checkpointer(root / "t.sqlite"), max_concurrency=4
    )
    with TestClient(create_app(service)) as test_client:
        yield test_client
    service.close()


def _events(response: Any) -> list[dict[str, Any]]:
    lines = [line for line in response.text.split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[len("data: ") :]) for line in lines[:-1]]


def test_completion_carries_answer_usage_and_route(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "hierrouter", "messages": QUERY})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "hierrouter"
    ext = body["hierrouter"]
    trace = ext["trace"]
    assert [hop["stage"] for hop in trace] == [0, 1]
    assert ext["route"] == [hop["model"] for hop in trace]
    assert set(ext["route"]) <= {"tiny-a", "tiny-b"}
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": trace[-1]["reply"],
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": sum(h["tokens_in"] for h in trace),
        "completion_tokens": sum(h["tokens_out"] for h in trace),
        "total_tokens": sum(h["tokens_in"] + h["tokens_out"] for h in trace),
    }
    assert ext["cost"] == pytest.approx(sum(h["cost"] for h in trace))
    assert (ext["stop_reason"], ext["alpha"], ext["thread_id"]) == ("horizon", 0.005, None)
    assert "prompt" not in trace[0]


def test_stream_deltas_add_up_to_the_answer(client: TestClient) -> None:
    plain = client.post("/v1/chat/completions", json={"model": "hierrouter", "messages": QUERY}).json()
    body = {"model": "hierrouter:alpha=0.005", "messages": QUERY, "stream": True}
    response = client.post("/v1/chat/completions", json={**body, "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _events(response)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["id"] for e in events}) == 1
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]]
    assert "".join(deltas) == plain["choices"][0]["message"]["content"]
    assert sum(1 for d in deltas if d) > 4  # tokens, not one piece per hop
    final, usage = events[-2], events[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["hierrouter"]["route"] == plain["hierrouter"]["route"]
    assert (usage["choices"], usage["usage"]) == ([], plain["usage"])


def test_models_lists_the_router_variants(client: TestClient) -> None:
    models = client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["hierrouter", "hierrouter:alpha=0.005"]
    assert models["data"][0]["hierrouter"] == {"pool": ["tiny-a", "tiny-b"], "horizon": 2}


USER = {"role": "user", "content": "hi"}
MALFORMED: list[tuple[str, Any, str | None]] = [
    ("not json", b"{", None),
    ("not an object", [], None),
    ("missing model", {"messages": [USER]}, "model"),
    ("unknown model", {"model": "gpt-4o", "messages": [USER]}, "model"),
    ("model not a string", {"model": 7, "messages": [USER]}, "model"),
    ("missing messages", {"model": "hierrouter"}, "messages"),
    ("no messages", {"model": "hierrouter", "messages": []}, "messages"),
    ("messages not a list", {"model": "hierrouter", "messages": "hi"}, "messages"),
    (
        "bad role",
        {"model": "hierrouter", "messages": [{"role": "robot", "content": "x"}]},
        "messages[0].role",
    ),
    (
        "integer content",
        {"model": "hierrouter", "messages": [{"role": "user", "content": 42}]},
        "messages[0].content",
    ),
    (
        "blank query",
        {"model": "hierrouter", "messages": [{"role": "user", "content": "  \n"}]},
        "messages[0].content",
    ),
    (
        "image part",
        {"model": "hierrouter", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        "messages[0].content[0].type",
    ),
    (
        "last message not the user's",
        {"model": "hierrouter", "messages": [USER, {"role": "assistant", "content": "x"}]},
        "messages[1].role",
    ),
    ("stream not a boolean", {"model": "hierrouter", "messages": [USER], "stream": "yes"}, "stream"),
    ("n > 1", {"model": "hierrouter", "messages": [USER], "n": 2}, "n"),
    ("alpha not a number", {"model": "hierrouter", "messages": [USER], "alpha": "low"}, "alpha"),
    ("untrained alpha (body)", {"model": "hierrouter", "messages": [USER], "alpha": 0.02}, "alpha"),
    ("untrained alpha (model)", {"model": "hierrouter:alpha=0.02", "messages": [USER]}, "model"),
    ("alpha in model not a number", {"model": "hierrouter:alpha=x", "messages": [USER]}, "model"),
    ("negative alpha", {"model": "hierrouter", "messages": [USER], "alpha": -1}, "alpha"),
    ("bad thread id", {"model": "hierrouter", "messages": [USER], "thread_id": "a b"}, "thread_id"),
]


@pytest.mark.parametrize(("label", "body", "param"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_bad_input_is_a_400_naming_the_field(
    client: TestClient, label: str, body: Any, param: str | None
) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, label
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert isinstance(error["message"], str) and error["message"]
    if "untrained alpha" in label:
        assert error["code"] == "unsupported_alpha" and "alpha=0.005" in error["message"]
    # and the server still answers valid requests
    ok = client.post("/v1/chat/completions", json={"model": "hierrouter", "messages": QUERY})
    assert ok.status_code == 200


def test_thread_keeps_turns_and_full_history_is_not_stored_twice(client: TestClient) -> None:
    first = {"model": "hierrouter", "messages": QUERY, "thread_id": "t-1"}
    answer = client.post("/v1/chat/completions", json=first).json()
    assert answer["hierrouter"]["thread_id"] == "t-1"
    reply = answer["choices"][0]["message"]
    history = [*QUERY, reply, {"role": "user", "content": "And eight times nine?"}]  # OpenAI-style resend
    client.post("/v1/chat/completions", json={**first, "messages": history, "stream": True})
    client.post(
        "/v1/chat/completions", json={**first, "messages": [{"role": "user", "content": "Thanks"}]}
    )  # or only the new turn
    thread = client.get("/v1/threads/t-1").json()
    roles = [m["role"] for m in thread["messages"]]
    assert roles == ["user", "assistant"] * 3
    assert [m["content"] for m in thread["messages"][::2]] == [
        "What is seven times six?",
        "And eight times nine?",
        "Thanks",
    ]
    assert thread["messages"][1]["content"] == reply["content"]
    missing = client.get("/v1/threads/nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "thread_id"


def test_unknown_path_is_an_openai_style_error(client: TestClient) -> None:
    response = client.get("/v1/nothing")
    assert response.status_code == 404 and "error" in response.json()


@pytest.mark.parametrize(
    ("route", "query"),
    [
        (["gen", "cloze"], "What is seven times six?"),  # the cloze refusal is no part of the answer
        (["cloze", "gen"], "What is seven times six?"),
        (["cloze", "cloze"], "What is seven times six?"),  # every reply declined: the refusal is the answer
        (["gen", "cloze"], "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"),
    ],
)
def test_streamed_answer_skips_refusals_like_the_plain_one(
    tiny_specs: list[ModelSpec], tmp_path: Path, route: list[str], query: str
) -> None:
    gen = tiny_specs[0].model_copy(update={"name": "gen"})
    cloze = ModelSpec(name="cloze", kind="cloze_mc", source=tiny_specs[0].source, base_rate=0.002)
    config = RouterConfig(models=[gen, cloze], horizon=2, cache_dir=tmp_path / "cache")
    service = RouterService(
        HierRouterGraph(config, FixedRoutePolicy(["gen", "cloze"], route)), max_concurrency=2
    )
    messages = [{"role": "user", "content": query}]
    with TestClient(create_app(service)) as test_client:
        plain = test_client.post(
            "/v1/chat/completions", json={"model": "hierrouter", "messages": messages}
        ).json()
        streamed = test_client.post(
            "/v1/chat/completions", json={"model": "hierrouter", "messages": messages, "stream": True}
        )
    service.close()
    assert plain["hierrouter"]["route"] == route
    deltas = [e["choices"][0]["delta"].get("content", "") for e in _events(streamed) if e["choices"]]
    assert "".join(deltas) == plain["choices"][0]["message"]["content"]
    assert plain["choices"][0]["message"]["content"]


class ThresholdPolicy(PolicyTraits):
    """An α-conditioned policy with a known rule: ``tiny-a`` below α = 1, ``tiny-b`` above."""

    pool = ("tiny-a", "tiny-b")
    alpha_range = (0.01, 10.0)

    def decide(self, context: str, stage: int, cost: float, *, alpha: float | None = None, **_: Any) -> Any:
        policy = FixedRoutePolicy(self.pool, ["tiny-a" if alpha is not None and alpha < 1 else "tiny-b"])
        return policy.decide(context, stage, cost)


def test_an_alpha_conditioned_server_routes_each_request_for_its_own_alpha(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    config = RouterConfig(
        models=tiny_specs, horizon=2, alpha=0.1, alpha_range=(0.01, 10.0), cache_dir=tmp_path / "cache"
    )
    service = RouterService(HierRouterGraph(config, ThresholdPolicy()), max_concurrency=2)
    with TestClient(create_app(service)) as client:
        routes = {}
        for alpha in (None, 0.05, 5.0):
            body = {"model": "hierrouter", "messages": QUERY, **({"alpha": alpha} if alpha else {})}
            ext = client.post("/v1/chat/completions", json=body).json()["hierrouter"]
            routes[alpha] = (ext["route"], ext["alpha"])
        assert routes == {
            None: (["tiny-a", "tiny-a"], 0.1),  # the config's α is the default
            0.05: (["tiny-a", "tiny-a"], 0.05),
            5.0: (["tiny-b", "tiny-b"], 5.0),
        }
        body = {"model": "hierrouter:alpha=50", "messages": QUERY}
        refused = client.post("/v1/chat/completions", json=body)
        error = refused.json()["error"]
        assert refused.status_code == 400 and error["code"] == "unsupported_alpha"
        assert error["param"] == "model" and "[0.01, 10]" in error["message"]
    service.close()
