"""The seed spread: a PPO router's row as the mean over several seeds, beside each seed's own.

Why: one PPO seed is one draw. On a small test split the gap between two seeds (or two machines:
``make demo`` gave 0.189 where docs/results.md says 0.161) can be as large as the effect being
claimed, so a reader needs the mean over seeds, each seed's result, and their spread next to the
difference with the best single. ``evaluate(seed_policies=...)`` adds the "mean of N seeds" row
(per query, the mean of every seed's scores: the expected result of a seed drawn at random, so
its query-bootstrap interval keeps its usual meaning) and ``EvaluationResult.seed_runs``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.policy.protocol import RoutingPolicy
from training.evaluation.strategies import ROUTER, Scores, Strategy, router_strategy
from training.replay.tree import OutcomeTree, Route, route_label
from training.tasks.items import Item

__all__ = ["SeedRun", "seed_runs", "seed_spread", "seed_strategies"]


@dataclass(frozen=True)
class SeedRun:
    """One PPO seed's policy on the test split (overall means): what the seed spread is made of."""

    seed: int
    reward: float
    task_metric: float
    cost: float
    vs_best_single: float
    top_route: str


def seed_strategies(
    policies: Mapping[int, RoutingPolicy], config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> tuple[Strategy, list[Strategy]]:
    """The mean-over-seeds row (per query, the mean of every seed's scores: the expected result of
    a seed drawn at random) and each seed's own greedy strategy."""
    runs = [router_strategy(policy, config, tree, items) for policy in policies.values()]
    fields = ("task_metric", "f1", "quality", "cost", "reward")
    mean = Scores(*(np.mean([getattr(r.scores, f) for r in runs], axis=0) for f in fields))
    name = f"{ROUTER} (mean of {len(runs)} seeds)"
    return Strategy(
        name, "router_seeds", mean, tuple(None for _ in items), "seeds " + ", ".join(map(str, policies))
    ), runs


def seed_runs(seeds: Sequence[int], runs: Sequence[Strategy], best: Strategy) -> list[SeedRun]:
    out = []
    for seed, run in zip(seeds, runs, strict=True):
        top = Counter(route_label(cast(Route, r)) for r in run.routes).most_common(1)[0]
        out.append(
            SeedRun(
                seed, float(run.scores.reward.mean()), float(run.scores.task_metric.mean()),
                float(run.scores.cost.mean()), float((run.scores.reward - best.scores.reward).mean()),
                f"{top[0]} ({top[1] / len(run.routes):.0%})",
            )
        )  # fmt: skip
    return out


def seed_spread(runs: Sequence[SeedRun]) -> tuple[float, float, float]:
    """(sample standard deviation, min, max) of the seeds' mean test rewards (std 0 for one seed)."""
    rewards = [run.reward for run in runs]
    if not rewards:
        raise ValueError("seed_spread needs at least one seed run")
    std = float(np.std(rewards, ddof=1)) if len(rewards) > 1 else 0.0
    return std, min(rewards), max(rewards)
