"""Token streaming: ``stream_mode="messages"`` yields each hop's tokens, for micro-batched and plain
local members, and the pieces add up to the hop's reply; durable threads on SQLite."""

from __future__ import annotations

from pathlib import Path

from langchain_core.messages import AIMessageChunk, HumanMessage

from hierrouter_graph import HierRouterGraph, RouterConfig
from hierrouter_graph.checkpoint import sqlite_checkpointer
from hierrouter_graph.graph import build_pool
from hierrouter_graph.microbatch import MicroBatchedChatModel


def _with_batch_size(config: RouterConfig, size: int) -> RouterConfig:
    models = [spec.model_copy(update={"max_batch_size": size}) for spec in config.models]
    return RouterConfig.model_validate({**config.model_dump(), "models": models})


def _stream_hops(router: HierRouterGraph, query: str) -> tuple[dict[str, list[str]], dict]:
    pieces: dict[str, list[str]] = {}
    final: dict = {}
    for mode, payload in router.stream(query, stream_mode=["messages", "values"]):
        if mode == "values":
            final = payload
            continue
        message, meta = payload
        if meta["langgraph_node"] in router.config.model_names:
            assert isinstance(message, AIMessageChunk)
            pieces.setdefault(meta["langgraph_checkpoint_ns"], []).append(message.text)
    return pieces, final


def test_micro_batched_members_stream_their_tokens(tiny_config: RouterConfig) -> None:
    router = HierRouterGraph(tiny_config)
    assert all(isinstance(m.chat_model, MicroBatchedChatModel) for m in build_pool(tiny_config).values())
    pieces, final = _stream_hops(router, "What is seven times six?")
    replies = [hop["reply"] for hop in final["trace"]]
    assert ["".join(p) for p in pieces.values()] == replies  # one stream per hop, in order
    assert all(len([p for p in hop if p]) >= 2 for hop in pieces.values())  # token by token, not whole
    invoked = router.invoke("What is seven times six?")  # streaming changes nothing
    assert (final["answer"], final["trace"]) == (invoked["answer"], invoked["trace"])


def test_plain_pipeline_members_stream_too(tiny_config: RouterConfig) -> None:
    router = HierRouterGraph(_with_batch_size(tiny_config, 1))
    pieces, final = _stream_hops(router, "What is seven times six?")
    assert ["".join(p) for p in pieces.values()] == [hop["reply"] for hop in final["trace"]]
    assert all(len([p for p in hop if p]) >= 2 for hop in pieces.values())


def test_streamed_and_silent_requests_share_one_generate(tiny_config: RouterConfig) -> None:
    member = build_pool(tiny_config)["tiny-a"]
    generator = member.batch_generate
    prompts = [[HumanMessage("What is seven times six?")], [HumanMessage("def add(a, b):")]]
    alone = [generator.generate_scored([p])[0][0] for p in prompts]  # type: ignore[union-attr]
    got: list[str] = []
    together = generator.generate_scored(prompts, on_text=[got.append, None])  # type: ignore[union-attr]
    assert [text for text, _ in together] == alone
    assert "".join(got) == alone[0] and len(got) >= 2


def test_threads_survive_a_new_router_on_the_same_sqlite_file(
    tiny_config: RouterConfig, tmp_path: Path
) -> None:
    db = tmp_path / "threads.sqlite"
    thread = {"configurable": {"thread_id": "conversation-1"}}
    first = HierRouterGraph(tiny_config, checkpointer=sqlite_checkpointer(db))
    first.invoke({"messages": [HumanMessage("What is seven times six?")]}, thread)
    first.invoke({"messages": [HumanMessage("And eight times nine?")]}, thread)

    reopened = HierRouterGraph(tiny_config, checkpointer=sqlite_checkpointer(db))
    messages = reopened.graph.get_state(thread).values["messages"]
    assert [(m.type, m.text) for m in messages][::2] == [
        ("human", "What is seven times six?"),
        ("human", "And eight times nine?"),
    ]
    assert [m.type for m in messages] == ["human", "ai", "human", "ai"]
    out = reopened.invoke({"messages": [HumanMessage("Thanks!")]}, thread)
    assert [m.type for m in out["messages"]] == ["human", "ai"] * 3
