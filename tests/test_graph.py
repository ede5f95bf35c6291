from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from transformers import AutoTokenizer

from hierrouter_graph import (
    FixedRoutePolicy,
    HierRouterGraph,
    InvalidQueryError,
    PolicyMismatchError,
    RouterConfig,
    RouterPolicy,
    create_hierrouter_graph,
)
from hierrouter_graph.hop import extend_context
from hierrouter_graph.policy.encoder import TextEncoder
from tests.trace_compare import assert_same_traces

QUERY = "What is seven times six?"


def _router(config: RouterConfig, encoder: TextEncoder, **kw: Any) -> HierRouterGraph:
    return HierRouterGraph(
        config, RouterPolicy.for_encoder(config.model_names, encoder, horizon=config.horizon), **kw
    )


def test_topology_has_one_node_per_model(tiny_config: RouterConfig, encoder: TextEncoder) -> None:
    drawn = _router(tiny_config, encoder).get_graph()
    assert set(drawn.nodes) == {"__start__", "ingest", "router", "tiny-a", "tiny-b", "finalize", "__end__"}
    edges = {(e.source, e.target, e.conditional) for e in drawn.edges}
    for model in ("tiny-a", "tiny-b"):
        assert ("router", model, True) in edges
        assert (model, "router", False) in edges
    assert ("router", "finalize", True) in edges
    assert "router -.-> tiny-a" in drawn.draw_mermaid()


def test_factory_returns_an_uncompiled_state_graph(tiny_config: RouterConfig) -> None:
    builder = create_hierrouter_graph(tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-a"]))
    assert isinstance(builder, StateGraph)


@pytest.mark.parametrize("horizon", [1, 2, 3])
def test_exactly_l_model_calls(tiny_specs, tmp_path: Path, encoder: TextEncoder, horizon: int) -> None:
    config = RouterConfig(
        models=tiny_specs, horizon=horizon, stage_prompt_fallback="Refine the answer.", cache_dir=tmp_path
    )
    router = _router(config, encoder)
    visited = [name for chunk in router.stream(QUERY, stream_mode="updates") for name in chunk]
    model_calls = [n for n in visited if n in config.model_names]
    assert len(model_calls) == horizon
    assert visited.count("router") == horizon + 1
    assert visited[-1] == "finalize"
    out = router.invoke(QUERY)
    assert [h["stage"] for h in out["trace"]] == list(range(horizon))
    assert out["trace"][0]["prompt"].startswith(config.stage_prompt(0))


def test_cost_is_recomputed_from_the_tokenizer(tiny_config: RouterConfig, tiny_folders, tiny_specs) -> None:
    router = HierRouterGraph(tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-b", "tiny-a"]))
    out = router.invoke(QUERY)
    specs = {s.name: s for s in tiny_specs}
    expected = 0.0
    context = QUERY
    for hop in out["trace"]:
        spec = specs[hop["model"]]
        tok = AutoTokenizer.from_pretrained(str(tiny_folders[hop["model"]]))
        chat = ([{"role": "system", "content": spec.system_prompt}] if spec.system_prompt else []) + [
            {"role": "user", "content": f"{tiny_config.stage_prompt(hop['stage'])}\n\n{context}"}
        ]
        rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        tokens_in = len(tok(rendered)["input_ids"])
        tokens_out = len(tok(hop["reply"], add_special_tokens=False)["input_ids"])
        assert (hop["tokens_in"], hop["tokens_out"]) == (tokens_in, tokens_out)
        assert hop["cost"] == pytest.approx(spec.base_rate * (tokens_in + tokens_out))
        expected += spec.base_rate * (tokens_in + tokens_out)
        context = extend_context(context, hop["reply"])
        assert hop["cumulative_cost"] == pytest.approx(expected)
    assert [h["model"] for h in out["trace"]] == ["tiny-b", "tiny-a"]
    assert out["cost"] == pytest.approx(expected)
    assert out["context"] == context
    assert out["answer"] == out["trace"][-1]["reply"]  # the final hop's reply


def test_trace_records_the_policy_distribution(tiny_config: RouterConfig, encoder: TextEncoder) -> None:
    out = _router(tiny_config, encoder).invoke(QUERY)
    for hop in out["trace"]:
        assert set(hop["probs"]) == {"tiny-a", "tiny-b"}
        assert sum(hop["probs"].values()) == pytest.approx(1.0)
        assert hop["prob"] == hop["probs"][hop["model"]] == max(hop["probs"].values())  # greedy
        assert isinstance(hop["value"], float)
    json.dumps(out["trace"])  # plain JSON


def test_messages_in_messages_out(tiny_config: RouterConfig) -> None:
    router = HierRouterGraph(tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-a"]))
    out = router.invoke({"messages": [HumanMessage("hello"), AIMessage("hi"), HumanMessage(QUERY)]})
    assert out["query"] == QUERY
    assert len(out["messages"]) == 4
    reply = out["messages"][-1]
    assert isinstance(reply, AIMessage) and reply.content == out["answer"]
    assert reply.response_metadata["route"] == ["tiny-a", "tiny-a"]
    # A plain query leaves messages alone.
    assert not router.invoke({"query": QUERY}).get("messages")


def test_works_as_a_subgraph(tiny_config: RouterConfig) -> None:
    inner = create_hierrouter_graph(
        tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-a", "tiny-b"])
    )
    parent = StateGraph(MessagesState)
    parent.add_node("hierrouter", inner.compile())
    parent.add_edge(START, "hierrouter")
    out = parent.compile().invoke({"messages": [HumanMessage(QUERY)]})
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage]
    assert out["messages"][-1].response_metadata["route"] == ["tiny-a", "tiny-b"]


def test_checkpointer_round_trip(tiny_config: RouterConfig) -> None:
    router = HierRouterGraph(
        tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-a"]), checkpointer=InMemorySaver()
    )
    thread = {"configurable": {"thread_id": "t1"}}
    first = router.invoke({"messages": [HumanMessage(QUERY)]}, thread)
    saved = router.graph.get_state(thread).values
    assert saved["trace"] == first["trace"] and saved["cost"] == first["cost"]
    second = router.invoke({"messages": [HumanMessage("And eight times six?")]}, thread)
    assert second["query"] == "And eight times six?"
    assert len(second["trace"]) == 2  # the new turn starts a fresh episode
    assert len(second["messages"]) == 4


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"query": ""}, "non-empty"),
        ({"query": "   "}, "non-empty"),
        ({"query": 42}, "got int"),
        ({}, "needs 'query'"),
    ],
)
def test_bad_queries_raise(tiny_config: RouterConfig, payload: dict[str, Any], match: str) -> None:
    router = HierRouterGraph(tiny_config, FixedRoutePolicy(tiny_config.model_names, ["tiny-a"]))
    with pytest.raises(InvalidQueryError, match=match):
        router.invoke(payload)


