"""Early exit in training: the env's STOP, PPO on variable-length episodes, evaluation by replay.

The pool is scripted so that stopping after one hop is the only way to score (L = 3): ``solver``
answers "What is a plus b?" correctly when no answer is in its prompt yet, but a second look makes
it "overthink" to 13; ``guesser`` always says 13. Scored by ``gsm8k_number`` (the last stated
answer wins), only the route ``solver`` → STOP scores 1; every longer route ends on 13.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from torch.distributions import Categorical

from hierrouter_graph import (
    STOP_ACTION,
    Decision,
    FixedRoutePolicy,
    ModelSpec,
    PolicyTraits,
    RouterConfig,
    RouterPolicy,
)
from hierrouter_graph.graph import HierRouterGraph, build_pool
from hierrouter_graph.hop import extend_context
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.signature import PolicyMismatchError
from training.evaluation.evaluate import evaluate
from training.evaluation.strategies import ROUTER, router_routes
from training.replay.record import record_outcome_tree
from training.replay.store import ReplayStore
from training.replay.tree import outcome_tree
from training.rl.args import PPOArgs
from training.rl.env import HierRouterEnv, StopNotAllowedError
from training.rl.ppo import collect_rollouts, compute_gae
from training.rl.setup import make_policy
from training.rl.train import TrainResult, train
from training.tasks.items import Item
from training.tasks.metrics import score

POOL = ("solver", "guesser")
RATES = {"solver": 0.002, "guesser": 0.001}
SOLVER, GUESSER, STOP = 0, 1, 2
_SUM = re.compile(r"What is (\d+) plus (\d+)\?")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reply(role: str, prompt: str) -> str:
    if role == "solver" and "The answer is" not in prompt:
        match = _SUM.search(prompt)
        return f"The answer is {int(match[1]) + int(match[2]) if match else 0}."
    return "The answer is 13."  # the guesser, and the solver on a second look


class ScriptedChat(FakeListChatModel):
    """Prompt-dependent reply with endpoint-style token usage (words); calls counted."""

    role: str
    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        prompt = str(messages[-1].content)
        text = reply(self.role, prompt)
        usage = {"input_tokens": len(prompt.split()), "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def chat_models() -> dict[str, ScriptedChat]:
    return {name: ScriptedChat(responses=["unused"], role=name) for name in POOL}


def make_items(n: int, offset: int = 0) -> list[Item]:
    out = []
    for i in range(offset, offset + n):
        a, b = 3 + 2 * i, 20 + 3 * i  # sums never 13
        out.append(
            Item(
                f"sum/{i}",
                "sum",
                f"Question {i}: What is {a} plus {b}?",
                [str(a + b)],
                "gsm8k_number",
                "routing",
            )
        )
    return out


def make_config(allow_stop: bool = True, horizon: int = 3) -> RouterConfig:
    return RouterConfig(
        models=[ModelSpec(name=n, source=f"fake:{n}", base_rate=RATES[n]) for n in POOL],
        horizon=horizon,
        allow_stop=allow_stop,
        stage_prompt_fallback="Check the answer once more.",
    )


@pytest.fixture(scope="module", autouse=True)
def warm_encoder(encoder: TextEncoder) -> None:
    """Encode every reachable context once (the encoder caches by text), so episodes never run it."""
    config = make_config()
    contexts: list[str] = []
    for item in [*make_items(12), *make_items(4, offset=50)]:
        level = [item.prompt]
        contexts.append(item.prompt)
        for stage in range(3):
            level = [
                extend_context(c, reply(r, f"{config.stage_prompt(stage)}\n\n{c}"))
                for c in level
                for r in POOL
            ]
            contexts += level
    encoder.encode(list(dict.fromkeys(contexts)))


def make_env(encoder: TextEncoder, config: RouterConfig | None = None, n_items: int = 12) -> HierRouterEnv:
    config = config or make_config()
    return HierRouterEnv(config, make_items(n_items), build_pool(config, chat_models()), encoder)


# ------------------------------------------------------------------------------------ env


def test_env_stop_terminates_with_the_reward_of_the_context_so_far(encoder: TextEncoder) -> None:
    env = make_env(encoder)
    assert env.n_actions == 3 and env.stop_action == STOP
    _, info = env.reset(options={"item_index": 0})
    assert info["action_mask"].tolist() == [True, True, False] == env.action_masks().tolist()
    with pytest.raises(StopNotAllowedError, match="stage 0"):
        env.step(STOP)

    obs, reward, terminated, _, info = env.step(SOLVER)
    assert (obs["stage"], reward, terminated) == (1, 0.0, False)
    assert env.action_masks().tolist() == [True, True, True]
    calls_before = {name: m.chat_model.calls for name, m in zip(POOL, env.members, strict=True)}  # type: ignore[attr-defined]
    obs, reward, terminated, truncated, done_info = env.step(STOP)
    assert terminated and not truncated and done_info["stopped"] is True
    assert {name: m.chat_model.calls for name, m in zip(POOL, env.members, strict=True)} == calls_before  # type: ignore[attr-defined]

    item = env.items[0]
    prompt = f"{env.config.stage_prompt(0)}\n\n{item.prompt}"
    first = reply("solver", prompt)
    cost = RATES["solver"] * (len(prompt.split()) + len(first.split()))  # by hand, and nothing after STOP
    assert done_info["route"] == ["solver"] and done_info["total_cost"] == pytest.approx(cost, abs=1e-12)
    assert score(item, first) == 1.0 and done_info["quality"] == 1.0
    assert reward == pytest.approx(1.0 - env.config.alpha * cost, abs=1e-12)
    assert obs["stage"] == 1 and obs["cost"][0] == pytest.approx(cost, rel=1e-6)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(SOLVER)

    # without STOP the episode runs all L hops, and ends on the overthought 13
    env.reset(options={"item_index": 0})
    steps = [env.step(a) for a in (SOLVER, SOLVER, GUESSER)]
    assert [s[2] for s in steps] == [False, False, True] and steps[-1][4]["stopped"] is False
    assert steps[-1][4]["quality"] == 0.0


def test_env_without_allow_stop_has_no_stop_action(encoder: TextEncoder) -> None:
    env = make_env(encoder, make_config(allow_stop=False))
    env.reset(seed=0)
    assert env.n_actions == 2 and env.stop_action is None
    with pytest.raises(ValueError, match="invalid action 2"):
        env.step(2)


# ------------------------------------------------------------------------------------ PPO pieces


def test_gae_cuts_variable_length_episodes_at_their_dones() -> None:
    # an episode of 3 transitions (two hops + STOP… or three hops), then one of 2 (hop + STOP)
    rewards = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.5])
    dones = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])
    adv, ret = compute_gae(rewards, torch.zeros(5), dones, gamma=0.99, gae_lambda=0.95)
    k = 0.99 * 0.95
    expected = torch.tensor([k * k, k, 1.0, k * 0.5, 0.5])
    assert torch.allclose(adv, expected) and torch.allclose(ret, expected)


def test_rollout_masks_stop_at_stage_0_and_logprobs_agree_with_the_update(encoder: TextEncoder) -> None:
    config = make_config()
    args = PPOArgs(iterations=1, rollouts=24, num_minibatches=2, update_epochs=1)
    policy = make_policy(config, encoder, args)
    with torch.no_grad():
        policy.actor.bias.copy_(torch.tensor([0.0, 0.0, 2.0]))  # STOP likely wherever it is allowed
    rollout = collect_rollouts(make_env(encoder), policy, 24, torch.Generator().manual_seed(0), seed=0)
    stages, actions = rollout.states.stages, rollout.actions
    assert not bool(((stages == 0) & (actions == STOP)).any())  # never STOP before the first hop
    assert bool(((stages > 0) & (actions == STOP)).any())
    # variable lengths: an episode ends at every STOP and at every third hop, nowhere else
    ends = (actions == STOP) | (stages == config.horizon - 1)
    assert torch.equal(rollout.dones.bool(), ends)
    assert len({len(e.route) for e in rollout.episodes}) >= 2
    assert all((e.quality == 1.0) == (e.route == ["solver"]) for e in rollout.episodes)
    assert sum(e.hops for e in rollout.episodes) + int((actions == STOP).sum()) == len(actions)
    # the update's forward gives the rollout's log-probs exactly (same mask): ratio 1 before any step
    logits, _ = policy(*rollout.states.inputs())
    recomputed = Categorical(logits=logits).log_prob(rollout.actions)
    assert torch.allclose(recomputed, rollout.logprobs, atol=1e-5)
    assert torch.isfinite(Categorical(logits=logits).entropy()).all()


# ------------------------------------------------------------------------------------ convergence

CONVERGE = PPOArgs(iterations=16, rollouts=64, num_minibatches=8)
"""The paper's hyperparameters with 16 iterations of 64 episodes (as in test_ppo.py)."""


