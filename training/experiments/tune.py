"""Choose PPO's learning rate and length on a validation split carved from the train items.

Why: the paper's hyperparameters (8 iterations × 128 episodes at lr 1e-4) barely move a
near-uniform initial policy on a small recorded dataset, and choosing others by their test score
would leak the test split into the reported number. This tool holds out a task-stratified share of
the recorded *train* items, trains one PPO run per grid point on the rest, scores each greedy policy
on the held-out items by the replayed net reward (the quantity PPO maximises), and prints the
``training/ppo.py`` command of the winner, which then trains on every train item and is evaluated
once on the test split.

    python training/tune.py                                  # lr {1e-4, 3e-4, 1e-3} × iterations {8, 32, 96}
    python training/tune.py --lrs 3e-4 1e-3 --iterations 16 --val-share 0.3 --seeds 42 43

Writes ``run_dir/summary.json``. Replay only: it uses the train items whose whole tree is recorded
(``training/record.py``; the default pool's shipped record needs nothing more). The command line is
``training/cli/tune.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.dynamic import load_saved_policy
from training.evaluation.strategies import best_route, per_task_routes, router_routes
from training.replay.readers import CachedEncoder, ReplayOnlyCache
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import candidate_routes, encode_recorded_states, outcome_tree, route_label
from training.rl.args import PPOArgs
from training.rl.train import train_router
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "DEFAULT_ITERATIONS",
    "DEFAULT_LRS",
    "SECTION",
    "GridResult",
    "TuneResult",
    "markdown_section",
    "split_validation",
    "tune",
]

DEFAULT_LRS = (1e-4, 3e-4, 1e-3)
DEFAULT_ITERATIONS = (8, 32, 96)
SECTION = "tuning"
"""Name of the marked block of docs/results.md this tool owns (``reports.write_marked_section``)."""


def split_validation(items: Sequence[Item], share: float, seed: int) -> tuple[list[Item], list[Item]]:
    """(fit, validation): ``share`` of each task's items, drawn with ``seed``, held out.

    Per task so a small validation split still holds every task; at least one item of a task
    with two or more is held out, and at least one is kept for fitting.
    """
    if not 0 < share < 1:
        raise ValueError(f"val_share must be in (0, 1), got {share}")
    by_task: dict[str, list[Item]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    held: set[str] = set()
    rng = random.Random(seed)
    for task in sorted(by_task):
        group = sorted(by_task[task], key=lambda item: item.id)
        if len(group) < 2:
            continue
        n = min(len(group) - 1, max(1, round(share * len(group))))
        held.update(item.id for item in rng.sample(group, n))
    return [i for i in items if i.id not in held], [i for i in items if i.id in held]


@dataclass(frozen=True)
class GridResult:
    """One grid point: its hyperparameters and its held-out scores (mean over seeds)."""

    learning_rate: float
    iterations: int
    val_reward: float
    val_task_metric: float
    per_seed_reward: tuple[float, ...]
    routes: dict[str, int]
    """How often each greedy route was taken on the validation items (first seed)."""


@dataclass(frozen=True)
class TuneResult:
    fit_items: int
    val_items: int
    best_fixed_route: str
    best_fixed_val_reward: float
    grid: list[GridResult]
    per_task_val_reward: float | None = None
    """Held-out reward of per-task routing chosen on the fitting items (``strategies.per_task_routes``;
    a task without fitting items takes the best fixed route): the bar a router that reads only
    the query must reach when the pool's complementarity is per task."""

    @property
    def best(self) -> GridResult:
        """Highest held-out reward; ties go to the cheaper (fewer iterations, then lower lr) run."""
        return max(self.grid, key=lambda g: (g.val_reward, -g.iterations, -g.learning_rate))


