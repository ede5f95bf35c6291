"""Is a pool worth routing? Its complementarity, read off the recorded TRAIN tree before training.

Why: a router can only beat the best single member where members differ in *what* they get
right. The hindsight task oracle (each task's best route) bounds what any task-level router can
gain; when it barely beats the best single member, no router will, and recording the rest of the
tree (hours on a CPU) is wasted. So a pool is checked on train items only (never test), at the
horizon recorded so far (``horizon=1`` needs just the stage-0 replies — a fifth of the tree):

- each route's mean quality and cost per task (the route table);
- the **best single member** (``single_model_strategies``: ``m (1 call)`` and ``m (×L)``, the best
  by mean reward) and the **task oracle** (``task_oracle_strategy``), with the paired bootstrap
  interval of their reward gap, and the per-query oracle as the ceiling;
- the members' **cost range**: the largest over the smallest mean one-call cost (members that cost
  nothing are left out of the ratio).

In-sample choice flatters a pool on few items (the best of M noisy task means is biased up), so
the check also reports **per-task routing chosen leave-one-out**: for each item, the best single
member and its task's best route are chosen on the other items (the same rules: highest mean
reward, ties to the lower mean cost, then candidate order) and scored on the held-out item — what a
task-level router that never saw the item would gain.

The pool passes when the task oracle beats the best single member by at least ``min_gain`` and
the cost range is at least ``min_cost_range`` (the issue-26 criterion: 0.08 and 20×). The gap is
in-sample (the oracle picks its routes on the items it is scored on): a pass is necessary, not
sufficient, for a router that generalizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from training.evaluation.statistics import Interval, bootstrap_indices, mean_interval
from training.evaluation.strategies import (
    Strategy,
    StrategyInputs,
    oracle_strategy,
    single_model_strategies,
    task_oracle_strategy,
)
from training.replay.readers import ReplayMissError
from training.replay.tree import (
    OutcomeTree,
    Route,
    candidate_routes,
    complete_items,
    outcome_tree,
    route_label,
    with_horizon,
)
from training.tasks.items import Item

__all__ = ["MIN_COST_RANGE", "MIN_GAIN", "PoolCheck", "RouteRow", "check_pool"]

MIN_GAIN = 0.08
"""The task oracle's least reward gain over the best single member for a pool to be worth routing."""
MIN_COST_RANGE = 20.0
"""The least ratio of the dearest to the cheapest member's mean one-call cost."""


@dataclass(frozen=True)
class RouteRow:
    """One candidate route: mean quality and cost per task and over all checked items."""

    route: str
    quality: dict[str, float]
    cost: dict[str, float]
    overall_quality: float
    overall_cost: float


@dataclass(frozen=True)
class PoolCheck:
    """What ``check_pool`` found (``passes``: both criteria hold)."""

    horizon: int
    alpha: float
    reward_metric: str
    items: int
    items_requested: int
    per_task: dict[str, int]
    routes: list[RouteRow]
    best_single: str
    best_single_reward: Interval
    task_routes: dict[str, str]
    """Task → the task oracle's route."""
    task_oracle_reward: Interval
    gain: Interval
    """Task oracle − best single, mean reward with its paired 95% bootstrap interval."""
    loo_task_reward: Interval
    """Per-task routing chosen leave-one-out (module docstring), scored on the held-out items."""
    loo_gain: Interval
    """Leave-one-out per-task routing − the best single member chosen leave-one-out."""
    oracle_reward: Interval
    member_costs: dict[str, float]
    """Member → mean cost of one call (route ``(m,)``)."""
    cost_range: float
    min_gain: float
    min_cost_range: float

    @property
    def passes(self) -> bool:
        return self.gain.mean >= self.min_gain and self.cost_range >= self.min_cost_range

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passes": self.passes}


def _best(rewards: np.ndarray, costs: np.ndarray, columns: Sequence[int]) -> int:
    """The column of highest mean reward (ties: lower mean cost, then the first)."""
    return min(columns, key=lambda c: (-float(rewards[:, c].mean()), float(costs[:, c].mean()), c))


def _leave_one_out(
    tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route], singles: Sequence[Route]
) -> tuple[np.ndarray, np.ndarray]:
    """Per item: the reward of its task's best route and of the best single route, both chosen on
    the other items (of its task / of all). An item alone in its task keeps the single's choice."""
    rewards = np.array([[tree[i.id][r].reward for r in candidates] for i in items])
    costs = np.array([[tree[i.id][r].cost for r in candidates] for i in items])
    single_columns = [candidates.index(route) for route in singles]
    every = list(range(len(candidates)))
    task_of = np.array([item.task for item in items])
    routed, single = np.empty(len(items)), np.empty(len(items))
    for row in range(len(items)):
        others = np.arange(len(items)) != row
        chosen_single = (
            _best(rewards[others], costs[others], single_columns) if others.any() else single_columns[0]
        )
        same_task = others & (task_of == task_of[row])
        chosen_task = _best(rewards[same_task], costs[same_task], every) if same_task.any() else chosen_single
        routed[row], single[row] = rewards[row, chosen_task], rewards[row, chosen_single]
    return routed, single


