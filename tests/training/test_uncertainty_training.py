"""The uncertainty-aware state end to end: env observation → PPO → graph, on a pool where ONLY the
last reply's confidence tells the items apart.

Every item has the same prompt, so every context is the same text. ``probe`` always replies
"I think it is 7." — confidently (mean log-prob −0.05) when 7 is right, hesitantly (−2.5) when it
is not. At stage 1, ``keep`` adds nothing (cheap: the answer stays 7) and ``fixer`` gives the right
number at a price that costs 0.5 of reward. Best: probe → keep when confident (reward 1), probe →
fixer when not (0.5) (a second ``probe`` is as good as ``keep``: free, and the answer stays 7);
a router without the confidence sees one state and can do no better than 0.5 on average,
whichever it picks.
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

from hierrouter_graph import ModelSpec, RouterConfig
from hierrouter_graph.confidence import NEUTRAL_FEATURES
from hierrouter_graph.graph import HierRouterGraph, build_pool
from hierrouter_graph.hop import extend_context
from hierrouter_graph.policy.encoder import TextEncoder
from training.rl.args import PPOArgs
from training.rl.env import HierRouterEnv
from training.rl.setup import make_policy
from training.rl.train import train
from training.tasks.items import Item

POOL = ("probe", "keep", "fixer")
PROMPT = "What number am I thinking of?"
GUESS = "I think it is 7."
SURE = {"mean_logprob": -0.05, "mean_entropy": 0.1}
UNSURE = {"mean_logprob": -2.5, "mean_entropy": 3.0}


class SecretChat(FakeListChatModel):
    """Replies by role; the probe's confidence depends on the secret in the system prompt."""

    role: str
    secret: int = 7

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = {"probe": GUESS, "keep": "OK.", "fixer": f"It is {self.secret}."}[self.role]
        metadata = {"confidence": SURE if self.secret == 7 else UNSURE} if self.role == "probe" else {}
        usage = {"input_tokens": 10, "output_tokens": 10, "total_tokens": 20}
        message = AIMessage(text, usage_metadata=usage, response_metadata=metadata)
        return ChatResult(generations=[ChatGeneration(message=message)])


class PerItemEnv(HierRouterEnv):
    """The env with each item's own secret: pool members are swapped in at reset."""

    def __init__(self, pools: dict[str, dict[str, Any]], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pools = pools

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> Any:
        observation, info = super().reset(seed=seed, options=options)
        self.members = [self.pools[info["item_id"]][name] for name in self.config.model_names]
        return observation, info


def items() -> list[Item]:
    secrets = [7, 3, 7, 5, 7, 9, 7, 2]
    return [
        Item(
            id=f"secret/{i}",
            task="secret",
            prompt=PROMPT,
            references=[str(s)],
            metric="gsm8k_number",
            half="routing",
        )
        for i, s in enumerate(secrets)
    ]


def config(uncertainty: bool) -> RouterConfig:
    rates = {"probe": 0.0, "keep": 0.0, "fixer": 0.05}  # fixer: 20 tokens x 0.05 x alpha 0.5 = 0.5
    models = [ModelSpec(name=n, source=f"fake:{n}", base_rate=rates[n]) for n in POOL]
    return RouterConfig(models=models, horizon=2, alpha=0.5, uncertainty_state=uncertainty)


def make_env(cfg: RouterConfig, encoder: TextEncoder) -> PerItemEnv:
    pools = {
        item.id: build_pool(
            cfg, {n: SecretChat(responses=["-"], role=n, secret=int(item.references[0])) for n in POOL}
        )
        for item in items()
    }
    first = next(iter(pools.values()))
    return PerItemEnv(pools, cfg, items(), first, encoder)


@pytest.fixture(scope="module", autouse=True)
def one_thread_and_warm_encoder(encoder: TextEncoder) -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    level = [PROMPT]
    contexts = [PROMPT]
    for _ in range(2):
        level = [
            extend_context(c, r)
            for c in level
            for r in (GUESS, "OK.", *[f"It is {s}." for s in (7, 3, 5, 9, 2)])
        ]
        contexts += level
    encoder.encode(list(dict.fromkeys(contexts)))
    yield
    torch.set_num_threads(before)


def test_the_observation_carries_the_last_replys_confidence(encoder: TextEncoder) -> None:
    env = make_env(config(uncertainty=True), encoder)
    check_env(env, skip_render_check=True)
    observation, _ = env.reset(options={"item_index": 1})  # secret 3: the probe will hesitate
    assert tuple(observation["confidence"]) == NEUTRAL_FEATURES  # nothing replied yet
    observation, *_ = env.step(0)
    assert observation["confidence"] == pytest.approx([-2.5, 3.0, 1.0])
    observation, *_ = env.step(1)  # keep exposes no log-probs: neutral again, flag 0
    assert tuple(observation["confidence"]) == NEUTRAL_FEATURES
    plain = make_env(config(uncertainty=False), encoder)
    assert "confidence" not in plain.reset()[0]


def test_ppo_uses_the_confidence_and_the_graph_routes_on_it(encoder: TextEncoder, tmp_path: Path) -> None:
    cfg = config(uncertainty=True)
    args = PPOArgs(iterations=16, rollouts=64, num_minibatches=8, learning_rate=1e-3)
    result = train(make_env(cfg, encoder), make_policy(cfg, encoder, args), args, tmp_path, progress=False)
    tail = np.mean([row["mean_return"] for row in result.history[-3:]])
    assert tail > 0.6, [round(r["mean_return"], 3) for r in result.history]  # > 0.5: beyond any blind router

    # confident: a free second hop that keeps the 7 (keep, or probe again); hesitant: pay the fixer
    for secret, second in ((7, {"keep", "probe"}), (3, {"fixer"})):
        chats = {n: SecretChat(responses=["-"], role=n, secret=secret) for n in POOL}
        out = HierRouterGraph(cfg, policy=result.policy_dir, chat_models=chats).invoke(PROMPT)
        first, last = (hop["model"] for hop in out["trace"])
        assert first == "probe" and last in second, out["trace"][-1]["probs"]
        assert out["trace"][0]["confidence"] == (SURE if secret == 7 else UNSURE)


def test_without_the_confidence_both_kinds_of_item_look_the_same(encoder: TextEncoder) -> None:
    cfg = config(uncertainty=False)
    policy = make_policy(cfg, encoder, PPOArgs())
    context = extend_context(PROMPT, GUESS)
    sure, unsure = (policy.decide(context, 1, 0.0, confidence=c) for c in (SURE, UNSURE))
    assert sure.probs == unsure.probs  # a confidence-blind policy: the same state, the same choice
    with pytest.raises(ValueError, match="trained without uncertainty_state"):
        policy(encoder.encode([context]), torch.tensor([1]), torch.tensor([0.0]), torch.zeros(1, 3))