def tune(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    run_dir: Path,
    *,
    lrs: Sequence[float] = DEFAULT_LRS,
    iterations: Sequence[int] = DEFAULT_ITERATIONS,
    seeds: Sequence[int] = (42,),
    val_share: float = 0.25,
    split_seed: int = 0,
    base: PPOArgs | None = None,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Train one PPO run per (lr, iterations, seed) on the fit items; score each on the held-out
    items by replaying the recorded tree (every route of every item must be recorded)."""
    fit, val = split_validation(items, val_share, split_seed)
    if not fit or not val:
        raise ValueError(f"need items to fit and to validate on; got {len(fit)} and {len(val)}")
    cached = CachedEncoder(encoder, store)
    encode_recorded_states(cached, config, pool, [*fit, *val], store)
    memo = ScoreMemo()
    fit_tree = outcome_tree(config, pool, fit, store, memo=memo)
    val_tree = outcome_tree(config, pool, val, store, memo=memo)
    fixed = best_route(fit_tree, fit, candidate_routes(config))
    fixed_reward = float(np.mean([val_tree[item.id][fixed].reward for item in val]))
    by_task = per_task_routes(fit_tree, fit, candidate_routes(config))
    per_task_reward = float(np.mean([val_tree[i.id][by_task.get(i.task, fixed)].reward for i in val]))
    log(
        f"fit on {len(fit)} items, validate on {len(val)}; best fixed route on fit: "
        f"{route_label(fixed)} (validation reward {fixed_reward:.4f}); per-task routing chosen on fit: "
        f"validation reward {per_task_reward:.4f}"
    )
    base = base or PPOArgs()
    grid: list[GridResult] = []
    for lr in lrs:
        for n_iterations in iterations:
            rewards: list[float] = []
            metrics: list[float] = []
            routes: dict[str, int] = {}
            for seed in seeds:
                args = PPOArgs(
                    **{**asdict(base), "learning_rate": lr, "iterations": n_iterations, "seed": seed}
                )
                folder = run_dir / f"lr{lr:g}-it{n_iterations}-seed{seed}"
                trained = train_router(config, fit, pool, cached, args, folder, cache=ReplayOnlyCache(store))
                policy = load_saved_policy(trained.policy_dir, config, cached)
                chosen = router_routes(policy, config, val_tree, val)
                outcomes = [val_tree[item.id][route] for item, route in zip(val, chosen, strict=True)]
                rewards.append(float(np.mean([o.reward for o in outcomes])))
                metrics.append(float(np.mean([o.task_metric for o in outcomes])))
                if not routes:
                    for route in chosen:
                        routes[route_label(route)] = routes.get(route_label(route), 0) + 1
            point = GridResult(
                lr, n_iterations, float(np.mean(rewards)), float(np.mean(metrics)), tuple(rewards), routes
            )
            log(
                f"lr {lr:g}, {n_iterations} iterations: validation reward {point.val_reward:.4f} "
                f"(seeds {', '.join(f'{r:.4f}' for r in rewards)}), task metric {point.val_task_metric:.3f}"
            )
            grid.append(point)
    return TuneResult(len(fit), len(val), route_label(fixed), fixed_reward, grid, per_task_reward)


def markdown_section(result: TuneResult, command: str, train_command: str, *, shipped: bool = False) -> str:
    """The "PPO hyperparameters" block of docs/results.md: the grid, the fixed-route yardstick, the
    choice and the command that trains it (``shipped``: the default pool, whose policy it is)."""
    best = result.best
    lines = [
        "## PPO hyperparameters, chosen on held-out train items",
        "",
        f"- **Command:** `{command}`",
        f"- **Split:** {result.fit_items} recorded train items to fit, {result.val_items} held out "
        "(per task); the test split is not used.",
        f"- **Yardstick:** the best fixed route chosen on the fitting items, `{result.best_fixed_route}`, "
        f"scores {result.best_fixed_val_reward:.4f} on the held-out items"
        + (
            f"; per-task routing chosen on them (each task's best route) scores "
            f"{result.per_task_val_reward:.4f}."
            if result.per_task_val_reward is not None
            else "."
        ),
        "",
        "| lr | iterations | held-out reward Q − αC | held-out task metric | greedy routes (held out) |",
        "|---:|---:|---:|---:|---|",
    ]
    for point in result.grid:
        routes = ", ".join(
            f"`{label}` {n}" for label, n in sorted(point.routes.items(), key=lambda kv: -kv[1])
        )
        mark = " **(chosen)**" if point == best else ""
        lines.append(
            f"| {point.learning_rate:g} | {point.iterations}{mark} | {point.val_reward:.4f} | "
            f"{point.val_task_metric:.3f} | {routes} |"
        )
    lines += [
        "",
        f"Chosen: lr {best.learning_rate:g}, {best.iterations} iterations; trained on every recorded train "
        f"item with `{train_command}` "
        + (
            "(the shipped default policy; evaluated once on the test split above)."
            if shipped
            else "(then evaluated once on the test split)."
        ),
    ]
    return "\n".join(lines) + "\n"
