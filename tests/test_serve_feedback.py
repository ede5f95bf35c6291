"""Which member answered, on every chunk and header; the route log and ``POST /v1/feedback``.

The real ``openai`` client drives the real app in process: its ``http_client`` is FastAPI's
TestClient (an ``httpx.Client``), so no socket is opened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from hierrouter_graph import HierRouterGraph, ModelSpec, RouterConfig
from hierrouter_graph.hop import extend_context
from hierrouter_graph.policy.protocol import FixedRoutePolicy
from hierrouter_graph.serve import FeedbackStore, RouterService, create_app

QUERY = "What is seven times six?"
ROUTE = ["tiny-b", "tiny-a"]


@pytest.fixture(scope="module")
def served(tiny_specs: list[ModelSpec], tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve-feedback")
    config = RouterConfig(models=tiny_specs, horizon=2, cache_dir=root / "cache")
    store = FeedbackStore(root / "feedback.sqlite")
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ROUTE))
    service = RouterService(router, max_concurrency=2, feedback=store)
    with TestClient(create_app(service)) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)
        yield client, http, store
    service.close()


def test_completion_names_members_and_cost_in_body_and_headers(served) -> None:
    client, _, store = served
    raw = client.chat.completions.with_raw_response.create(
        model="hierrouter", messages=[{"role": "user", "content": QUERY}]
    )
    completion = raw.parse()
    ext = completion.model_extra["hierrouter"]  # type: ignore[index]
    assert ext["members"] == ROUTE
    assert raw.headers["X-HierRouter-Members"] == "tiny-b,tiny-a"
    assert float(raw.headers["X-HierRouter-Cost"]) == ext["cost"]
    assert ext["cost"] == pytest.approx(sum(h["cost"] for h in ext["trace"]))
    assert raw.headers["X-HierRouter-Completion-Id"] == completion.id

    # the route was logged when it was served, keyed by the completion id
    (logged,) = [r for r in _all_routes(store) if r[0] == completion.id]
    assert json.loads(logged[1]) == ROUTE
    hops = store._db.execute(  # the test reads the raw rows the store wrote
        "SELECT stage, context, cost_before, action, prob, hop_cost FROM hops WHERE completion_id = ? "
        "ORDER BY stage",
        (completion.id,),
    ).fetchall()
    trace = ext["trace"]
    assert [h[0] for h in hops] == [0, 1]
    assert hops[0][1] == QUERY and hops[1][1] == extend_context(QUERY, trace[0]["reply"])
    assert [h[2] for h in hops] == pytest.approx([0.0, trace[0]["cost"]])
    assert [h[3] for h in hops] == ROUTE and [h[4] for h in hops] == [1.0, 1.0]
    assert [h[5] for h in hops] == pytest.approx([trace[0]["cost"], trace[1]["cost"]])


def _all_routes(store: FeedbackStore) -> list[tuple[str, str]]:
    return store._db.execute("SELECT completion_id, route FROM routes").fetchall()


def test_every_streamed_chunk_names_its_members_and_cost(served) -> None:
    client, _, _ = served
    chunks = list(
        client.chat.completions.create(
            model="hierrouter",
            messages=[{"role": "user", "content": QUERY}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    extensions = [chunk.model_extra["hierrouter"] for chunk in chunks]  # type: ignore[index]
    assert extensions[0] == {"members": [], "cost": 0.0}
    content = [
        (c, e) for c, e in zip(chunks, extensions, strict=True) if c.choices and c.choices[0].delta.content
    ]
    assert content, "the tiny members always write something"
    final_cost = extensions[-1]["cost"]
    first_hop_cost = extensions[-1]["trace"][0]["cost"]
    for _, ext in content:  # the last stage streams live: tiny-a answers, after tiny-b's hop was paid
        assert ext["members"] == ROUTE
        assert ext["cost"] == pytest.approx(first_hop_cost)
    assert extensions[-2]["members"] == ROUTE and extensions[-2]["cost"] == pytest.approx(final_cost)
    assert extensions[-1]["members"] == ROUTE  # the usage chunk too


def test_graph_custom_stream_events_carry_each_hops_member(
    tiny_specs: list[ModelSpec], tmp_path: Path
) -> None:
    config = RouterConfig(models=tiny_specs, horizon=2, cache_dir=tmp_path / "cache")
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ROUTE))
    events = [p["hierrouter"] for m, p in router.stream(QUERY, stream_mode=["custom"]) if m == "custom"]
    assert [(e["event"], e["stage"], e["member"]) for e in events] == [
        ("hop_start", 0, "tiny-b"),
        ("hop_end", 0, "tiny-b"),
        ("hop_start", 1, "tiny-a"),
        ("hop_end", 1, "tiny-a"),
    ]
    assert events[3]["cumulative_cost"] == pytest.approx(events[1]["cost"] + events[3]["cost"])


def test_feedback_by_completion_or_thread_and_bad_feedback_names_the_field(served) -> None:
    client, http, store = served
    completion = client.chat.completions.create(
        model="hierrouter", messages=[{"role": "user", "content": QUERY}]
    )
    ok = http.post("/v1/feedback", json={"completion_id": completion.id, "label": "good", "note": "right"})
    assert ok.status_code == 200
    assert ok.json() == {
        "object": "feedback", "completion_id": completion.id, "score": 1.0, "label": "good", "note": "right",
    }  # fmt: skip
    cases = [
        ({"completion_id": completion.id, "score": 0.2}, 409, "completion_id"),
        ({"completion_id": "chatcmpl-nope", "score": 0.2}, 404, "completion_id"),
        ({"thread_id": "no-such-thread", "score": 0.2}, 404, "thread_id"),
        ({"completion_id": completion.id, "score": 1.5}, 400, "score"),
        ({"completion_id": completion.id, "score": True}, 400, "score"),
        ({"completion_id": completion.id, "label": "great"}, 400, "label"),
        ({"completion_id": completion.id}, 400, "score"),
        ({"score": 0.5}, 400, "completion_id"),
        ({"completion_id": completion.id, "score": 0.5, "stars": 5}, 400, "stars"),
        ({"completion_id": completion.id, "score": 0.5, "note": 3}, 400, "note"),
    ]
    for body, status, param in cases:
        response = http.post("/v1/feedback", json=body)
        assert (response.status_code, response.json()["error"]["param"]) == (status, param), body
        assert response.json()["error"]["message"].startswith(param)
    scored = [r for r in store.scored_routes() if r.completion_id == completion.id]
    assert [(r.score, [h.action for h in r.hops]) for r in scored] == [(1.0, ROUTE)]


def test_feedback_on_a_thread_scores_its_latest_route(tmp_path: Path) -> None:
    store = FeedbackStore(tmp_path / "f.sqlite")
    output = {"query": "q", "cost": 0.3, "trace": [
        {"stage": 0, "model": "a", "prob": 0.6, "reply": "r", "cost": 0.3, "cumulative_cost": 0.3},
    ]}  # fmt: skip
    store.log_route("c1", output, 0.005, thread_id="t", created=1.0)
    store.log_route("c2", output, 0.005, thread_id="t", created=2.0)
    assert store.add_feedback(thread_id="t", score=0.25)["completion_id"] == "c2"
    (route,) = store.scored_routes()
    assert (route.completion_id, route.score, route.hops[0].prob, route.hops[0].alpha) == (
        "c2",
        0.25,
        0.6,
        0.005,
    )


_WRITER = """
import sys
from hierrouter_graph.serve import FeedbackStore
store = FeedbackStore(sys.argv[1])
out = {"query": "q", "cost": 0.1, "trace": [
    {"stage": 0, "model": "a", "prob": 0.5, "reply": "r", "cost": 0.1, "cumulative_cost": 0.1}]}
i = 0
while True:
    store.log_route(f"c{i}", out, 0.005)
    store.add_feedback(completion_id=f"c{i}", score=0.5)
    print(i, flush=True)
    i += 1
"""


def test_nothing_acknowledged_is_lost_on_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "f.sqlite"
    root = Path(__file__).parents[1]
    command = [sys.executable, "-c", _WRITER, str(db)]
    env = {**os.environ, "PYTHONPATH": str(root)}
    writer = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=root, env=env)
    assert writer.stdout is not None
    acknowledged = -1
    for line in writer.stdout:
        acknowledged = int(line)
        if acknowledged >= 30:
            break
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    store = FeedbackStore(db)
    counts = store.counts()
    assert counts["feedback"] >= acknowledged + 1
    assert counts["routes"] in (counts["feedback"], counts["feedback"] + 1)  # a route waits for its score
    assert counts["hops"] == counts["routes"]  # never a route without its hop
