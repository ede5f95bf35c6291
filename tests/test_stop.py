"""Early exit (``RouterConfig.allow_stop``): the STOP action in the policy and the graph.

The pool is two endpoint-like fake models that report token usage, so every hop's price is known
exactly and every call is counted: "nothing runs and nothing is charged after STOP" is checked
against the models themselves, not against the trace the graph writes about them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import (
    STOP_ACTION,
    Decision,
    FixedRoutePolicy,
    HierRouterGraph,
    ModelSpec,
    PolicyMismatchError,
    PolicyTraits,
    RouterConfig,
    RouterPolicy,
)
from hierrouter_graph.graph import create_hierrouter_graph
from hierrouter_graph.policy.encoder import TextEncoder

POOL = ["alpha", "beta"]
RATES = {"alpha": 0.001, "beta": 0.01}
REPLIES = {"alpha": "Alpha thinks the answer is four.", "beta": "Beta says four."}
QUERY = "What is two plus two?"


class CountingChat(FakeListChatModel):
    """A fixed reply; usage = words of the prompt and of the reply; every call counted."""

    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        text = self.responses[0]
        words_in = sum(len(str(m.content).split()) for m in messages)
        usage = {"input_tokens": words_in, "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def chats() -> dict[str, CountingChat]:
    return {name: CountingChat(responses=[REPLIES[name]]) for name in POOL}


def config(horizon: int = 3, allow_stop: bool = True) -> RouterConfig:
    return RouterConfig(
        models=[ModelSpec(name=n, source=f"fake:{n}", base_rate=RATES[n]) for n in POOL],
        horizon=horizon,
        allow_stop=allow_stop,
        stage_prompt_fallback="Refine the answer.",
    )


def hand_cost(cfg: RouterConfig, route: list[str]) -> float:
    """Σ rate · (words of instruction + context, words of reply): the cost, recomputed by hand."""
    context, total = QUERY, 0.0
    for stage, name in enumerate(route):
        prompt = f"{cfg.stage_prompt(stage)}\n\n{context}"
        total += RATES[name] * (len(prompt.split()) + len(REPLIES[name].split()))
        context = f"{context}\n\n{REPLIES[name]}"
    return total


def stop_policy(encoder: TextEncoder, stop_bias: float = 50.0) -> RouterPolicy:
    """A STOP policy that wants to stop as early as it is allowed to: STOP's logit is huge."""
    torch.manual_seed(0)
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=3, allow_stop=True)
    with torch.no_grad():
        policy.actor.bias.copy_(torch.tensor([0.0, 0.0, stop_bias]))
    return policy


# ------------------------------------------------------------------------------------ policy


def test_stop_policy_has_one_more_logit_masked_at_stage_0(encoder: TextEncoder) -> None:
    policy = stop_policy(encoder)
    assert policy.actions == [*POOL, STOP_ACTION] and policy.actor.out_features == 3
    embeddings = encoder.encode(["a", "b", "c"])
    logits, _ = policy(embeddings, torch.tensor([0, 1, 2]), torch.zeros(3))
    probs = torch.softmax(logits, dim=-1)
    assert probs[0, 2] == 0.0  # STOP impossible before the first hop, however much the policy wants it
    assert probs[1, 2] > 0.99 and probs[2, 2] > 0.99
    assert torch.isfinite(logits).all()  # masked, not -inf: entropy and log-softmax stay finite
    first = policy.decide(QUERY, 0, 0.0)
    assert first.model in POOL and first.probs[STOP_ACTION] == 0.0 and not first.stop
    generator = torch.Generator().manual_seed(0)
    assert all(
        policy.decide(QUERY, 0, 0.0, sample=True, generator=generator).model in POOL for _ in range(50)
    )
    later = policy.decide(QUERY, 1, 0.01)
    assert later.stop and later.index == 2 and set(later.probs) == {*POOL, STOP_ACTION}


def test_policy_without_stop_is_unchanged(encoder: TextEncoder) -> None:
    policy = RouterPolicy.for_encoder(POOL, encoder, horizon=2)
    assert policy.actions == POOL and policy.actor.out_features == 2 and not policy.allow_stop
    assert STOP_ACTION not in policy.decide(QUERY, 1, 0.0).probs


