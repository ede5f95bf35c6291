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

Runs are resumable: ``run_dir/checkpoint.pt`` is rewritten atomically after every iteration with
everything that influences the next one (weights, Adam state, every RNG — the environment's
included), so a run killed at any point and started again with the same ``run_dir`` finishes
with bit-identical weights to an uninterrupted run.

    python training/ppo.py --run-dir runs/ppo --replay runs/replay.sqlite --reward task
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch import nn
from torch.distributions import Categorical
from tqdm import tqdm

from hierrouter_graph.loading_errors import LoadError, read_json_object
from training.rl.checkpointing import (
    TensorBoard,
    env_rng_state,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
    seed_everything,
    set_env_rng_state,
    write_log,
)
from training.rl.rollout_data import LOG_COLUMNS, EpisodeSummary, StateBatch, log_row
from training.rl.setup import MLP_KIND, POLICY_KINDS, TrainablePolicy, check_compatible

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_COLUMNS",
    "LOG_NAME",
    "POLICY_DIRNAME",
    "RESUMABLE_CHANGES",
    "PPOArgs",
    "Rollout",
    "TrainResult",
    "collect_rollouts",
    "compute_gae",
    "ppo_update",
    "train",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
POLICY_DIRNAME = "policy"

# ------------------------------------------------------------------------------------ arguments


