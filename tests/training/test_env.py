"""HierRouterEnv: Gymnasium API, exactly L hops, the reward, and the SAME hop as the graph."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from hierrouter_graph import FixedRoutePolicy, HierRouterGraph, ModelSpec, PoolMember, RouterConfig
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import extend_context
from training.replay.store import ReplayStore
from training.rl.env import HierRouterEnv
from training.tasks.items import Item
from training.tasks.metrics import score

QUERY = "Which planet is largest?\nA. Mars\nB. Jupiter\nC. Venus\nD. Earth"


class _EchoModel(FakeListChatModel):
    """Deterministic endpoint-like model: a fixed reply, usage counted in words, calls counted."""

    calls: int = 0

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        self.calls += 1
        words_in = sum(len(str(m.content).split()) for m in messages)
        text = self.responses[0]
        usage = {"input_tokens": words_in, "output_tokens": len(text.split()), "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


class _HashEncoder:
    """A fast deterministic stand-in for the sentence encoder."""

    name, dim = "hash-encoder", 8

    def encode(self, texts) -> torch.Tensor:
        rows = [list(hashlib.sha256(t.encode()).digest()[: self.dim]) for t in texts]
        return torch.tensor(rows, dtype=torch.float32) / 255.0


def _items() -> list[Item]:
    meta = {"choices": ["Mars", "Jupiter", "Venus", "Earth"], "gold_index": 1}
    return [
        Item("arc_easy/0", "arc_easy", QUERY, ["B", "Jupiter"], "mc_letter", "routing", meta),
        Item("arc_easy/1", "arc_easy", "Pick D.\nA. a\nB. b\nC. c\nD. d", ["D", "d"], "mc_letter", "routing"),
    ]


def _fake_setup(alpha: float = 0.01) -> tuple[RouterConfig, dict[str, PoolMember]]:
    specs = [ModelSpec(name="good", source="fake"), ModelSpec(name="cheap", source="fake")]
    config = RouterConfig(models=specs, horizon=2, alpha=alpha)
    pool = {
        "good": PoolMember("good", _EchoModel(responses=["Jupiter is largest. Answer: B"]), base_rate=0.01),
        "cheap": PoolMember("cheap", _EchoModel(responses=["Not sure."]), base_rate=0.001),
    }
    return config, pool


def _env(**kw: Any) -> HierRouterEnv:
    config, pool = _fake_setup()
    return HierRouterEnv(config, _items(), pool, _HashEncoder(), **kw)


@pytest.mark.filterwarnings("ignore:.*Box observation space:UserWarning")  # unbounded by design
def test_passes_the_gymnasium_checker() -> None:
    env = _env()
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert (obs["stage"], obs["cost"].tolist(), info["item_id"]) == (
        0,
        [0.0],
        env.items[info["item_index"]].id,
    )


def test_exactly_l_hops_then_terminated_with_the_terminal_reward() -> None:
    env = _env()
    obs, _ = env.reset(options={"item_index": 0})
    obs, reward, terminated, truncated, info = env.step(1)
    assert (obs["stage"], reward, terminated, truncated) == (1, 0.0, False, False)
    assert info["hop"]["model"] == "cheap" and "quality" not in info
    obs, reward, terminated, truncated, info = env.step(0)
    assert (obs["stage"], terminated, truncated) == (2, True, False)
    assert env.observation_space.contains(obs)
    assert info["route"] == ["cheap", "good"]
    assert (info["item_id"], info["task"]) == ("arc_easy/0", "arc_easy")
    assert {"quality", "task_metric", "f1", "total_cost", "hop", "context"} <= set(info)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_reward_is_quality_minus_alpha_cost_recomputed_independently() -> None:
    env = _env(reward_metric="task")
    item = env.items[0]
    env.reset(options={"item_index": 0})
    steps = [env.step(a) for a in (1, 0)]  # cheap, then good: the answer is good's reply
    hops = [step[4]["hop"] for step in steps]
    replies = [h["reply"] for h in hops]
    # Cost by hand: words in the prompt (instruction + context) + words of the reply, times the rate.
    rates = {"good": 0.01, "cheap": 0.001}
    context, cost = item.prompt, 0.0
    for stage, hop in enumerate(hops):
        words_in = len(f"{env.config.stage_prompt(stage)}\n\n{context}".split())
        cost += rates[hop["model"]] * (words_in + len(hop["reply"].split()))
        context = extend_context(context, hop["reply"])
    quality = score(item, replies[-1])  # the answer: the last reply, never the query
    assert quality == 1.0
    assert steps[0][1] == 0.0
    assert steps[1][1] == pytest.approx(quality - 0.01 * cost, abs=1e-12)
    assert steps[1][4]["total_cost"] == pytest.approx(cost, abs=1e-12)
    env.reset(options={"item_index": 0})  # good, then cheap: good's right answer was replaced
    assert [env.step(a) for a in (0, 1)][-1][4]["quality"] == 0.0


def test_f1_reward_and_scaled_cost_observation() -> None:
    env = _env(reward_metric="f1", cost_scale=0.5)
    env.reset(options={"item_index": 0})
    obs, *_ = env.step(1)
    obs, reward, _, _, info = env.step(0)
    assert obs["cost"][0] == pytest.approx(info["total_cost"] / 0.5, rel=1e-6)
    assert info["quality"] == info["f1"] and 0.0 < info["f1"] < 1.0
    assert reward == pytest.approx(info["f1"] - 0.01 * info["total_cost"])


def test_invalid_actions_are_refused() -> None:
    env = _env()
    env.reset(seed=0)
    for action in (2, -1):
        with pytest.raises(ValueError, match=rf"invalid action {action}.*pool of 2"):
            env.step(action)
    with pytest.raises(IndexError, match="item_index"):
        env.reset(options={"item_index": 5})
    with pytest.raises(ValueError, match="reward_metric"):
        _env(reward_metric="bleu")


def test_replay_cache_means_the_model_runs_once_per_hop(tmp_path: Path) -> None:
    config, pool = _fake_setup()
    with ReplayStore(tmp_path / "replay.sqlite") as store:
        env = HierRouterEnv(config, _items(), pool, _HashEncoder(), cache=store)
        outcomes = []
        for _ in range(2):
            env.reset(options={"item_index": 1})
            outcomes.append([env.step(a) for a in (0, 0)][-1])
        calls = [member.chat_model.calls for member in pool.values()]  # type: ignore[attr-defined]
        assert calls == [2, 0]  # two hops of "good" the first time, none the second
        assert outcomes[0][1] == outcomes[1][1]
        assert outcomes[1][4]["hop"]["cached"] and not outcomes[0][4]["hop"]["cached"]
        assert len(store) == 2


class _CountingStore(ReplayStore):
    """A replay store that counts lookups."""

    lookups = 0

    def get(self, fingerprint: str, prompt: str) -> Any:
        self.lookups += 1
        return super().get(fingerprint, prompt)


@pytest.mark.filterwarnings("ignore:.*Box observation space:UserWarning")
def test_a_revisited_hop_skips_the_prompt_and_the_store_but_not_without_a_cache(tmp_path: Path) -> None:
    config, pool = _fake_setup()
    store = _CountingStore(tmp_path / "replay.sqlite")
    with store:
        env = HierRouterEnv(config, _items(), pool, _HashEncoder(), cache=store)
        rewards = []
        for _ in range(3):
            env.reset(options={"item_index": 0})
            rewards.append([env.step(a) for a in (0, 1)][-1][1])
        assert store.lookups == 2  # one per distinct (model, stage, context), on the first visit
        assert rewards[0] == rewards[1] == rewards[2]
    config, pool = _fake_setup()
    env = HierRouterEnv(config, _items(), pool, _HashEncoder())
    for _ in range(3):
        env.reset(options={"item_index": 0})
        for action in (0, 1):
            env.step(action)
    assert [member.chat_model.calls for member in pool.values()] == [3, 3]  # type: ignore[attr-defined]


def test_env_and_graph_run_the_same_hops(tiny_config: RouterConfig) -> None:
    route = ["tiny-b", "tiny-a"]
    pool = build_pool(tiny_config)
    item = Item("qa/0", "qa", "What is seven times six?", ["42"], "token_f1", "routing")
    graph = HierRouterGraph(tiny_config, FixedRoutePolicy(tiny_config.model_names, route), chat_models=pool)
    out = graph.invoke(item.prompt)
    env = HierRouterEnv(tiny_config, [item], pool, _HashEncoder())
    env.reset(seed=0)
    steps = [env.step(tiny_config.model_names.index(name)) for name in route]
    hops = [s[4]["hop"] for s in steps]
    keys = ("model", "prompt", "reply", "tokens_in", "tokens_out", "cost")
    assert [{k: h[k] for k in keys} for h in hops] == [{k: t[k] for k in keys} for t in out["trace"]]
    assert steps[-1][4]["total_cost"] == pytest.approx(out["cost"])
    assert np.isfinite(steps[-1][1])
