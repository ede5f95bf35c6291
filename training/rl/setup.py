"""What a PPO run trains and on what: the policy (``make_policy``), the environment (``build_env``)
and the check that the two fit before the first episode (``check_compatible``).

Why apart from ``ppo.py``: the algorithm (rollout, GAE, update, loop) works on any policy with the
actor-critic ``forward`` and any Gymnasium env with the routing observation; choosing the policy
kind and wiring the replayed environment is set-up that the sweep, tuner and dynamic-pool
experiment share with the PPO command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.dynamic import DESCRIPTOR_KIND, TRAINED_POLICY_KINDS, DescriptorPolicy
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.signature import PolicySignature
from hierrouter_graph.policy.trained import MLP_KIND
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

if TYPE_CHECKING:
    from hierrouter_graph.policy.encoder import TextEncoder
    from training.replay.store import StateEncoder


class PolicyShape(Protocol):
    """What ``make_policy`` reads of the hyperparameters (``args.PPOArgs`` has these fields; a
    protocol, so this module does not import the algorithm that imports it)."""

    policy_kind: str
    hidden_size: int
    stage_dim: int
    cost_scale: float
    seed: int


__all__ = [
    "MLP_KIND",
    "POLICY_KINDS",
    "PolicyShape",
    "TrainablePolicy",
    "build_env",
    "check_compatible",
    "make_policy",
]

POLICY_KINDS: tuple[str, ...] = tuple(TRAINED_POLICY_KINDS)
"""``PPOArgs.policy_kind``, the library's registry (``dynamic.TRAINED_POLICY_KINDS``): "mlp" =
``RouterPolicy`` (one logit per pool index, the paper's), "descriptor" = ``DescriptorPolicy`` (one
shared scorer of (state, model descriptor): the pool may change later)."""

TrainablePolicy = RouterPolicy | DescriptorPolicy
"""What ``train.train`` accepts: both have the same forward (embeddings, stages, costs, confidences,
alphas) → (logits, value)."""


def make_policy(
    config: RouterConfig, encoder: TextEncoder | StateEncoder, args: PolicyShape
) -> TrainablePolicy:
    """A fresh ``args.policy_kind`` policy for ``config``; its initialisation is seeded by ``args.seed``.

    The descriptor policy embeds its members' model cards with ``encoder`` right away (the same
    encoder as the states, as it will at inference).
    """
    shape: dict[str, Any] = {
        "encoder_name": encoder.name,
        "embedding_dim": encoder.dim,
        "horizon": config.horizon,
        "hidden_size": args.hidden_size,
        "stage_dim": args.stage_dim,
        "cost_scale": args.cost_scale,
        "max_seq_len": config.max_seq_len,
        "allow_stop": config.allow_stop,
        "uncertainty_state": config.uncertainty_state,
        "alpha_range": config.alpha_range,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        if args.policy_kind == DESCRIPTOR_KIND:
            return DescriptorPolicy(config.models, encoder=encoder, **shape)
        return RouterPolicy(config.model_names, **shape)


def build_env(
    config: RouterConfig,
    items: Sequence[Item],
    pool: Mapping[str, PoolMember],
    encoder: StateEncoder,
    *,
    reward: str = "task",
    cache: ReplyCache | None = None,
    memo: ScoreMemo | None = None,
) -> gym.Env[Any, Any]:
    """The training environment. Observed cost is left raw (cost_scale 1): the policy scales it,
    exactly as it will when the graph hands it the raw cost at inference. Terminal states are not
    encoded: the rollout never reads their observation. ``memo``: scores to share with other runs."""
    from training.rl.env import HierRouterEnv

    return HierRouterEnv(
        config,
        items,
        pool,
        encoder,
        reward_metric=reward,
        cache=cache,
        cost_scale=1.0,
        encode_terminal=False,
        memo=memo,
    )


def check_compatible(env: gym.Env[Any, Any], policy: TrainablePolicy, reward: str) -> None:
    """Fail before the first episode on a mismatch that would otherwise train a useless policy."""
    base = env.unwrapped
    n_actions = getattr(env.action_space, "n", None)
    if n_actions is not None and int(n_actions) != len(policy.actions):
        raise ValueError(
            f"the env has {n_actions} actions but the policy has {len(policy.actions)} "
            f"(pool {policy.pool}{' + STOP' if policy.allow_stop else ''})"
        )
    config = getattr(base, "config", None)
    if isinstance(config, RouterConfig):  # the encoder is the env's own: its name is not the config's
        PolicySignature.from_config(config, encoder=False).check(PolicySignature.of(policy))
    metric = getattr(base, "reward_metric", reward)
    if metric != reward:
        raise ValueError(f"args.reward={reward!r} but the environment rewards {metric!r}")
    if float(getattr(base, "cost_scale", 1.0)) != 1.0:
        raise ValueError(
            "the env scales the observed cost, but the graph gives the policy the raw cost at inference; "
            "build the env with cost_scale=1.0 and set PPOArgs.cost_scale (the policy's) instead"
        )
