"""PPO + GAE for the HierRouter policy, in one file (CleanRL's ``ppo.py``, reshaped for routing).

Why a file of its own: the router is the only learned part of HierRouter, and the paper trains it
with plain PPO on a sparse terminal reward (Algorithm 1, Appendix B). Keeping the whole algorithm
in one place — rollouts, GAE, the clipped loss, the update, logging and checkpoints — makes it
easy to check against the paper and against CleanRL line by line.

One episode = one query answered in exactly L hops; the reward is 0 on every hop but the last,
which pays R = Q(c_L) − α·C_L (``training.tasks.reward``). An iteration collects ``rollouts`` whole
episodes (``rollouts·L`` transitions), computes GAE over them, then runs ``update_epochs`` passes
of ``num_minibatches`` clipped-PPO minibatches.

With ``RouterConfig.allow_stop`` episodes have variable length: STOP (from stage 1 on) is one more
transition that pays R = Q(c_t) − α·C_t and ends the episode. Nothing else changes: GAE is cut by
``dones`` wherever an episode ends, and STOP is masked at stage 0 inside ``RouterPolicy.forward``,
which both the rollout and the update call, so their log-probs agree.

The loop that runs these iterations, checkpoints and saves the policy is ``train.py``; the
hyperparameters are ``args.py``.

    python training/ppo.py --run-dir runs/ppo --replay runs/replay.sqlite --reward task
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical

from training.rl.args import PPOArgs
from training.rl.rollout_data import EpisodeSummary, StateBatch
from training.rl.setup import TrainablePolicy

__all__ = ["Rollout", "collect_rollouts", "compute_gae", "ppo_update"]


# ------------------------------------------------------------------------------------ rollouts


@dataclass
class Rollout:
    """``rollouts`` whole episodes, flattened to T transitions in the order they happened.

    T ≤ ``rollouts``·L + ``rollouts``: L hops per episode, or fewer hops plus one STOP transition.

    ``dones[t] = 1`` when transition t ended its episode, which is what cuts GAE between
    episodes. Every episode is complete, so nothing needs bootstrapping past the buffer.
    """

    states: StateBatch  # the T states acted in, as the policy reads them
    actions: torch.Tensor  # [T] long
    logprobs: torch.Tensor  # [T] float32, under the policy that acted
    values: torch.Tensor  # [T] float32, V(s_t) under the policy that acted
    rewards: torch.Tensor  # [T] float32
    dones: torch.Tensor  # [T] float32
    episodes: list[EpisodeSummary]


def collect_rollouts(
    env: gym.Env[Any, Any],
    policy: TrainablePolicy,
    episodes: int,
    generator: torch.Generator,
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    on_episode: Callable[[EpisodeSummary], None] | None = None,
) -> Rollout:
    """Play ``episodes`` whole episodes with actions sampled from π (seeded by ``generator``).

    ``seed`` seeds the environment at the first reset only (a fresh run); later resets continue
    the environment's own RNG, which the checkpoint saves, so item draws survive a resume.
    """
    observations: list[Mapping[str, Any]] = []
    actions: list[int] = []
    logprobs: list[float] = []
    values: list[float] = []
    rewards: list[float] = []
    dones: list[float] = []
    summaries: list[EpisodeSummary] = []
    for episode in range(episodes):
        obs, info = env.reset(seed=seed if episode == 0 else None)
        episode_return, done = 0.0, False
        while not done:
            with torch.no_grad():
                logits, value = policy(*StateBatch.of([obs]).to(device).inputs())
                dist = Categorical(logits=logits[0].float().cpu())
                action = int(torch.multinomial(dist.probs, 1, generator=generator).item())
                logprob = float(dist.log_prob(torch.tensor(action)))
            observations.append(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)  # truncation: treated as the end (no bootstrap)
            actions.append(action)
            logprobs.append(logprob)
            values.append(float(value[0]))
            rewards.append(float(reward))
            dones.append(float(done))
            episode_return += float(reward)
        summaries.append(EpisodeSummary.of(info, episode_return))
        if on_episode is not None:
            on_episode(summaries[-1])
    return Rollout(
        states=StateBatch.of(observations),
        actions=torch.tensor(actions, dtype=torch.long),
        logprobs=torch.tensor(logprobs, dtype=torch.float32),
        values=torch.tensor(values, dtype=torch.float32),
        rewards=torch.tensor(rewards, dtype=torch.float32),
        dones=torch.tensor(dones, dtype=torch.float32),
        episodes=summaries,
    )


# ------------------------------------------------------------------------------------ GAE


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, gamma: float, gae_lambda: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) by GAE over a flat buffer of complete episodes.

    δ_t = r_t + γ·V(s_{t+1})·(1 − done_t) − V(s_t);  A_t = δ_t + γλ·(1 − done_t)·A_{t+1}.
    A terminal transition has no successor value (the episode is over after hop L), so with the
    reward paid only at the end, A at hop ℓ is (γλ)^{L-1-ℓ}-weighted credit for the final R.
    """
    if not bool(dones[-1]):
        raise ValueError("the last transition must end an episode: rollouts hold whole episodes")
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(())
    for t in reversed(range(len(rewards))):
        not_done = 1.0 - dones[t]
        next_value = values[t + 1] if t + 1 < len(values) else torch.zeros(())
        delta = rewards[t] + gamma * next_value * not_done - values[t]
        last = delta + gamma * gae_lambda * not_done * last
        advantages[t] = last
    return advantages, advantages + values