def test_long_context_is_truncated_for_model_and_encoder(
    tiny_specs, tmp_path: Path, encoder: TextEncoder
) -> None:
    spec = tiny_specs[0].model_copy(update={"max_input_tokens": 200})
    config = RouterConfig(models=[spec, tiny_specs[1]], cache_dir=tmp_path)
    router = _router(config, encoder)
    long_query = "The quick brown fox jumps over the lazy dog. " * 400  # far over 512 encoder tokens
    router = HierRouterGraph(config, FixedRoutePolicy(config.model_names, ["tiny-a"]))
    out = router.invoke(long_query)
    for hop in out["trace"]:
        assert hop["tokens_in"] <= 200
        assert "[…]" in hop["prompt"]
        assert hop["prompt"].startswith(config.stage_prompt(hop["stage"]))
    decision = RouterPolicy.for_encoder(config.model_names, encoder).decide(long_query, 0, 0.0)
    assert decision.model in config.model_names  # the encoder truncates to max_seq_len itself


def test_unknown_model_names_are_rejected(tiny_config: RouterConfig) -> None:
    with pytest.raises(ValueError, match="unknown models"):
        FixedRoutePolicy(tiny_config.model_names, ["tiny-a", "gpt-9"])
    with pytest.raises(KeyError, match="unknown models"):
        create_hierrouter_graph(
            tiny_config,
            FixedRoutePolicy(tiny_config.model_names, ["tiny-a"]),
            chat_models={"gpt-9": object()},
        )  # type: ignore[dict-item]
    with pytest.raises(PolicyMismatchError, match="pool"):
        create_hierrouter_graph(tiny_config, FixedRoutePolicy(["tiny-b", "tiny-a"], ["tiny-a"]))


def test_batch_equals_sequential_invokes(tiny_config: RouterConfig, encoder: TextEncoder) -> None:
    router = _router(tiny_config, encoder)
    queries = [QUERY, "def add(a, b):", "Which planet is largest?", "What is 8 * 9?"]
    batched = router.batch(queries)
    sequential = [router.invoke(q) for q in queries]
    assert_same_traces([b["trace"] for b in batched], [s["trace"] for s in sequential])
    assert all(len(b["trace"]) == tiny_config.horizon for b in batched)


def test_supplied_chat_models_need_a_price(tiny_specs, tmp_path: Path) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from hierrouter_graph.graph import build_pool

    unpriced = tiny_specs[0].model_copy(update={"base_rate": None, "name": "api-model"})
    config = RouterConfig(models=[unpriced, tiny_specs[1]], cache_dir=tmp_path)
    with pytest.raises(ValueError, match=r"models\[api-model\]\.base_rate"):
        build_pool(config, {"api-model": FakeListChatModel(responses=["x"])})
    sized = unpriced.model_copy(update={"name": "api-3B"})
    config = RouterConfig(models=[sized, tiny_specs[1]], cache_dir=tmp_path)
    assert build_pool(config, {"api-3B": FakeListChatModel(responses=["x"])})[
        "api-3B"
    ].base_rate == pytest.approx(0.003)
