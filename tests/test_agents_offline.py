"""A real ``create_agent`` run routed by ``HierRouterMiddleware`` over real offline members
(SmolLM2-135M and Qwen2.5-Coder-0.5B through the library's member builder)."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage

from hierrouter_graph import FixedRoutePolicy, HierRouterMiddleware, ModelSpec, RouterConfig, build_pool

pytestmark = pytest.mark.integration


def test_agent_calls_are_answered_and_priced_by_the_routed_local_member() -> None:
    config = RouterConfig(
        models=[
            ModelSpec(name="smollm2-135m", source="offline:smollm2-135m-instruct", max_new_tokens=16),
            ModelSpec(
                name="qwen2.5-coder-0.5b", source="offline:qwen2.5-coder-0.5b-instruct", max_new_tokens=16
            ),
        ],
        horizon=2,
    )
    pool = build_pool(config)
    for route in (["smollm2-135m"], ["qwen2.5-coder-0.5b"]):
        policy = FixedRoutePolicy(config.model_names, route)
        agent = create_agent(pool["smollm2-135m"].chat_model, middleware=[HierRouterMiddleware(policy, pool)])
        question = HumanMessage("What is the capital of France? Answer in one word.")
        out = agent.invoke({"messages": [question]})
        (call,) = out["hierrouter_trace"]
        member = pool[route[0]]
        assert call["model"] == route[0]
        assert member.counter is not None
        assert call["tokens_in"] == member.counter.count_prompt([question])
        assert call["tokens_out"] == member.counter.count_text(out["messages"][-1].text) > 0
        assert out["hierrouter_cost"] == pytest.approx(
            member.base_rate * (call["tokens_in"] + call["tokens_out"])
        )
