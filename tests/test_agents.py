"""HierRouter inside real ``create_agent`` runs, on scripted fake chat models (no network).

Every assertion is exact: which member answered each model call, the tokens and δ of each call,
the run's C, the probability the policy gave its choice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelChoice, ModelRouterMiddleware
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from hierrouter_graph import FixedRoutePolicy, HierRouterDecisionModel, HierRouterMiddleware, PoolMember
from hierrouter_graph.agents.conversation import conversation_context
from hierrouter_graph.policy.protocol import Decision, PolicyTraits


class ScriptedModel(GenericFakeChatModel):
    """GenericFakeChatModel that accepts tools (the agent binds them) and records its prompts."""

    prompts: list[list[BaseMessage]]

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:  # type: ignore[override]
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
        self.prompts.append(list(messages))
        return super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs)


class WordCounter:
    """Tokens = whitespace words: exact, so δ sums can be checked by hand."""

    def count_prompt(self, messages: Sequence[BaseMessage]) -> int:
        return sum(len(m.text.split()) for m in messages)

    def count_text(self, text: str) -> int:
        return len(text.split())

    def truncate_middle(self, text: str, max_tokens: int, marker: str) -> str:
        return text


def reply(text: str, tokens_in: int, tokens_out: int, **kwargs: Any) -> AIMessage:
    usage = {"input_tokens": tokens_in, "output_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}
    return AIMessage(text, usage_metadata=usage, **kwargs)  # type: ignore[arg-type]


def member(name: str, rate: float, script: list[Any], counter: Any = None) -> PoolMember:
    model = ScriptedModel(messages=iter(script), prompts=[])
    return PoolMember(name=name, chat_model=model, base_rate=rate, counter=counter)


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def test_every_call_is_routed_with_exact_costs_around_a_tool_call() -> None:
    small = member(
        "small",
        0.001,
        [reply("", 10, 4, tool_calls=[{"name": "multiply", "args": {"a": 7, "b": 6}, "id": "c1"}])],
    )
    big = member("big", 0.01, [reply("The product is 42.", 30, 5)])
    policy = FixedRoutePolicy(["small", "big"], ["small", "big"])
    middleware = HierRouterMiddleware(policy, [small, big], alpha=0.005)
    agent = create_agent(small.chat_model, tools=[multiply], middleware=[middleware])

    out = agent.invoke({"messages": [HumanMessage("What is 7 times 6?")]})

    trace = out["hierrouter_trace"]
    assert [call["model"] for call in trace] == ["small", "big"]
    assert [call["stage"] for call in trace] == [0, 1]
    assert [(c["tokens_in"], c["tokens_out"]) for c in trace] == [(10, 4), (30, 5)]
    assert trace[0]["cost"] == pytest.approx(0.001 * 14)
    assert trace[1]["cost"] == pytest.approx(0.01 * 35)
    assert out["hierrouter_cost"] == pytest.approx(0.014 + 0.35)
    assert trace[1]["cumulative_cost"] == pytest.approx(out["hierrouter_cost"])
    assert [c["prob"] for c in trace] == [1.0, 1.0]
    assert all(c["alpha"] == 0.005 for c in trace)
    assert out["messages"][-1].text == "The product is 42."
    assert out["messages"][2].text == "42"  # the tool really ran between the two calls
    # the second member saw the tool's result: the routed call carries the whole conversation
    assert [m.text for m in big.chat_model.prompts[0]][-1] == "42"  # type: ignore[attr-defined]


class RecordingPolicy(PolicyTraits):
    """Scripted policy that records the state (context, stage, cost, α) it is asked in."""

    def __init__(self, pool: list[str], route: list[str], horizon: int) -> None:
        self._pool, self.route, self.horizon, self.seen = pool, route, horizon, []
        self.alpha_range = (0.001, 0.1)

    @property
    def pool(self) -> list[str]:
        return list(self._pool)

    def decide(
        self, context: str, stage: int, cost: float, *, alpha: float | None = None, **_: Any
    ) -> Decision:
        self.seen.append((context, stage, cost, alpha))
        name = self.route[len(self.seen) - 1]
        probs = {n: (0.75 if n == name else 0.25) for n in self._pool}
        return Decision(self._pool.index(name), name, probs)


def test_state_past_the_horizon_keeps_the_last_stage_and_alpha_comes_from_the_runtime_context() -> None:
    calls = [{"name": "multiply", "args": {"a": i, "b": 2}, "id": f"c{i}"} for i in range(3)]
    small = member(
        "small", 0.5, [reply("", 2, 1, tool_calls=[calls[0]]), reply("", 3, 1, tool_calls=[calls[2]])]
    )
    big = member("big", 1.0, [reply("", 4, 2, tool_calls=[calls[1]]), reply("done", 5, 1)])
    policy = RecordingPolicy(["small", "big"], ["small", "big", "small", "big"], horizon=2)
    agent = create_agent(
        small.chat_model, tools=[multiply], middleware=[HierRouterMiddleware(policy, [small, big])]
    )

    out = agent.invoke({"messages": [HumanMessage("double things")]}, context={"alpha": 0.02})

    assert [c["model"] for c in out["hierrouter_trace"]] == ["small", "big", "small", "big"]
    assert [s for _, s, _, _ in policy.seen] == [0, 1, 1, 1]  # call 2 and 3 keep stage L−1 = 1
    assert [c for _, _, c, _ in policy.seen] == pytest.approx([0.0, 1.5, 7.5, 9.5])
    assert {a for _, _, _, a in policy.seen} == {0.02}
    assert policy.seen[0][0] == "double things"
    assert policy.seen[2][0] == conversation_context(out["messages"][:5])
    assert [c["prob"] for c in out["hierrouter_trace"]] == [0.75] * 4
    assert out["hierrouter_cost"] == pytest.approx(9.5 + 6.0)

    # a second run on the same agent starts a new route: stage 0, cost 0
    policy.route += ["big"]
    big.chat_model.messages = iter([reply("again", 1, 1)])  # type: ignore[attr-defined]
    again = agent.invoke({"messages": [HumanMessage("hi")]}, context={"alpha": 0.02})
    assert [(c["stage"], c["model"]) for c in again["hierrouter_trace"]] == [(0, "big")]
    assert again["hierrouter_cost"] == pytest.approx(2.0)


def test_alpha_outside_the_policy_range_is_refused_naming_the_field() -> None:
    small = member("small", 0.5, [reply("x", 1, 1)])
    policy = RecordingPolicy(["small"], ["small"], horizon=2)
    agent = create_agent(small.chat_model, middleware=[HierRouterMiddleware(policy, [small])])
    with pytest.raises(ValueError, match="alpha"):
        agent.invoke({"messages": [HumanMessage("q")]}, context={"alpha": 5.0})


def test_streaming_tokens_come_from_the_routed_member_priced_by_its_counter() -> None:
    small = member("small", 0.1, ["unused"], WordCounter())
    big = member("big", 0.2, ["six times seven is 42"], WordCounter())
    policy = FixedRoutePolicy(["small", "big"], ["big"])
    agent = create_agent(small.chat_model, middleware=[HierRouterMiddleware(policy, [small, big])])

    tokens = []
    final: dict[str, Any] = {}
    for mode, payload in agent.stream(
        {"messages": [HumanMessage("what is 6 * 7")]}, stream_mode=["messages", "values"]
    ):
        if mode == "messages":
            tokens.append(payload[0].text)
        else:
            final = payload
    assert "".join(tokens) == "six times seven is 42"
    assert len(tokens) > 1  # token by token, not one piece
    assert [c["model"] for c in final["hierrouter_trace"]] == ["big"]
    assert (final["hierrouter_trace"][0]["tokens_in"], final["hierrouter_trace"][0]["tokens_out"]) == (5, 5)
    assert final["hierrouter_cost"] == pytest.approx(0.2 * 10)
    assert small.chat_model.prompts == []  # type: ignore[attr-defined]


def test_async_runs_route_through_awrap_model_call() -> None:
    small = member("small", 0.1, [reply("a", 3, 1)])
    big = member("big", 0.2, [reply("b", 5, 2)])
    policy = FixedRoutePolicy(["small", "big"], ["big"])
    agent = create_agent(small.chat_model, middleware=[HierRouterMiddleware(policy, [small, big])])
    out = asyncio.run(agent.ainvoke({"messages": [HumanMessage("q")]}))
    assert [c["model"] for c in out["hierrouter_trace"]] == ["big"]
    assert out["hierrouter_cost"] == pytest.approx(0.2 * 7)


def test_a_member_without_usage_or_counter_is_refused_by_name() -> None:
    small = member("small", 0.1, ["no usage here"])
    agent = create_agent(
        small.chat_model, middleware=[HierRouterMiddleware(FixedRoutePolicy(["small"], ["small"]), [small])]
    )
    with pytest.raises(ValueError, match="small: the chat model reported no usage_metadata"):
        agent.invoke({"messages": [HumanMessage("q")]})


def test_members_must_cover_the_policy_pool() -> None:
    small = member("small", 0.1, [])
    with pytest.raises(KeyError, match=r"names \['big'\], which members lacks"):
        HierRouterMiddleware(FixedRoutePolicy(["small", "big"], ["big"]), [small])


def test_decision_model_routes_model_router_middleware_once_per_run() -> None:
    small = member("small", 0.1, [])
    big = member("big", 0.2, [reply("first", 1, 1), reply("second", 1, 1)])
    policy = RecordingPolicy(["small", "big"], ["big"], horizon=2)
    policy.alpha_range = None  # type: ignore[assignment]
    router = ModelRouterMiddleware(
        choices={m.name: ModelChoice(model=m.chat_model, criteria=m.name) for m in (small, big)},
        instructions="the member HierRouter calls first",
        classifier=HierRouterDecisionModel(policy=policy),
    )
    out = create_agent(small.chat_model, middleware=[router]).invoke({"messages": [HumanMessage("hello")]})
    answer = out["model_route"]
    assert answer.choice == "big"
    assert answer.probabilities == {"small": 0.25, "big": 0.75}
    assert answer.confidence == 0.75
    assert policy.seen == [("hello", 0, 0.0, None)]  # one decision: stage 0, cost 0
    assert out["messages"][-1].text == "first"


def test_decision_model_refuses_labels_outside_the_pool() -> None:
    from langchain_core.decisions import Choice

    model = HierRouterDecisionModel(policy=FixedRoutePolicy(["a", "b"], ["a"]))
    with pytest.raises(ValueError, match=r"questions\['route'\].criteria: labels \['gpt'\]"):
        model.invoke({"state": "q", "questions": {"route": Choice(instructions="x", criteria={"gpt": "y"})}})


class Product(BaseModel):
    """The answer as data."""

    value: int


def test_structured_output_comes_from_the_routed_member_after_a_tool_call() -> None:
    """``response_format`` keeps working: the agent binds its structured-output tool to whichever
    member the policy chose, and that member's tool call becomes ``structured_response``."""
    small = member(
        "small",
        0.001,
        [reply("", 10, 4, tool_calls=[{"name": "multiply", "args": {"a": 7, "b": 6}, "id": "c1"}])],
    )
    big = member(
        "big", 0.01, [reply("", 30, 6, tool_calls=[{"name": "Product", "args": {"value": 42}, "id": "c2"}])]
    )
    policy = FixedRoutePolicy(["small", "big"], ["small", "big"])
    middleware = HierRouterMiddleware(policy, [small, big], alpha=0.005)
    agent = create_agent(
        small.chat_model, tools=[multiply], middleware=[middleware], response_format=ToolStrategy(Product)
    )

    out = agent.invoke({"messages": [HumanMessage("What is 7 times 6? Answer as data.")]})

    assert out["structured_response"] == Product(value=42)
    assert [call["model"] for call in out["hierrouter_trace"]] == ["small", "big"]
    assert out["hierrouter_cost"] == pytest.approx(0.001 * 14 + 0.01 * 36)
    assert out["messages"][2].text == "42"  # the tool ran before the structured answer
    assert len(big.chat_model.prompts) == 1 and len(small.chat_model.prompts) == 1  # type: ignore[attr-defined]