@pytest.fixture(scope="module")
def trained(encoder: TextEncoder, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    config = make_config()
    return train(
        make_env(encoder),
        make_policy(config, encoder, CONVERGE),
        CONVERGE,
        tmp_path_factory.mktemp("ppo-stop"),
        progress=False,
    )


def test_ppo_learns_to_stop_after_one_hop(trained: TrainResult, encoder: TextEncoder) -> None:
    history = trained.history
    assert history[0]["mean_quality"] < 0.4 and history[0]["mean_hops"] > 1.5  # ~1/6 scored at first
    tail = history[-3:]
    assert sum(r["mean_quality"] for r in tail) / 3 > 0.85, [round(r["mean_quality"], 3) for r in history]
    assert sum(r["mean_hops"] for r in tail) / 3 < 1.15, [round(r["mean_hops"], 2) for r in history]
    policy = trained.policy
    for item in [*make_items(12), *make_items(4, offset=50)]:  # training items and unseen ones
        first = policy.decide(item.prompt, 0, 0.0)
        assert first.model == "solver" and first.probs[STOP_ACTION] == 0.0, (item.id, first.probs)
        context = extend_context(item.prompt, reply("solver", item.prompt))
        assert policy.decide(context, 1, 0.05).stop, item.id


def test_trained_stop_policy_in_the_graph_and_in_the_evaluation(
    trained: TrainResult, encoder: TextEncoder, tmp_path: Path
) -> None:
    config = make_config()
    models = chat_models()
    graph = HierRouterGraph(config, policy=trained.policy_dir, chat_models=models)
    items = make_items(4, offset=50)
    outs = [graph.invoke(item.prompt) for item in items]
    assert all([h["model"] for h in out["trace"]] == ["solver"] and out["stopped"] for out in outs)
    assert models["solver"].calls == len(items) and models["guesser"].calls == 0

    pool = build_pool(config, chat_models())
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        record_outcome_tree(config, pool, items, store, progress=False)
        policy = RouterPolicy.load(
            trained.policy_dir, pool=list(POOL), encoder=encoder, horizon=3, allow_stop=True
        )
        tree = outcome_tree(config, pool, items, store)
        routes = router_routes(policy, config, tree, items)
        assert routes == [("solver",)] * len(items)  # pure replay of the length-1 prefix
        for out, item in zip(outs, items, strict=True):
            assert tree[item.id][("solver",)].cost == pytest.approx(out["cost"], abs=1e-12)
        result = evaluate(config, pool, policy, [], items, store)
        row = result.overall.row(ROUTER)
        assert row.task_metric.mean == 1.0
        assert row.reward.mean == pytest.approx(np.mean([tree[i.id][("solver",)].reward for i in items]))
        assert result.overall.router_lengths == {1: len(items)}
        assert result.overall.row(ROUTER).reward.mean >= result.overall.row("solver (×3)").reward.mean + 0.9


def test_router_routes_follow_fixed_early_stops_and_refuse_bad_stops(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    config = make_config()
    pool = build_pool(config, chat_models())
    items = make_items(2)
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        record_outcome_tree(config, pool, items, store, progress=False)
        tree = outcome_tree(config, pool, items, store)
    for route in (["guesser"], ["solver", "guesser"], ["guesser", "solver", "solver"]):
        policy = FixedRoutePolicy(POOL, route, stop=True)
        assert router_routes(policy, config, tree, items) == [tuple(route)] * 2

    class StopsAtOnce(PolicyTraits):
        allow_stop = True

        @property
        def pool(self) -> list[str]:
            return list(POOL)

        def decide(self, context: str, stage: int, cost: float, **_: Any) -> Decision:
            return Decision(STOP, STOP_ACTION, {STOP_ACTION: 1.0})

    with pytest.raises(PolicyMismatchError, match="before the first hop"):
        router_routes(StopsAtOnce(), config, tree, items)
    with pytest.raises(PolicyMismatchError, match="allow_stop=False"):
        router_routes(
            FixedRoutePolicy(POOL, ["solver"], stop=True), make_config(allow_stop=False), tree, items
        )


def test_cli_allow_stop_flags_train_and_evaluate_a_stop_router(encoder: TextEncoder, tmp_path: Path) -> None:
    from training.cli import evaluate as ev
    from training.cli.ppo import parse_args, run_from_cli
    from training.tasks.jsonl_datasets import write_jsonl_dataset

    make_config(allow_stop=False).to_file(tmp_path / "router.yaml")  # the flag adds STOP on top
    write_jsonl_dataset(make_items(4), tmp_path / "train.jsonl")
    write_jsonl_dataset(make_items(2, offset=50), tmp_path / "test.jsonl")
    replay = str(tmp_path / "replay.sqlite")
    common = ["--config", str(tmp_path / "router.yaml"), "--replay", replay, "--no-progress"]
    argv = [*common, "--items", str(tmp_path / "train.jsonl"), "--live", "--allow-stop",
            "--iterations", "1", "--rollouts", "8", "--minibatches", "2", "--epochs", "1",
            "--run-dir", str(tmp_path / "run")]  # fmt: skip
    result = run_from_cli(parse_args(argv), chat_models=chat_models(), encoder=encoder)
    assert result.policy.allow_stop and result.policy.actions[-1] == STOP_ACTION

    eval_argv = [*common, "--items", str(tmp_path / "test.jsonl"), "--live",
                 "--policy", str(tmp_path / "run"), "--no-report", "--resamples", "50"]  # fmt: skip
    with pytest.raises(PolicyMismatchError, match="allow_stop"):
        ev.run_from_cli(ev.parse_args(eval_argv), chat_models=chat_models(), encoder=encoder)
    evaluated = ev.run_from_cli(
        ev.parse_args([*eval_argv, "--allow-stop"]), chat_models=chat_models(), encoder=encoder
    )
    assert sum(evaluated.overall.router_lengths.values()) == 2