# ------------------------------------------------------------------------------------ update


def ppo_update(
    policy: TrainablePolicy,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    args: PPOArgs,
    generator: torch.Generator,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """``update_epochs`` passes of clipped PPO over shuffled minibatches; returns mean stats."""
    batch = len(rollout.actions)
    states = rollout.states.to(device)
    tensors = (rollout.actions, rollout.logprobs, rollout.values, advantages, returns)
    b_act, b_logp, b_val, b_adv, b_ret = (t.to(device) for t in tensors)
    sums = dict.fromkeys(("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac"), 0.0)
    steps = 0
    for _epoch in range(args.update_epochs):
        order = torch.randperm(batch, generator=generator)
        kl_this_epoch = 0.0
        for mb in order.tensor_split(min(args.num_minibatches, batch)):
            mb = mb.to(device)
            logits, new_value = policy(*states[mb].inputs())
            dist = Categorical(logits=logits)
            new_logp = dist.log_prob(b_act[mb])
            entropy = dist.entropy().mean()
            log_ratio = new_logp - b_logp[mb]
            ratio = log_ratio.exp()
            with torch.no_grad():  # k3 estimator of KL(old || new), as in CleanRL
                approx_kl = ((ratio - 1) - log_ratio).mean()
                clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

            adv = b_adv[mb]
            if args.norm_adv and len(mb) > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            pg_loss = torch.max(
                -adv * ratio, -adv * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
            ).mean()

            if args.clip_vloss:
                v_clipped = b_val[mb] + torch.clamp(new_value - b_val[mb], -args.clip_coef, args.clip_coef)
                v_loss = 0.5 * torch.max((new_value - b_ret[mb]) ** 2, (v_clipped - b_ret[mb]) ** 2).mean()
            else:
                v_loss = 0.5 * ((new_value - b_ret[mb]) ** 2).mean()

            loss = pg_loss - args.ent_coef * entropy + args.vf_coef * v_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
            optimizer.step()

            for key, value in (
                ("policy_loss", pg_loss),
                ("value_loss", v_loss),
                ("entropy", entropy),
                ("approx_kl", approx_kl),
                ("clipfrac", clipfrac),
            ):
                sums[key] += float(value.detach())
            steps += 1
            kl_this_epoch = float(approx_kl)
        if args.target_kl is not None and kl_this_epoch > args.target_kl:
            break
    return {key: value / max(steps, 1) for key, value in sums.items()}
