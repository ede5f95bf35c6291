"""A PPO run from start to saved policy: the loop (``train``) and the one set-up path every
caller takes (``train_router``: build the replayed env → make the policy → train, with the same
run metadata).

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from tqdm import tqdm

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from training.rl.args import RESUMABLE_CHANGES, PPOArgs
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
from training.rl.ppo import collect_rollouts, compute_gae, ppo_update
from training.rl.rollout_data import LOG_COLUMNS, log_row
from training.rl.setup import MLP_KIND, TrainablePolicy, build_env, check_compatible, make_policy
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

if TYPE_CHECKING:
    from hierrouter_graph.policy.encoder import TextEncoder
    from training.replay.store import StateEncoder

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "POLICY_DIRNAME",
    "TrainResult",
    "run_metadata",
    "train",
    "train_router",
]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
POLICY_DIRNAME = "policy"


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


def run_metadata(config: RouterConfig, items: Sequence[Item]) -> dict[str, Any]:
    """What every PPO run records of its setting in ``policy.json``'s ``training`` (beside the
    arguments): the router settings the policy was trained for and how many items it saw."""
    return {
        "alpha": config.alpha,
        "horizon": config.horizon,
        "allow_stop": config.allow_stop,
        "uncertainty_state": config.uncertainty_state,
        "alpha_range": config.alpha_range,
        "train_items": len(items),
    }


def train_router(
    config: RouterConfig,
    items: Sequence[Item],
    pool: Mapping[str, PoolMember],
    states: StateEncoder,
    args: PPOArgs,
    run_dir: str | os.PathLike[str],
    *,
    cache: ReplyCache | None,
    policy_encoder: TextEncoder | StateEncoder | None = None,
    memo: ScoreMemo | None = None,
    progress: bool = False,
    resume: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> TrainResult:
    """The one way a PPO run is set up: the replayed env over ``items`` (``states`` encodes its
    observations, ``cache`` answers its hops, ``memo`` shares scores across runs), a fresh
    ``args.policy_kind`` policy (its encoder ``policy_encoder``, default ``states``), then ``train``.

    Why one function: the PPO command line, the sweep, the tuner and the dynamic-pool experiment
    each wired these three steps by hand and wrote different metadata; now every run's
    ``policy.json`` carries ``run_metadata`` plus the caller's own ``metadata`` (which wins).
    """
    members = {name: pool[name] for name in config.model_names}
    env = build_env(config, items, members, states, reward=args.reward, cache=cache, memo=memo)
    policy = make_policy(config, policy_encoder if policy_encoder is not None else states, args)
    return train(
        env,
        policy,
        args,
        run_dir,
        progress,
        resume=resume,
        metadata={**run_metadata(config, items), **dict(metadata or {})},
    )
