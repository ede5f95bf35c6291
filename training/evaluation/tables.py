"""The evaluation's tables: one ``GroupResult`` (a task, or overall) of ``StrategyRow``s, each with
paired bootstrap intervals over the same queries (``group_table``).

Why apart from ``evaluate.py``: that module decides WHICH strategies and items are compared
(replaying the trees, choosing the fixed route); this one only turns their per-query scores into
a table, which the reports, the seeds row and the sweep read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from numpy.typing import NDArray

from training.evaluation.statistics import Interval, bootstrap_indices, gap_interval, mean_interval
from training.evaluation.strategies import (
    ORACLE,
    Strategy,
)
from training.replay.tree import (
    Route,
    route_label,
)

__all__ = [
    "GroupResult",
    "StrategyRow",
    "group_table",
]


@dataclass(frozen=True)
class StrategyRow:
    """One strategy in one table: every column as a mean with its paired bootstrap interval."""

    name: str
    kind: str
    description: str
    task_metric: Interval
    f1: Interval
    cost: Interval
    quality: Interval
    reward: Interval
    gap: Interval
    vs_best_single: Interval | None
    """Paired interval of (this − best single) mean reward; None on the best single's own row."""

    @property
    def inside_noise(self) -> bool:
        """The difference with the best single is not distinguishable from 0 at 95%."""
        return self.vs_best_single is not None and self.vs_best_single.contains(0.0)


@dataclass(frozen=True)
class GroupResult:
    """One table: a task's test queries, or all of them (``"overall"``)."""

    name: str
    n: int
    rows: list[StrategyRow]
    best_single: str
    router_routes: dict[str, int] = field(default_factory=dict)
    """How often the router took each route on this table's queries (empty without a router)."""
    router_lengths: dict[int, int] = field(default_factory=dict)
    """How often the router's route had each length (hops); < L only when it chose STOP."""
    routes_taken: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per routing strategy (the router and the learned baselines): how often it took each route."""

    def row(self, name: str) -> StrategyRow:
        for row in self.rows:
            if row.name == name:
                return row
        raise KeyError(f"no strategy {name!r} in table {self.name!r}; have {[r.name for r in self.rows]}")


def _describe(strategy: Strategy, index: NDArray[np.intp]) -> str:
    routes = {strategy.routes[i] for i in index}
    if len(routes) == 1 and None not in routes:
        return route_label(cast(Route, next(iter(routes))))
    return strategy.description or "per query"


def group_table(
    name: str, index: NDArray[np.intp], strategies: Sequence[Strategy], resamples: int, seed: int
) -> GroupResult:
    """The table of the queries ``index``: every strategy's row with paired intervals (the same
    bootstrap resamples for every row), the best single model and the router's routes."""
    scores = {s.name: s.scores.take(index) for s in strategies}
    singles = [s.name for s in strategies if s.kind == "single"]
    best = max(singles, key=lambda n: float(scores[n].reward.mean()))  # max keeps the first of ties
    best_reward, oracle_reward = scores[best].reward, scores[ORACLE].reward
    boot = bootstrap_indices(len(index), resamples, seed)
    rows = []
    for strategy in strategies:
        own = scores[strategy.name]
        rows.append(
            StrategyRow(
                name=strategy.name,
                kind=strategy.kind,
                description=_describe(strategy, index),
                task_metric=mean_interval(own.task_metric, boot),
                f1=mean_interval(own.f1, boot),
                cost=mean_interval(own.cost, boot),
                quality=mean_interval(own.quality, boot),
                reward=mean_interval(own.reward, boot),
                gap=gap_interval(own.reward, best_reward, oracle_reward, boot),
                vs_best_single=None
                if strategy.name == best
                else mean_interval(own.reward - best_reward, boot),
            )
        )
    routing = {
        s.name: dict(Counter(route_label(cast(Route, s.routes[i])) for i in index).most_common())
        for s in strategies
        if s.kind in ("router", "learned")
    }
    router = next((s for s in strategies if s.kind == "router"), None)
    lengths = Counter(len(cast(Route, router.routes[i])) for i in index) if router else Counter()
    return GroupResult(
        name, len(index), rows, best, routing.get(router.name, {}) if router else {},
        dict(sorted(lengths.items())), routing,
    )  # fmt: skip
