"""DescriptorPolicy: a router whose pool can change after training without touching its weights.

The PPO and graph tests reuse the scripted pool of ``tests/training/test_ppo.py`` (planner →
solver is the only route that scores), described by model cards, so "the trained policy sends the
second hop to whatever member is described as the solver" is a checkable, exact statement.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from hierrouter_graph import HierRouterGraph, ModelSpec, RouterConfig, RouterPolicy
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import extend_context
from hierrouter_graph.policy.dynamic import (
    KIND_PHRASES,
    DescriptorPolicy,
    describe,
    load_saved_policy,
    saved_policy_kind,
)
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.protocol import STOP_ACTION
from hierrouter_graph.policy.signature import PolicyMismatchError
from tests.training.scripted_pool import BEST_ROUTE, PLAN, POOL, ScriptedChat, make_items, reply
from training.cli.ppo import parse_args, ppo_args_from
from training.rl.args import PPOArgs
from training.rl.env import HierRouterEnv
from training.rl.setup import make_policy
from training.rl.train import TrainResult, train

CARDS = {
    "planner": "Writes a short step-by-step plan for a word problem; never states the final number.",
    "solver": "Computes the exact final numeric answer, but only when a plan is already in the context.",
    "guesser": "Answers instantly with a guessed number, without reading the question.",
    "critic": "Reviews the previous reply and points out mistakes in one sentence.",
}
RATES = {"planner": 0.001, "solver": 0.002, "guesser": 0.001, "critic": 0.003}


def spec(name: str, role: str | None = None) -> ModelSpec:
    """A member named ``name`` described (and priced) as ``role`` (default: itself)."""
    role = role or name
    return ModelSpec(name=name, source=f"fake:{role}", base_rate=RATES[role], description=CARDS[role])


def chats(roles: dict[str, str]) -> dict[str, ScriptedChat]:
    """Scripted chat models by member name; ``roles`` maps member name → scripted behaviour."""
    return {name: ScriptedChat(responses=["unused"], role=role) for name, role in roles.items()}


def config_of(*members: ModelSpec, horizon: int = 2) -> RouterConfig:
    return RouterConfig(models=list(members), horizon=horizon, stage_prompt_fallback="Continue.")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def warm_encoder(encoder: TextEncoder) -> None:
    """Every context any route can reach, encoded in one batch (the encoder caches by text)."""
    contexts: list[str] = list(CARDS.values())
    for item in [*make_items(12), *make_items(4, offset=50), *make_items(1, offset=99)]:
        level = [item.prompt]
        contexts.append(item.prompt)
        for _stage in range(2):
            level = [extend_context(c, reply(role, c)) for c in level for role in (*POOL, "critic")]
            contexts += level
    encoder.encode(list(dict.fromkeys(contexts)))


# ------------------------------------------------------------------------------------ descriptors


def test_descriptor_is_kind_card_price_and_size() -> None:
    described = describe(spec("solver"))
    assert described.card == f"{KIND_PHRASES['generate']}. {CARDS['solver']}"
    assert described.base_rate == 0.002 and described.n_params == 2_000_000_000  # 0.001 per B params
    assert described.numeric == pytest.approx((math.log(2.0), math.log(2.0)))

    # no description: the name and source stand in; the size in the name prices an unpriced member
    bare = describe(ModelSpec(name="qwen-mc", kind="cloze_mc", source="org/Qwen2.5-0.5B-Instruct"))
    assert bare.card == f"{KIND_PHRASES['cloze_mc']}. qwen-mc (org/Qwen2.5-0.5B-Instruct)"
    assert bare.n_params == 500_000_000 and bare.base_rate == pytest.approx(0.0005)

    # renaming a described member does not change what the policy sees (the name is a node label)
    assert describe(spec("renamed", role="solver")) == dataclasses.replace(described, name="renamed")
    with pytest.raises(ValueError, match="base_rate"):
        describe(ModelSpec(name="mystery", source="somewhere/unknown"))


def test_logits_follow_the_pool(encoder: TextEncoder) -> None:
    policy = DescriptorPolicy.for_encoder([spec(n) for n in POOL], encoder, horizon=2, hidden_size=32)
    embeddings = encoder.encode(["a", "b", "c"])
    stages, costs = torch.tensor([0, 1, 1]), torch.tensor([0.0, 0.1, 0.2])
    for members in (["planner"], ["planner", "solver"], [*POOL, "critic"]):
        logits, value = policy.with_pool([spec(n) for n in members])(embeddings, stages, costs)
        assert logits.shape == (3, len(members)) and value.shape == (3,)
    assert policy.pool == list(POOL)  # with_pool returned copies; the original is untouched

    stopper = DescriptorPolicy.for_encoder([spec(n) for n in POOL], encoder, horizon=2, allow_stop=True)
    assert stopper.actions == [*POOL, STOP_ACTION]
    first, later = stopper.decide("q", 0, 0.0), stopper.decide("q", 1, 0.1)
    assert first.probs[STOP_ACTION] == 0.0 and later.probs[STOP_ACTION] > 0.1  # masked at stage 0 only
    assert stopper.with_pool([spec("critic")])(embeddings, stages, costs)[0].shape == (3, 2)


def test_identical_descriptor_gets_identical_logit(encoder: TextEncoder) -> None:
    policy = DescriptorPolicy.for_encoder(
        [spec("planner"), spec("solver"), spec("solver-copy", role="solver")], encoder, horizon=2
    )
    generator = torch.Generator().manual_seed(0)  # the same weights every run: no flaky draw
    with torch.no_grad():  # weights far from the near-uniform init, so logits clearly differ
        for parameter in policy.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    embeddings = encoder.encode(["What is 3 plus 20?", "Plan: then add"])
    logits, _ = policy(embeddings, torch.tensor([0, 1]), torch.tensor([0.0, 0.05]))
    # the same function of the same inputs; only BLAS's row blocking may differ in the last bit
    torch.testing.assert_close(logits[:, 1], logits[:, 2], rtol=1e-5, atol=1e-5)
    assert (logits[:, 0] - logits[:, 1]).abs().min() > 1e-2  # a different card: a clearly different logit
    # the scorer is per member: reordering the pool reorders the logits, nothing else
    reordered = policy.with_pool(["solver-copy", "planner", "solver"])
    again, _ = reordered(embeddings, torch.tensor([0, 1]), torch.tensor([0.0, 0.05]))
    torch.testing.assert_close(again, logits[:, [2, 0, 1]], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------ persistence


def test_save_load_round_trip_and_a_new_pool(encoder: TextEncoder, tmp_path: Path) -> None:
    policy = DescriptorPolicy.for_encoder([spec(n) for n in POOL], encoder, horizon=2, cost_scale=0.5)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.normal_(0, 0.3)
    policy.save(tmp_path / "p", extra={"trained_on": "unit-test"})
    meta = json.loads((tmp_path / "p" / "policy.json").read_text())
    assert meta["kind"] == "descriptor" and meta["pool"] == list(POOL) and meta["trained_on"] == "unit-test"
    assert saved_policy_kind(tmp_path / "p") == "descriptor"

    loaded = DescriptorPolicy.load(tmp_path / "p", encoder=encoder, horizon=2)
    contexts = [("What is 3 plus 20?", 0, 0.0), (extend_context("What is 3 plus 20?", PLAN), 1, 0.07)]
    for context, stage, cost in contexts:
        assert loaded.decide(context, stage, cost) == policy.decide(context, stage, cost)

    # a config whose pool differs from the training pool loads (that is the point) ...
    grown = config_of(*[spec(n) for n in POOL], spec("critic"))
    routed = load_saved_policy(tmp_path / "p", grown, encoder)
    assert isinstance(routed, DescriptorPolicy) and routed.pool == grown.model_names
    decision = routed.decide(*contexts[1])
    assert set(decision.probs) == set(grown.model_names)
    for name in POOL:  # ... and the old members keep their exact logits: nothing was retrained
        logits = routed(encoder.encode([contexts[1][0]]), torch.tensor([1]), torch.tensor([0.07]))[0]
        base = policy(encoder.encode([contexts[1][0]]), torch.tensor([1]), torch.tensor([0.07]))[0]
        assert torch.allclose(logits[0, grown.model_names.index(name)], base[0, POOL.index(name)])

    # what shapes the weights is still checked
    with pytest.raises(PolicyMismatchError, match="horizon"):
        DescriptorPolicy.load(tmp_path / "p", horizon=3)
    with pytest.raises(PolicyMismatchError, match="encoder"):
        DescriptorPolicy.load(tmp_path / "p", encoder="all-mpnet-base-v2")
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        DescriptorPolicy.load(tmp_path / "p", allow_stop=True)
    with pytest.raises(PolicyMismatchError, match="no descriptor"):
        DescriptorPolicy.load(tmp_path / "p", pool=["planner", "critic"])  # a bare name it never saw

    # a RouterPolicy folder is told apart and loaded as one
    RouterPolicy.for_encoder(list(POOL), encoder, horizon=2).save(tmp_path / "mlp")
    assert saved_policy_kind(tmp_path / "mlp") == "mlp"
    assert isinstance(
        load_saved_policy(tmp_path / "mlp", config_of(*[spec(n) for n in POOL]), encoder), RouterPolicy
    )
    with pytest.raises(PolicyMismatchError, match="not a descriptor policy"):
        DescriptorPolicy.load(tmp_path / "mlp")


# ------------------------------------------------------------------------------------ PPO + graph

CONVERGE = PPOArgs(iterations=16, rollouts=64, num_minibatches=8, policy_kind="descriptor")
"""test_ppo.py's convergence run (the paper's hyperparameters, 16 × 64 episodes), descriptor kind."""


@pytest.fixture(scope="module")
def trained(encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    config = config_of(*[spec(n) for n in POOL])
    env = HierRouterEnv(config, make_items(12), build_pool(config, chats({n: n for n in POOL})), encoder)
    policy = make_policy(config, encoder, CONVERGE)
    assert isinstance(policy, DescriptorPolicy)
    return train(env, policy, CONVERGE, tmp_path_factory.mktemp("descriptor-ppo"), progress=False)


def test_ppo_trains_it_to_the_only_rewarded_route(trained: TrainResult) -> None:
    history = trained.history
    assert history[0]["mean_quality"] < 0.35  # near-uniform at first: ~1/9 of episodes score
    assert sum(r["mean_quality"] for r in history[-3:]) / 3 > 0.85, [
        round(r["mean_quality"], 3) for r in history
    ]
    policy = trained.policy
    for item in [*make_items(12), *make_items(4, offset=50)]:  # training items and unseen ones
        assert policy.decide(item.prompt, 0, 0.0).model == "planner"
        assert policy.decide(extend_context(item.prompt, PLAN), 1, 0.05).model == "solver"
    meta = json.loads((trained.policy_dir / "policy.json").read_text())
    assert meta["kind"] == "descriptor" and meta["training"]["args"]["policy_kind"] == "descriptor"


def _route(graph: HierRouterGraph, query: str) -> tuple[list[str], str]:
    out = graph.invoke(query)
    return [hop["model"] for hop in out["trace"]], out["trace"][-1]["reply"]


QUERY = "Question 99: What is 5 plus 6?"


def test_graph_routes_the_saved_policy_over_a_changed_pool(trained: TrainResult) -> None:
    # the training pool, from the saved folder
    same = HierRouterGraph(
        config_of(*[spec(n) for n in POOL]), trained.policy_dir, chats({n: n for n in POOL})
    )
    assert _route(same, QUERY) == (BEST_ROUTE, "The answer is 11.")

    # the solver replaced by a member it never saw under that name, described as a solver: routed to it
    swapped = config_of(spec("planner"), spec("guesser"), spec("solver-v2", role="solver"))
    graph = HierRouterGraph(
        swapped,
        trained.policy_dir,
        chats({"planner": "planner", "guesser": "guesser", "solver-v2": "solver"}),
    )
    assert _route(graph, QUERY) == (["planner", "solver-v2"], "The answer is 11.")

    # a member removed: two members left, still exactly L hops
    smaller = config_of(spec("planner"), spec("solver"))
    assert _route(
        HierRouterGraph(smaller, trained.policy_dir, chats({"planner": "planner", "solver": "solver"})), QUERY
    ) == (
        BEST_ROUTE,
        "The answer is 11.",
    )

    # a genuinely new member (new card, new price): no shape error, it gets a probability, L hops
    grown = config_of(*[spec(n) for n in POOL], spec("critic"))
    graph = HierRouterGraph(grown, trained.policy_dir, chats({**{n: n for n in POOL}, "critic": "guesser"}))
    out = graph.invoke(QUERY)
    assert len(out["trace"]) == 2
    assert all(set(hop["probs"]) == set(grown.model_names) for hop in out["trace"])
    assert all(hop["probs"]["critic"] > 0 for hop in out["trace"])


def test_graph_takes_a_policy_object_and_repools_it(trained: TrainResult) -> None:
    policy = trained.policy
    assert isinstance(policy, DescriptorPolicy)
    swapped = config_of(spec("solver-v2", role="solver"), spec("planner"))  # reordered and renamed
    graph = HierRouterGraph(swapped, policy, chats({"planner": "planner", "solver-v2": "solver"}))
    assert graph.policy.pool == ["solver-v2", "planner"] and policy.pool == list(POOL)
    assert _route(graph, QUERY) == (["planner", "solver-v2"], "The answer is 11.")
    with pytest.raises(PolicyMismatchError, match="L="):
        HierRouterGraph(config_of(spec("planner"), horizon=3), policy, chats({"planner": "planner"}))


def test_cli_flag_selects_the_kind() -> None:
    assert ppo_args_from(parse_args(["--policy-kind", "descriptor"])).policy_kind == "descriptor"
    assert ppo_args_from(parse_args([])).policy_kind == "mlp"
    with pytest.raises(ValueError, match="policy_kind"):
        PPOArgs(policy_kind="transformer")