def test_save_load_round_trip_and_mismatches_name_allow_stop(tmp_path: Path, encoder: TextEncoder) -> None:
    policy = stop_policy(encoder)
    policy.save(tmp_path / "stop")
    meta = json.loads((tmp_path / "stop" / "policy.json").read_text())
    assert meta["allow_stop"] is True
    loaded = RouterPolicy.load(tmp_path / "stop", pool=POOL, encoder=encoder, horizon=3, allow_stop=True)
    assert loaded.allow_stop and loaded.actions == policy.actions
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())
    assert loaded.decide(QUERY, 1, 0.0) == policy.decide(QUERY, 1, 0.0)
    with pytest.raises(PolicyMismatchError, match="allow_stop=True but the config has allow_stop=False"):
        RouterPolicy.load(tmp_path / "stop", allow_stop=False)

    RouterPolicy.for_encoder(POOL, encoder, horizon=3).save(tmp_path / "plain")
    with pytest.raises(PolicyMismatchError, match="allow_stop=False but the config has allow_stop=True"):
        RouterPolicy.load(tmp_path / "plain", allow_stop=True)
    # a file written before STOP existed has no allow_stop key: it is a policy without STOP
    meta_path = tmp_path / "plain" / "policy.json"
    old = json.loads(meta_path.read_text())
    del old["allow_stop"]
    meta_path.write_text(json.dumps(old))
    assert not RouterPolicy.load(tmp_path / "plain", allow_stop=False).allow_stop
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        RouterPolicy.load(tmp_path / "plain", allow_stop=True)

    # the graph refuses either mismatch, from a folder and from an instance
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        HierRouterGraph(config(allow_stop=False), policy=tmp_path / "stop", chat_models=chats())
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        HierRouterGraph(config(allow_stop=True), policy=tmp_path / "plain", chat_models=chats())
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        HierRouterGraph(config(allow_stop=False), policy=policy, chat_models=chats())
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        HierRouterGraph(config(allow_stop=False), FixedRoutePolicy(POOL, ["alpha"], stop=True), chats())


# ------------------------------------------------------------------------------------ graph


@pytest.mark.parametrize("route", [["alpha"], ["beta", "alpha"], ["alpha", "beta", "beta"]])
def test_graph_stops_after_the_route_with_exact_hops_and_cost(route: list[str]) -> None:
    cfg = config(horizon=3)
    models = chats()
    router = HierRouterGraph(cfg, FixedRoutePolicy(POOL, route, stop=True), chat_models=models)
    visited = [name for chunk in router.stream(QUERY, stream_mode="updates") for name in chunk]
    assert [n for n in visited if n in POOL] == route
    assert visited[-1] == "finalize" and visited.count("router") == len(route) + 1

    out = router.invoke(QUERY)
    assert [h["model"] for h in out["trace"]] == route
    assert [h["stage"] for h in out["trace"]] == list(range(len(route)))
    assert out["stopped"] is (len(route) < 3)
    assert out["cost"] == pytest.approx(hand_cost(cfg, route), abs=1e-12)  # nothing charged after STOP
    assert out["trace"][-1]["cumulative_cost"] == out["cost"]
    assert out["answer"] == REPLIES[route[-1]]  # the last hop's reply, early exit or not
    assert {n: models[n].calls for n in POOL} == {n: 2 * route.count(n) for n in POOL}  # stream + invoke


def test_graph_with_a_stop_policy_never_stops_before_the_first_hop(encoder: TextEncoder) -> None:
    models = chats()
    router = HierRouterGraph(config(horizon=3), stop_policy(encoder), chat_models=models)
    out = router.invoke({"messages": [HumanMessage(QUERY)]})
    assert len(out["trace"]) == 1 and out["stopped"] is True  # one hop, then STOP as soon as allowed
    assert sum(m.calls for m in models.values()) == 1
    assert out["trace"][0]["probs"][STOP_ACTION] == 0.0
    assert out["messages"][-1].content == out["answer"] == out["trace"][0]["reply"]


def test_stop_at_stage_0_or_without_allow_stop_fails_loudly() -> None:
    class StopsAtOnce(PolicyTraits):
        """A misbehaving RoutingPolicy (no mask): STOP before any hop."""

        allow_stop = True

        @property
        def pool(self) -> list[str]:
            return list(POOL)

        def decide(self, context: str, stage: int, cost: float, **_: Any) -> Decision:
            return Decision(len(POOL), STOP_ACTION, {STOP_ACTION: 1.0})

    models = chats()
    graph = create_hierrouter_graph(config(), StopsAtOnce(), chat_models=models).compile()
    with pytest.raises(PolicyMismatchError, match="before the first hop"):
        graph.invoke({"query": QUERY})
    assert sum(m.calls for m in models.values()) == 0

    with pytest.raises(ValueError, match="at least one model"):
        FixedRoutePolicy(POOL, [], stop=True)


def test_without_allow_stop_short_routes_repeat_and_the_output_says_not_stopped() -> None:
    cfg = config(horizon=3, allow_stop=False)
    out = HierRouterGraph(cfg, FixedRoutePolicy(POOL, ["beta"]), chat_models=chats()).invoke(QUERY)
    assert [h["model"] for h in out["trace"]] == ["beta"] * 3 and out["stopped"] is False
    assert out["cost"] == pytest.approx(hand_cost(cfg, ["beta"] * 3), abs=1e-12)


def test_default_policy_follows_allow_stop() -> None:
    from hierrouter_graph.defaults import default_config, default_policy

    assert (
        default_policy(default_config(allow_stop=True)).allow_stop is True
    )  # never the shipped non-STOP one
    assert default_policy(default_config()).allow_stop is False