@dataclass
class PPOArgs:
    """Hyperparameters; the defaults are the paper's (Appendix B) where it gives one."""

    iterations: int = 8
    """PPO iterations (rollout collection + update)."""
    rollouts: int = 128
    """Episodes per iteration; each is L transitions, so the batch is ``rollouts·L`` steps."""
    num_minibatches: int = 16
    """Minibatches per update epoch."""
    update_epochs: int = 4
    """Passes over an iteration's batch."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_vloss: bool = False
    """CleanRL clips the value loss by default; the paper does not say, and with a terminal reward
    in [−αC, 1] and a critic starting at 0, clipping only slows the critic down."""
    vf_coef: float = 0.5
    ent_coef: float = 0.01
    max_grad_norm: float = 0.3
    learning_rate: float = 1e-4
    adam_eps: float = 1e-4
    norm_adv: bool = True
    target_kl: float | None = None
    """Stop an iteration's update epochs early once approx KL exceeds this (None: never)."""
    seed: int = 42
    """PPO seed (init, actions, items)."""
    hidden_size: int = 256
    stage_dim: int = 16
    cost_scale: float = 1.0
    """The policy divides its cost input by this (the env always reports the raw cost)."""
    reward: str = field(default="task", metadata={"choices": ("task", "f1")})
    """Quality used in the reward: "task" (the item's own metric) or "f1" (the paper's token-F1)."""
    device: str = "cpu"
    """Torch device of the policy."""
    policy_kind: str = field(default=MLP_KIND, metadata={"choices": POLICY_KINDS})
    """Which policy ``make_policy`` builds: mlp, RouterPolicy (fixed pool); descriptor,
    DescriptorPolicy (the pool may change after training)."""

    def __post_init__(self) -> None:
        if self.policy_kind not in POLICY_KINDS:
            raise ValueError(f"policy_kind must be one of {POLICY_KINDS}, got {self.policy_kind!r}")
        if self.reward not in ("task", "f1"):
            raise ValueError(f"reward must be 'task' or 'f1', got {self.reward!r}")
        for name in ("iterations", "rollouts", "num_minibatches", "update_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.cost_scale <= 0:
            raise ValueError("learning_rate and cost_scale must be > 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_policy(cls, policy_dir: Path) -> PPOArgs:
        """The arguments a saved policy was trained with (``policy.json``'s ``training.args``,
        written by ``train``).

        Why: "retrain the shipped policy" should name the policy, not copy its learning rate and
        length into a Makefile and docs where they drift from what was actually chosen.

        Raises:
            FileNotFoundError: no ``policy.json`` in ``policy_dir``.
            LoadError: the file records no PPO arguments, or unknown or invalid ones.
        """
        path = policy_dir / "policy.json"
        data = read_json_object(path, "a saved policy's policy.json")
        training = data.get("training")
        recorded = training.get("args") if isinstance(training, dict) else None
        if not isinstance(recorded, dict):
            raise LoadError(f"{path}: expected training.args (the PPO arguments it was trained with)")
        unknown = sorted(set(recorded) - {field.name for field in fields(cls)})
        if unknown:
            raise LoadError(f"{path}: training.args has fields PPOArgs does not know: {unknown}")
        try:
            return cls(**recorded)
        except (TypeError, ValueError) as error:
            raise LoadError(f"{path}: training.args are not valid PPO arguments: {error}") from error


RESUMABLE_CHANGES: frozenset[str] = frozenset({"iterations", "device"})
"""PPOArgs fields a resumed run may change without changing what the finished iterations computed."""


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


# ------------------------------------------------------------------------------------ training


@dataclass
class TrainResult:
    """What ``train`` leaves behind; ``history`` holds every logged row, resumed ones included."""

    policy: TrainablePolicy
    run_dir: Path
    policy_dir: Path
    checkpoint: Path
    log: Path
    history: list[dict[str, float]]
    start_iteration: int
    """Iterations already done when this call started (> 0: the run was resumed)."""

    @property
    def resumed(self) -> bool:
        return self.start_iteration > 0

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


def train(
    env: gym.Env[Any, Any] | Callable[[], gym.Env[Any, Any]],
    policy: TrainablePolicy,
    args: PPOArgs,
    run_dir: str | os.PathLike[str],
    progress: bool = True,
    *,
    resume: bool = True,
    metadata: Mapping[str, Any] | None = None,
    tensorboard: bool = True,
) -> TrainResult:
    """Train ``policy`` with PPO on ``env`` (an env or a factory); resumes from ``run_dir``.

    A checkpoint in ``run_dir`` written with the same hyperparameters (``iterations`` and
    ``device`` may differ) is continued from its next iteration; ``resume=False`` starts over.
    The final policy is saved to ``run_dir/policy`` (loadable by ``HierRouterGraph(config,
    policy=...)``), with the training arguments and ``metadata`` in its ``policy.json``.
    """
    env = env if isinstance(env, gym.Env) else env()
    check_compatible(env, policy, args.reward)
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = folder / CHECKPOINT_NAME, folder / LOG_NAME
    device = torch.device(args.device)
    policy.to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=args.learning_rate, eps=args.adam_eps)
    generator = torch.Generator().manual_seed(args.seed)

    history: list[dict[str, float]] = []
    start = 0
    if resume and checkpoint.is_file():
        state = load_checkpoint(
            checkpoint,
            args.as_dict(),
            RESUMABLE_CHANGES,
            advice="use another run_dir, or pass resume=False / --no-resume to start over",
            saved_defaults={"policy_kind": MLP_KIND},  # checkpoints written before the field existed
        )
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        restore_rng_states(state["rng"])
        generator.set_state(state["rng"]["action_generator"])
        set_env_rng_state(env, state["rng"]["env"])
        start, history = int(state["iteration"]), list(state["history"])
        write_log(log_path, LOG_COLUMNS, history)  # the CSV may lag the checkpoint if killed in between
    else:
        seed_everything(args.seed)

    board = TensorBoard(folder, tensorboard, prefix="ppo", step_key="episodes")
    total_episodes = args.iterations * args.rollouts
    bar = tqdm(
        total=total_episodes,
        initial=min(start * args.rollouts, total_episodes),
        unit="ep",
        desc="ppo",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        for iteration in range(start, args.iterations):
            began = time.perf_counter()
            policy.train()
            rollout = collect_rollouts(
                env,
                policy,
                args.rollouts,
                generator,
                seed=args.seed if iteration == 0 else None,
                device=device,
                on_episode=lambda _summary: bar.update(1),
            )
            advantages, returns = compute_gae(
                rollout.rewards, rollout.values, rollout.dones, args.gamma, args.gae_lambda
            )
            stats = ppo_update(policy, optimizer, rollout, advantages, returns, args, generator, device)
            seconds = time.perf_counter() - began
            row = log_row(iteration + 1, (iteration + 1) * args.rollouts, rollout.episodes, stats, seconds)
            history.append(row)
            save_checkpoint(
                checkpoint,
                {
                    "format": 1,
                    "iteration": iteration + 1,  # iterations completed
                    "policy": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "rng": rng_states(action_generator=generator.get_state(), env=env_rng_state(env)),
                    "args": args.as_dict(),
                    "history": history,
                },
            )
            write_log(log_path, LOG_COLUMNS, history)
            board.log(row, LOG_COLUMNS[2:])
            bar.set_postfix(
                it=iteration + 1,
                ret=f"{row['mean_return']:.3f}",
                q=f"{row['mean_quality']:.3f}",
                refresh=False,
            )
    finally:
        bar.close()
        board.close()

    policy.eval()
    done = len(history)
    extra = {
        "training": {
            "algorithm": "ppo",
            "paper": "arXiv 2511.09873",
            "reward_metric": args.reward,
            "args": args.as_dict(),
            "iterations_completed": done,
            "episodes": done * args.rollouts,
            "final": dict(history[-1]) if history else {},
            **dict(metadata or {}),
        }
    }
    policy_dir = policy.save(folder / POLICY_DIRNAME, extra=json.loads(json.dumps(extra, default=str)))
    return TrainResult(policy, folder, policy_dir, checkpoint, log_path, history, start)