def _cost_range(costs: Mapping[str, float]) -> float:
    paid = [cost for cost in costs.values() if cost > 0]
    return max(paid) / min(paid) if len(paid) >= 2 else 1.0


def check_pool(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Sequence[Item],
    store: ReplyCache,
    *,
    horizon: int | None = None,
    alpha: float | None = None,
    reward_metric: str = "task",
    min_gain: float = MIN_GAIN,
    min_cost_range: float = MIN_COST_RANGE,
    resamples: int = 1000,
    seed: int = 0,
) -> PoolCheck:
    """Check ``config``'s pool on the ``items`` (train items) whose tree to ``horizon`` is recorded.

    Args:
        config: the pool's router config (its models, stage prompts, rates and α).
        pool: the members (``build_pool(config, weights=False)`` replays without loading weights).
        items: the items to check on — train or specialization items, never the test split.
        store: the replay store holding the recorded replies (read only; nothing is generated).
        horizon: hops per route (default: the config's L); 1 needs only the stage-0 replies.
        alpha: the α of R = Q − α·C (default: the config's).
        reward_metric: the quality the reward uses ("task", "f1" or "blend").
        min_gain: the task oracle's least gain over the best single member to pass.
        min_cost_range: the least cost range (dearest / cheapest member) to pass.
        resamples: bootstrap resamples of the paired intervals.
        seed: the bootstrap's seed.

    Raises:
        ReplayMissError: when no item has its tree to ``horizon`` recorded (naming how to record it).
    """
    checked_config = with_horizon(config, horizon) if horizon is not None else config
    alpha = config.alpha if alpha is None else alpha
    complete = complete_items(checked_config, pool, items, store)
    if not complete:
        raise ReplayMissError(
            f"none of the {len(items)} items has its outcome tree to horizon {checked_config.horizon} "
            "recorded; record it first (python training/record.py --split train "
            f"--horizon {checked_config.horizon} ...)"
        )
    tree = outcome_tree(checked_config, pool, complete, store, reward_metric=reward_metric, alpha=alpha)
    candidates = candidate_routes(checked_config)
    by_task: dict[str, list[Item]] = {}
    for item in complete:
        by_task.setdefault(item.task, []).append(item)
    rows = []
    for route in candidates:
        quality = {
            t: float(np.mean([tree[i.id][route].quality for i in group])) for t, group in by_task.items()
        }
        cost = {t: float(np.mean([tree[i.id][route].cost for i in group])) for t, group in by_task.items()}
        outcomes = [tree[i.id][route] for i in complete]
        rows.append(
            RouteRow(
                route_label(route), quality, cost,
                float(np.mean([o.quality for o in outcomes])), float(np.mean([o.cost for o in outcomes])),
            )
        )  # fmt: skip
    singles = single_model_strategies(checked_config, tree, complete)
    best = max(singles, key=lambda s: (float(s.scores.reward.mean()), -float(s.scores.cost.mean())))
    inputs = StrategyInputs(
        config=checked_config, tree=tree, items=complete, candidates=candidates,
        fixed_route=candidates[0], fixed_source="unused", alpha=alpha,
    )  # fmt: skip
    task_oracle: Strategy = task_oracle_strategy(inputs)[0]
    oracle: Strategy = oracle_strategy(inputs)[0]
    index = bootstrap_indices(len(complete), resamples, seed)
    single_routes = [route for s in singles for route in dict.fromkeys(s.routes) if route is not None]
    loo_routed, loo_single = _leave_one_out(tree, complete, candidates, single_routes)
    member_costs = {
        name: float(np.mean([tree[i.id][(name,)].cost for i in complete]))
        for name in checked_config.model_names
    }
    task_routes: dict[str, str] = {}
    for item, chosen in zip(complete, task_oracle.routes, strict=True):
        if chosen is not None:
            task_routes.setdefault(item.task, route_label(chosen))
    return PoolCheck(
        horizon=checked_config.horizon,
        alpha=alpha,
        reward_metric=reward_metric,
        items=len(complete),
        items_requested=len(items),
        per_task={t: len(group) for t, group in by_task.items()},
        routes=rows,
        best_single=best.name,
        best_single_reward=mean_interval(best.scores.reward, index),
        task_routes=task_routes,
        task_oracle_reward=mean_interval(task_oracle.scores.reward, index),
        gain=mean_interval(task_oracle.scores.reward - best.scores.reward, index),
        loo_task_reward=mean_interval(loo_routed, index),
        loo_gain=mean_interval(loo_routed - loo_single, index),
        oracle_reward=mean_interval(oracle.scores.reward, index),
        member_costs=member_costs,
        cost_range=_cost_range(member_costs),
        min_gain=min_gain,
        min_cost_range=min_cost_range,
    )
