"""α as an input: one policy trained over a range of cost weights, steered per query at inference.

The pool: ``cheap`` costs nothing and is always wrong (Q = 0); ``dear`` is always right (Q = 1) at
a cost of exactly 1.0 per call (20 tokens × 0.05). With one hop the reward of ``dear`` is 1 − α and
of ``cheap`` 0, so the best member flips at α = 1: ``dear`` below, ``cheap`` above. A policy that
reads α learns both sides from one training run; asked for α = 0.1 it must call ``dear`` and for
α = 8 ``cheap``, with no retraining in between.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ValidationError

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.graph import HierRouterGraph, build_pool
from hierrouter_graph.policy.encoder import TextEncoder
from hierrouter_graph.policy.inputs import alpha_feature
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError
from training.rl.args import PPOArgs
from training.rl.env import HierRouterEnv
from training.rl.setup import make_policy
from training.rl.train import train
from training.tasks.items import Item

POOL = ("cheap", "dear")
RANGE = (0.05, 20.0)


class PricedChat(FakeListChatModel):
    """``dear`` answers right, ``cheap`` wrong; both report 20 tokens of usage."""

    role: str

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        prompt = str(messages[-1].content)
        total = sum(int(word) for word in prompt.replace("?", " ").split() if word.isdigit())
        text = f"The answer is {total if self.role == 'dear' else total + 1}."
        usage = {"input_tokens": 10, "output_tokens": 10, "total_tokens": 20}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(text, usage_metadata=usage))])


def chat_models() -> dict[str, PricedChat]:
    return {name: PricedChat(responses=["-"], role=name) for name in POOL}


def config(alpha_range: tuple[float, float] | None = RANGE, alpha: float = 1.0) -> RouterConfig:
    rates = {"cheap": 0.0, "dear": 0.05}
    models = [ModelSpec(name=n, source=f"fake:{n}", base_rate=rates[n]) for n in POOL]
    return RouterConfig(models=models, horizon=1, alpha=alpha, alpha_range=alpha_range)


def items() -> list[Item]:
    return [
        Item(
            id=f"sum/{i}",
            task="sum",
            prompt=f"What is {i + 3} plus {2 * i + 5}?",
            references=[str(3 * i + 8)],
            metric="gsm8k_number",
            half="routing",
        )
        for i in range(6)
    ]


def make_env(cfg: RouterConfig, encoder: TextEncoder) -> HierRouterEnv:
    return HierRouterEnv(cfg, items(), build_pool(cfg, chat_models()), encoder, encode_terminal=False)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_feature_maps_the_range_onto_minus_one_to_one() -> None:
    values = alpha_feature(torch.tensor([0.05, 1.0, 20.0]), RANGE)
    assert values[0].item() == pytest.approx(-1.0)
    assert values[2].item() == pytest.approx(1.0)
    assert values[1].item() == pytest.approx(2 * np.log(1 / 0.05) / np.log(400) - 1)


def test_config_needs_its_default_alpha_inside_a_valid_range() -> None:
    with pytest.raises(ValidationError, match="alpha: 30.0 .* must lie in alpha_range"):
        config(alpha=30.0)
    with pytest.raises(ValidationError, match="0 < lo < hi"):
        config(alpha_range=(2.0, 1.0))


def test_each_episode_draws_its_alpha_observes_it_and_is_rewarded_with_it(encoder: TextEncoder) -> None:
    env = make_env(config(), encoder)
    check_env(env, skip_render_check=True)
    observation, info = env.reset(seed=3, options={"alpha": 0.25})
    assert observation["alpha"] == pytest.approx([0.25]) and info["alpha"] == 0.25
    _, reward, terminated, _, info = env.step(POOL.index("dear"))
    assert terminated and info["total_cost"] == pytest.approx(1.0)
    assert reward == pytest.approx(1.0 - 0.25)
    drawn = [env.reset()[1]["alpha"] for _ in range(200)]
    assert min(drawn) >= RANGE[0] and max(drawn) <= RANGE[1]
    assert np.mean(np.log(drawn)) == pytest.approx(np.mean(np.log(RANGE)), abs=0.4)  # log-uniform
    with pytest.raises(ValueError, match=r"options\['alpha'\]: alpha=50.0 is outside the range \[0.05, 20\]"):
        env.reset(options={"alpha": 50.0})
    fixed = make_env(config(alpha_range=None), encoder)
    assert "alpha" not in fixed.reset()[0]


def test_one_policy_switches_from_the_dear_to_the_cheap_member_as_alpha_rises(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    cfg = config()
    args = PPOArgs(iterations=12, rollouts=64, num_minibatches=4, learning_rate=1e-3, seed=5)
    result = train(make_env(cfg, encoder), make_policy(cfg, encoder, args), args, tmp_path, progress=False)
    policy = RouterPolicy.load_for(result.policy_dir, cfg, encoder)
    assert policy.alpha_range == RANGE
    for item in items():
        assert policy.decide(item.prompt, 0, 0.0, alpha=0.1).model == "dear"
        assert policy.decide(item.prompt, 0, 0.0, alpha=8.0).model == "cheap"

    router = HierRouterGraph(cfg, result.policy_dir, chat_models(), alpha=0.1)
    out = router.invoke(items()[0].prompt)
    assert [hop["model"] for hop in out["trace"]] == ["dear"] and out["alpha"] == 0.1
    out = router.invoke(items()[0].prompt, {"configurable": {"alpha": 8.0}})  # per run, same graph
    assert [hop["model"] for hop in out["trace"]] == ["cheap"] and out["alpha"] == 8.0
    with pytest.raises(ValueError, match=r"alpha=100.0 is outside the range \[0.05, 20\]"):
        router.invoke(items()[0].prompt, {"configurable": {"alpha": 100.0}})
    with pytest.raises(ValueError, match="α-conditioned .* pass alpha="):
        policy.decide(items()[0].prompt, 0, 0.0)


def test_a_fixed_alpha_policy_refuses_another_alpha_and_the_configs_must_agree(
    encoder: TextEncoder, tmp_path: Path
) -> None:
    fixed_cfg = config(alpha_range=None, alpha=0.5)
    args = PPOArgs(iterations=1, rollouts=8, num_minibatches=2)
    env, fresh = make_env(fixed_cfg, encoder), make_policy(fixed_cfg, encoder, args)
    fixed = train(env, fresh, args, tmp_path / "f", progress=False)
    router = HierRouterGraph(fixed_cfg, fixed.policy_dir, chat_models())
    assert router.invoke(items()[0].prompt)["alpha"] == 0.5
    with pytest.raises(ValueError, match="trained for alpha=0.5 only"):
        router.invoke(items()[0].prompt, {"configurable": {"alpha": 2.0}})
    with pytest.raises(ValueError, match="trained for alpha=0.5 only"):
        HierRouterGraph(fixed_cfg, fixed.policy_dir, chat_models(), alpha=2.0)
    with pytest.raises(PolicyMismatchError, match=r"alpha_range=null \(one fixed α\) but the config has"):
        HierRouterGraph(config(), fixed.policy_dir, chat_models())
