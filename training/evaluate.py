"""Evaluate a router on the test split against the RouterBench/RouteLLM baselines.

Why a full outcome tree: every strategy compared here — the learned router, each pool model
alone, uniform random routing, fixed routes and the oracles — is a way of picking a route through
the same tree of replies. Replaying that tree once (``outcome_tree``) and reading every strategy
off it makes the comparison exact (random routing is an expectation, not a sample) and free of
generation noise: every strategy is scored on the very same replies, through ``run_hop`` (the
graph's hop) and ``training.reward`` (the reward PPO optimised).

Definitions (exact; "reward" is R = Q − α·C of ``training.reward.terminal_reward``):

- **candidate routes**: every route of length 1..L (the tree's nodes). A length-1 route is one
  call of one model with the stage-0 instruction; its reward uses its own (one-call) cost.
- **HierRouter**: greedy ``policy.decide(context, stage, cost)`` at each of the L stages, fed the
  context text and cumulative cost the graph would feed it (``c_{t+1} = c_t ‖ r_t``); a router
  with ``allow_stop`` that chooses STOP after ℓ hops takes the length-ℓ route (the tree holds every
  prefix, so early exit is pure replay too) and is scored on it: R = Q(c_ℓ) − α·C_ℓ.
- **single model**: ``m (1 call)`` = route ``(m,)``; ``m (×L)`` = route ``(m, …, m)``.
- **best single** (per table): the single-model strategy with the highest mean reward on that
  table's queries (ties: the first in pool order, one call before ×L).
- **random**: the exact expectation of uniform routing — per query, the mean over all M^L routes
  of length L; no sampling.
- **best fixed route**: the candidate route with the highest mean reward over the whole TRAIN
  split, evaluated on test (ties: lower mean cost, then candidate order). Without a train tree it
  is chosen on test and labelled "hindsight".
- **task oracle**: per task, the candidate route with the highest mean reward on that task's test
  queries (hindsight); the overall row gives each query its own task's route.
- **oracle**: per query, the candidate route with the highest reward (ties: lower cost, then
  candidate order) — the ceiling of every strategy above.
- **gap recovered**: (S − best single) / (oracle − best single) on mean rewards; undefined ("n/a")
  when the oracle does no better than the best single.
- Intervals: 95% percentile bootstrap over queries, ``resamples`` resamples drawn once per table
  from ``seed`` and shared by every strategy (paired); the gap share is bootstrapped as the ratio
  of paired resampled means. A row is "inside the noise" when the paired interval of its reward
  difference with the best single contains 0.
- **AIQ** (``aiq``): see its docstring.

    python training/evaluate.py --policy runs/ppo/policy --replay runs/replay.sqlite
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shlex
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from numpy.typing import NDArray

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.dynamic_policy import DescriptorPolicy, load_saved_policy
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.policy import (
    STOP_ACTION,
    PolicyMismatchError,
    RouterPolicy,
    RoutingPolicy,
    check_stop_allowed,
)
from hierrouter_graph.pool import PoolMember
from training.datasets import ALL_TASKS, DEFAULT_PER_TASK, Item, load_items
from training.ppo import POLICY_DIRNAME
from training.replay import ReplayMissError
from training.reward import ScoreMemo, terminal_reward
from training.shipped import import_shipped_replay
from training.tree import (
    OutcomeTree,
    Route,
    RouteOutcome,
    candidate_routes,
    outcome_tree,
    route_label,
    shared_tree,
)

__all__ = [
    "NO_SWEEP",
    "ORACLE",
    "OVERALL",
    "RANDOM",
    "ROUTER",
    "TASK_ORACLE",
    "EvaluationResult",
    "GroupResult",
    "Interval",
    "OutcomeTree",
    "Route",
    "RouteOutcome",
    "ScoreMemo",
    "Scores",
    "Strategy",
    "StrategyRow",
    "SweepPoint",
    "aiq",
    "alpha_sweep_points",
    "best_route",
    "bootstrap_indices",
    "bootstrap_interval",
    "candidate_routes",
    "evaluate",
    "main",
    "oracle_routes",
    "outcome_tree",
    "parse_args",
    "plot_cost_quality",
    "print_table",
    "random_strategy",
    "route_label",
    "router_routes",
    "run_from_cli",
    "single_model_strategies",
    "write_marked_section",
    "write_report",
]

FloatArray = NDArray[np.float64]
NO_SWEEP = "n/a (no α sweep)"
OVERALL = "overall"

ROUTER = "HierRouter"
RANDOM = "random (uniform, exact)"
TASK_ORACLE = "task oracle (hindsight)"
ORACLE = "oracle (per query)"


# ---------------------------------------------------------------------------------- strategies

_COLUMNS = ("task_metric", "f1", "quality", "cost", "reward")


@dataclass(frozen=True)
class Scores:
    """Per-query numbers of one strategy, aligned with the evaluated items."""

    task_metric: FloatArray
    f1: FloatArray
    quality: FloatArray
    cost: FloatArray
    reward: FloatArray

    @classmethod
    def of(cls, outcomes: Sequence[RouteOutcome]) -> Scores:
        return cls(*(np.array([getattr(o, c) for o in outcomes], dtype=np.float64) for c in _COLUMNS))

    @classmethod
    def expectation(cls, per_query: Sequence[Sequence[RouteOutcome]]) -> Scores:
        """Per query, the mean over its outcomes (uniform random routing, exactly)."""
        return cls(
            *(
                np.array([np.mean([getattr(o, c) for o in group]) for group in per_query], dtype=np.float64)
                for c in _COLUMNS
            )
        )

    def take(self, index: NDArray[np.intp]) -> Scores:
        return Scores(*(getattr(self, c)[index] for c in _COLUMNS))


@dataclass(frozen=True)
class Strategy:
    """A way of routing every test query: its per-query scores and the route each query took."""

    name: str
    kind: str
    """"router", "single", "random", "fixed", "task_oracle" or "oracle"."""
    scores: Scores
    routes: tuple[Route | None, ...]
    """The route per query (None for random routing, which is a mixture)."""
    description: str = ""


def _fixed(name: str, kind: str, tree: OutcomeTree, items: Sequence[Item], route: Route) -> Strategy:
    outcomes = [tree[item.id][route] for item in items]
    return Strategy(name, kind, Scores.of(outcomes), tuple(route for _ in items), route_label(route))


def _per_query(
    name: str,
    kind: str,
    tree: OutcomeTree,
    items: Sequence[Item],
    routes: Sequence[Route],
    description: str = "",
) -> Strategy:
    outcomes = [tree[item.id][route] for item, route in zip(items, routes, strict=True)]
    return Strategy(name, kind, Scores.of(outcomes), tuple(routes), description)


def single_model_strategies(config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]) -> list[Strategy]:
    """Each model alone: one call (route ``(m,)``) and L hops of itself (``(m,)*L``, when L > 1)."""
    out: list[Strategy] = []
    for name in config.model_names:
        out.append(_fixed(f"{name} (1 call)", "single", tree, items, (name,)))
        if config.horizon > 1:
            out.append(_fixed(f"{name} (×{config.horizon})", "single", tree, items, (name,) * config.horizon))
    return out


def random_strategy(config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]) -> Strategy:
    """Uniform random routing as an exact expectation over the M^L routes of length L."""
    full = list(itertools.product(config.model_names, repeat=config.horizon))
    scores = Scores.expectation([[tree[item.id][route] for route in full] for item in items])
    return Strategy(RANDOM, "random", scores, tuple(None for _ in items), f"mean of {len(full)} routes")


def best_route(tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]) -> Route:
    """The candidate with the highest mean reward over ``items`` (ties: lower mean cost, then order)."""
    if not items:
        raise ValueError("best_route needs at least one item")

    def key(indexed: tuple[int, Route]) -> tuple[float, float, int]:
        index, route = indexed
        outcomes = [tree[item.id][route] for item in items]
        return (
            -float(np.mean([o.reward for o in outcomes])),
            float(np.mean([o.cost for o in outcomes])),
            index,
        )

    return min(enumerate(candidates), key=key)[1]


def oracle_routes(tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]) -> list[Route]:
    """Per query, the candidate with the highest reward (ties: lower cost, then candidate order)."""
    out = []
    for item in items:
        node = tree[item.id]
        out.append(
            min(enumerate(candidates), key=lambda ic: (-node[ic[1]].reward, node[ic[1]].cost, ic[0]))[1]
        )
    return out


def router_routes(
    policy: RoutingPolicy, config: RouterConfig, tree: OutcomeTree, items: Sequence[Item], chunk: int = 64
) -> list[Route]:
    """Greedy routes of ``policy``, walking the tree with the graph's state (c_t, ℓ_t, C_t).

    A ``RouterPolicy``'s (or ``DescriptorPolicy``'s) encoder caches by text, so each chunk's
    reachable contexts are encoded in one batch first; the decisions themselves are the graph's
    ``policy.decide`` calls. A STOP decision ends the walk there (routes may be shorter than L);
    STOP at stage 0 or from a config without ``allow_stop`` raises, as the graph would.
    """
    if list(policy.pool) != config.model_names:
        raise PolicyMismatchError(
            f"policy routes over {policy.pool}, the config's pool is {config.model_names}"
        )
    routes: list[Route] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        if isinstance(policy, RouterPolicy | DescriptorPolicy):
            reachable: list[str] = []
            for item in part:
                reachable.append(item.prompt)
                reachable += [o.context for r, o in tree[item.id].items() if len(r) < config.horizon]
            policy.encoder.encode(list(dict.fromkeys(reachable)))
        for item in part:
            route: Route = ()
            for stage in range(config.horizon):
                node = tree[item.id][route] if route else None
                context, cost = (node.context, node.cost) if node else (item.prompt, 0.0)
                if getattr(policy, "uncertainty", False):  # as the graph's router node does
                    confidence = node.confidence if node else None
                    decision = policy.decide(context, stage, cost, confidence=confidence)  # type: ignore[call-arg]
                else:
                    decision = policy.decide(context, stage, cost)
                if decision.model == STOP_ACTION:
                    check_stop_allowed(stage, config.allow_stop)  # the graph's own check
                    break
                if decision.model not in config.model_names:
                    raise PolicyMismatchError(f"policy chose {decision.model!r}, not in {config.model_names}")
                route = (*route, decision.model)
            routes.append(route)
    return routes


# ---------------------------------------------------------------------------------- bootstrap


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% bootstrap interval; all three are NaN when the value is undefined."""

    mean: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.mean)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, digits: int = 3) -> str:
        """``mean [low, high]`` (markdown report)."""
        if not self.defined:
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def compact(self, digits: int = 3) -> str:
        """``mean±h`` with h the larger side of the interval (console)."""
        if not self.defined:
            return "n/a"
        half = max(self.mean - self.low, self.high - self.mean)
        return f"{self.mean:.{digits}f}±{half:.{digits}f}"


_UNDEFINED = Interval(math.nan, math.nan, math.nan)


def bootstrap_indices(n: int, resamples: int = 1000, seed: int = 0) -> NDArray[np.intp]:
    """[resamples, n] query indices drawn with replacement; shared by all strategies (paired)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n)).astype(np.intp)


def _percentiles(point: float, boot: FloatArray) -> Interval:
    low, high = np.percentile(boot, [2.5, 97.5])
    return Interval(point, float(low), float(high))


def _mean_interval(values: FloatArray, index: NDArray[np.intp]) -> Interval:
    return _percentiles(float(values.mean()), values[index].mean(axis=1))


def bootstrap_interval(
    values: Sequence[float] | FloatArray, *, resamples: int = 1000, seed: int = 0
) -> Interval:
    """Mean of ``values`` with its 95% percentile bootstrap interval (deterministic for a seed)."""
    array = np.asarray(values, dtype=np.float64)
    return _mean_interval(array, bootstrap_indices(len(array), resamples, seed))


def _gap_interval(
    strategy: FloatArray, best: FloatArray, oracle: FloatArray, index: NDArray[np.intp]
) -> Interval:
    """(S − best)/(oracle − best) on means, and the same ratio on every paired resample.

    Resamples whose oracle − best mean is 0 have no gap to recover and are left out of the interval.
    """
    numerator, denominator = strategy - best, oracle - best
    if not denominator.mean() > 0:
        return _UNDEFINED
    point = float(numerator.mean() / denominator.mean())
    boot_num, boot_den = numerator[index].mean(axis=1), denominator[index].mean(axis=1)
    usable = boot_den > 0
    return _percentiles(point, boot_num[usable] / boot_den[usable])


# ---------------------------------------------------------------------------------- tables


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


def _group(
    name: str, index: NDArray[np.intp], strategies: Sequence[Strategy], resamples: int, seed: int
) -> GroupResult:
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
                task_metric=_mean_interval(own.task_metric, boot),
                f1=_mean_interval(own.f1, boot),
                cost=_mean_interval(own.cost, boot),
                quality=_mean_interval(own.quality, boot),
                reward=_mean_interval(own.reward, boot),
                gap=_gap_interval(own.reward, best_reward, oracle_reward, boot),
                vs_best_single=None
                if strategy.name == best
                else _mean_interval(own.reward - best_reward, boot),
            )
        )
    router = next((s for s in strategies if s.kind == "router"), None)
    taken = Counter(route_label(cast(Route, router.routes[i])) for i in index) if router else Counter()
    lengths = Counter(len(cast(Route, router.routes[i])) for i in index) if router else Counter()
    return GroupResult(name, len(index), rows, best, dict(taken.most_common()), dict(sorted(lengths.items())))


# ---------------------------------------------------------------------------------- AIQ


def _upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper convex hull (Andrew's monotone chain) of points with distinct, increasing costs."""
    hull: list[tuple[float, float]] = []
    for x, y in points:
        while len(hull) >= 2:
            (ox, oy), (ax, ay) = hull[-2], hull[-1]
            if (ax - ox) * (y - oy) - (ay - oy) * (x - ox) >= 0:  # a on or below the chord o→p
                hull.pop()
            else:
                break
        hull.append((x, y))
    return hull


def aiq(points: Sequence[tuple[float, float]], cost_range: tuple[float, float] | None = None) -> float:
    """Average Improvement in Quality (RouterBench): area under the non-decreasing convex hull of
    (cost, quality) points, divided by the cost range.

    Construction: (1) of points with equal cost keep the best quality; (2) take the upper convex
    hull (any mixture of two strategies is reachable by randomising between them); (3) make it
    non-decreasing: after the hull's highest vertex it stays flat at that quality (spending more
    can never force a worse result); (4) integrate that piecewise-linear g exactly (trapezoids)
    over [lo, hi] and divide by hi − lo. By default [lo, hi] is the points' own cost span. A given
    ``cost_range`` lets several families share one span: there g is 0 below the family's cheapest
    point (nothing that cheap exists) and flat beyond its dearest. Degenerate span (one point, or
    all costs equal, or lo == hi): the value of g there — the best quality at that cost.
    """
    if not points:
        raise ValueError("aiq needs at least one (cost, quality) point")
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise ValueError(f"aiq needs finite (cost, quality) pairs, got {points!r}")
    best: dict[float, float] = {}
    for cost, quality in array.tolist():
        best[cost] = max(quality, best.get(cost, -math.inf))
    hull = _upper_hull(sorted(best.items()))
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    rising = hull[: peak + 1] if peak == len(hull) - 1 else [*hull[: peak + 1], (hull[-1][0], hull[peak][1])]
    xs, ys = np.array([x for x, _ in rising]), np.array([y for _, y in rising])
    lo, hi = cost_range if cost_range is not None else (float(xs[0]), float(xs[-1]))
    if hi < lo:
        raise ValueError(f"cost_range must be (low, high) with low <= high, got {cost_range}")

    def g(c: float) -> float:
        return 0.0 if c < xs[0] else float(np.interp(c, xs, ys))

    if hi == lo:
        return g(lo)
    start = max(lo, float(xs[0]))
    if start >= hi:
        return 0.0
    knots = np.array(sorted({start, hi, *(x for x in xs.tolist() if start < x < hi)}))
    values = np.interp(knots, xs, ys)
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(knots)))
    return area / (hi - lo)


@dataclass(frozen=True)
class SweepPoint:
    """One trained policy of an α sweep, evaluated greedily on the test items."""

    alpha: float
    cost: float
    quality: float
    task_metric: float
    mean_hops: float = math.nan
    """Mean route length of the policy's greedy routes (< L only with STOP)."""


def alpha_sweep_points(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    policies: Mapping[float, RoutingPolicy],
    items: Sequence[Item],
    cache: ReplyCache | None,
    *,
    reward_metric: str = "task",
    tree: OutcomeTree | None = None,
    live: bool = False,
) -> list[SweepPoint]:
    """(mean cost, mean quality) on ``items`` of policies already trained at each α, by α.

    Quality is the reward's metric Q (independent of α), so the points trace the cost/quality
    trade-off the α knob buys; ``tree`` reuses an outcome tree of ``items`` already replayed.
    """
    if tree is None:
        tree = outcome_tree(config, pool, items, cache, reward_metric=reward_metric, live=live)
    points = []
    for alpha, policy in sorted(policies.items()):
        routes = router_routes(policy, config, tree, items)
        scores = Scores.of([tree[item.id][route] for item, route in zip(items, routes, strict=True)])
        points.append(
            SweepPoint(
                float(alpha),
                float(scores.cost.mean()),
                float(scores.quality.mean()),
                float(scores.task_metric.mean()),
                float(np.mean([len(route) for route in routes])),
            )
        )
    return points


def _oracle_point(
    tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route], alpha: float
) -> tuple[float, float]:
    """(mean cost, mean quality) of the per-query oracle of R = Q − α·C at this α."""
    chosen = []
    for item in items:
        node = tree[item.id]
        chosen.append(
            min(
                (node[route] for route in candidates),
                key=lambda o: (-terminal_reward(o.quality, o.cost, alpha), o.cost),
            )
        )
    return float(np.mean([o.cost for o in chosen])), float(np.mean([o.quality for o in chosen]))


# ---------------------------------------------------------------------------------- evaluate


@dataclass
class EvaluationResult:
    """Every table, the per-query scores behind them, and what is needed to reproduce them."""

    groups: dict[str, GroupResult]
    """One table per task (benchmark order) and ``"overall"`` last."""
    strategies: dict[str, Strategy]
    item_ids: list[str]
    pool: dict[str, float]
    """Model name → base rate per token, in action order."""
    alpha: float
    horizon: int
    reward_metric: str
    seed: int
    resamples: int
    n_train: int
    counts: dict[str, tuple[int, int]]
    """Task → (train, test) item counts."""
    best_fixed_route: Route
    best_fixed_source: str
    """"train" (chosen on the train split) or "hindsight" (chosen on test: no train tree)."""
    aiq: dict[str, float | None]
    """Family → AIQ over ``aiq_cost_range``; None where it cannot be computed honestly."""
    aiq_cost_range: tuple[float, float]
    sweep: list[SweepPoint] = field(default_factory=list)
    data_info: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def overall(self) -> GroupResult:
        return self.groups[OVERALL]

    @property
    def n_test(self) -> int:
        return len(self.item_ids)


def _task_order(task: str) -> tuple[int, str]:
    return (ALL_TASKS.index(task) if task in ALL_TASKS else len(ALL_TASKS), task)


def _choose_fixed_route(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    train_items: Sequence[Item],
    test_tree: OutcomeTree,
    test_items: Sequence[Item],
    cache: ReplyCache | None,
    tree_options: dict[str, Any],
    notes: list[str],
) -> tuple[Route, str]:
    """The best fixed route on the train tree; on test ("hindsight") when there is none."""
    candidates = candidate_routes(config)
    if train_items and cache is not None and not tree_options.get("live"):
        from training.tree import complete_items

        recorded = complete_items(config, pool, train_items, cache)
        if len(recorded) < len(train_items):
            notes.append(
                f"best fixed route chosen on the {len(recorded)} of {len(train_items)} train items whose "
                "outcome tree is recorded"
            )
        train_items = recorded
    if train_items:
        try:
            train_tree = shared_tree(config, pool, train_items, cache, **tree_options)
            return best_route(train_tree, train_items, candidates), "train"
        except ReplayMissError as error:
            notes.append(f"train outcome tree not replayable ({error}); best fixed route chosen on test")
    else:
        notes.append("no train items: the best fixed route is chosen on test (hindsight)")
    return best_route(test_tree, test_items, candidates), "hindsight"


def evaluate(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    policy: RoutingPolicy | None,
    train_items: Sequence[Item] | None,
    test_items: Sequence[Item],
    cache: ReplyCache | None,
    reward_metric: str = "task",
    alpha: float | None = None,
    seed: int = 0,
    *,
    live: bool = False,
    resamples: int = 1000,
    sweep: Mapping[float, RoutingPolicy] | None = None,
    data_info: Mapping[str, Any] | None = None,
    progress: bool = False,
    memo: ScoreMemo | None = None,
) -> EvaluationResult:
    """Replay the test (and train) outcome trees and score every strategy (module docstring).

    ``policy=None`` leaves the router row out (baselines only). ``sweep`` maps α → a policy
    trained at that α, for AIQ. Replay-only unless ``live``. ``memo``: scores already computed
    (they do not depend on α or L), shared by the many evaluations of a sweep.
    """
    if not test_items:
        raise ValueError("evaluate needs at least one test item")
    train_items = list(train_items or [])
    leaked = {i.id for i in train_items} & {i.id for i in test_items}
    if leaked:
        raise ValueError(f"{len(leaked)} items are in both train and test, e.g. {sorted(leaked)[:3]}")
    alpha = config.alpha if alpha is None else alpha
    options: dict[str, Any] = {
        "reward_metric": reward_metric,
        "alpha": alpha,
        "live": live,
        "memo": memo if memo is not None else ScoreMemo(),
        "progress": progress,
    }
    tree = shared_tree(config, pool, test_items, cache, **options)
    notes: list[str] = []
    fixed, source = _choose_fixed_route(config, pool, train_items, tree, test_items, cache, options, notes)
    candidates = candidate_routes(config)
    tasks = sorted({item.task for item in test_items}, key=_task_order)
    by_task = {t: best_route(tree, [i for i in test_items if i.task == t], candidates) for t in tasks}

    strategies: list[Strategy] = []
    if policy is not None:
        routes = router_routes(policy, config, tree, test_items)
        strategies.append(_per_query(ROUTER, "router", tree, test_items, routes, "greedy policy"))
    strategies += single_model_strategies(config, tree, test_items)
    strategies.append(random_strategy(config, tree, test_items))
    strategies.append(_fixed(f"best fixed route ({source})", "fixed", tree, test_items, fixed))
    task_routes = [by_task[item.task] for item in test_items]
    strategies.append(
        _per_query(TASK_ORACLE, "task_oracle", tree, test_items, task_routes, "each task's best")
    )
    oracle = oracle_routes(tree, test_items, candidates)
    strategies.append(_per_query(ORACLE, "oracle", tree, test_items, oracle, "best route per query"))

    task_of = np.array([item.task for item in test_items])
    groups = {
        t: _group(t, np.flatnonzero(task_of == t).astype(np.intp), strategies, resamples, seed) for t in tasks
    }
    groups[OVERALL] = _group(OVERALL, np.arange(len(test_items), dtype=np.intp), strategies, resamples, seed)

    fixed_points = [
        (
            float(np.mean([tree[i.id][r].cost for i in test_items])),
            float(np.mean([tree[i.id][r].quality for i in test_items])),
        )
        for r in candidates
    ]
    span = (min(c for c, _ in fixed_points), max(c for c, _ in fixed_points))
    aiq_values: dict[str, float | None] = {"fixed routes (zero router)": aiq(fixed_points)}
    points: list[SweepPoint] = []
    if sweep:
        points = alpha_sweep_points(
            config, pool, sweep, test_items, cache, reward_metric=reward_metric, tree=tree
        )
        aiq_values[f"{ROUTER} (α sweep)"] = aiq([(p.cost, p.quality) for p in points], cost_range=span)
        oracle_points = [_oracle_point(tree, test_items, candidates, a) for a in sorted(sweep)]
        aiq_values["oracle (same α values)"] = aiq(oracle_points, cost_range=span)
    else:
        aiq_values[ROUTER] = None
        aiq_values["oracle"] = None

    train_tasks = Counter(item.task for item in train_items)
    test_tasks = Counter(item.task for item in test_items)
    return EvaluationResult(
        groups=groups,
        strategies={s.name: s for s in strategies},
        item_ids=[item.id for item in test_items],
        pool={name: float(pool[name].base_rate) for name in config.model_names},
        alpha=alpha,
        horizon=config.horizon,
        reward_metric=reward_metric,
        seed=seed,
        resamples=resamples,
        n_train=len(train_items),
        counts={t: (train_tasks.get(t, 0), test_tasks[t]) for t in tasks},
        best_fixed_route=fixed,
        best_fixed_source=source,
        aiq=aiq_values,
        aiq_cost_range=span,
        sweep=points,
        data_info=dict(data_info or {}),
        notes=notes,
    )


# ---------------------------------------------------------------------------------- report

_TABLE_HEADER = (
    "| strategy | route | task metric | token-F1 | mean cost | reward Q − αC | gap recovered "
    "| Δ reward vs best single |"
)
_TABLE_RULE = "|---|---|---:|---:|---:|---:|---:|---:|"
_REWARD_METRICS = {"task": "task (Q = the item's own metric)", "f1": "f1 (Q = token-F1, the paper's)"}


def _ordered_groups(results: EvaluationResult) -> list[GroupResult]:
    """Overall first, then the tasks."""
    return [results.overall, *(g for name, g in results.groups.items() if name != OVERALL)]


def _delta_cell(row: StrategyRow) -> str:
    if row.vs_best_single is None:
        return "— (best single)"
    return row.vs_best_single.format(4) + (" ≈ inside the noise" if row.inside_noise else "")


def _router_sentence(group: GroupResult) -> list[str]:
    try:
        row = group.row(ROUTER)
    except KeyError:
        return []
    shares = ", ".join(f"`{route}` {count / group.n:.0%}" for route, count in group.router_routes.items())
    delta = row.vs_best_single
    verdict = (
        "is the best single"
        if delta is None
        else (
            f"minus best single (reward): {delta.format(4)} — "
            + (
                "inside the noise (the paired 95% interval contains 0)"
                if row.inside_noise
                else "outside the noise"
            )
        )
    )
    lengths = ", ".join(
        f"{hops} hop{'s' if hops != 1 else ''} {count / group.n:.0%}"
        for hops, count in group.router_lengths.items()
    )
    return [f"{ROUTER} {verdict}. Routes taken: {shares}. Route lengths: {lengths}."]


def _markdown_table(group: GroupResult) -> list[str]:
    title = "Overall" if group.name == OVERALL else f"Task `{group.name}`"
    lines = [f"## {title} (n = {group.n})", "", _TABLE_HEADER, _TABLE_RULE]
    for row in group.rows:
        name = f"**{row.name}**" if row.kind in ("router", "oracle") else row.name
        cells = [
            name,
            f"`{row.description}`" if "→" in row.description or row.kind == "single" else row.description,
            row.task_metric.format(),
            row.f1.format(),
            row.cost.format(4),
            row.reward.format(4),
            row.gap.format(),
            _delta_cell(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best single on this table: {group.best_single}.", *_router_sentence(group), ""]
    return lines


def _aiq_lines(results: EvaluationResult) -> list[str]:
    lo, hi = results.aiq_cost_range
    values = "; ".join(f"{name}: {NO_SWEEP if v is None else f'{v:.4f}'}" for name, v in results.aiq.items())
    lines = [
        f"- **AIQ** (quality = Q; over the fixed routes' cost range [{lo:.4g}, {hi:.4g}], a family's curve "
        f"being 0 below its cheapest point): {values}"
    ]
    for point in results.sweep:
        lines.append(
            f"  - α = {point.alpha:g}: mean cost {point.cost:.4f}, Q {point.quality:.4f}, "
            f"task metric {point.task_metric:.4f}"
        )
    return lines


def _header_lines(results: EvaluationResult, command: str, seed: int) -> list[str]:
    per_task = ", ".join(f"{t} {a}/{b}" for t, (a, b) in results.counts.items())
    pool = ", ".join(f"`{name}` {rate:g}" for name, rate in results.pool.items())
    route = f"`{route_label(results.best_fixed_route)}`"
    chosen = (
        f"{route}, chosen on the train split (n = {results.n_train}) by mean reward, evaluated on test"
        if results.best_fixed_source == "train"
        else f"{route}, chosen on TEST with hindsight (no train outcome tree): an optimistic baseline"
    )
    data = json.dumps(results.data_info, default=str, sort_keys=True) if results.data_info else "library call"
    return [
        "# HierRouter evaluation (test split)",
        "",
        f"- **Command:** `{command}`",
        f"- **Seed:** {seed} (bootstrap: {results.resamples} paired resamples of the queries, 95% percentile "
        "intervals, shown as `mean [low, high]`)",
        f"- **Data:** {results.n_test} test queries, {results.n_train} train queries; per task "
        f"(train/test): {per_task}. Source: `{data}`",
        f"- **Pool** (action order, base rate per token): {pool}",
        f"- **α** = {results.alpha:g} · **L** = {results.horizon} · **reward metric:** "
        f"{_REWARD_METRICS.get(results.reward_metric, results.reward_metric)}",
        f"- **Best fixed route:** {chosen}",
        *_aiq_lines(results),
        *(f"- Note: {note}" for note in results.notes),
        "",
        "Definitions: *single* = one model alone, one call (stage-0 prompt, its own cost) or L hops "
        "of itself; *random* = exact mean over all M^L routes; *task oracle* = each task's best fixed "
        "route in hindsight; *oracle* = each query's best route among all routes of length 1..L (the "
        "ceiling); *gap recovered* = (S − best single)/(oracle − best single) on mean reward, n/a when "
        "the oracle does no better than the best single; *best single* = the single-model row with the "
        "best mean reward on that table. ≈ marks a difference with the best single whose paired interval "
        "contains 0. See `training/evaluate.py` for the exact construction.",
        "",
    ]


_MARKED = re.compile(r"<!-- (?P<name>[a-z0-9_-]+):begin -->\n.*?<!-- (?P=name):end -->\n?", re.DOTALL)


def _marked_sections(text: str) -> list[str]:
    """Every ``<!-- name:begin --> … <!-- name:end -->`` block of a report, in order."""
    return [match.group(0).rstrip("\n") + "\n" for match in _MARKED.finditer(text)]


def write_marked_section(path: str | Path, name: str, body: str) -> Path:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``.

    Why markers: docs/results.md is written by several tools (this evaluation, the sweep); each
    owns one marked block and replaces only that one, so rerunning one never clobbers the other.
    An existing block is replaced in place; otherwise the block is appended.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name must be lowercase letters, digits, '-' or '_', got {name!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    block = f"<!-- {name}:begin -->\n{body.strip()}\n<!-- {name}:end -->\n"
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    pattern = re.compile(
        rf"<!-- {re.escape(name)}:begin -->\n.*?<!-- {re.escape(name)}:end -->\n?", re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    target.write_text(text, encoding="utf-8")
    return target


def write_report(
    results: EvaluationResult,
    path: str | Path = "docs/results.md",
    command: str | None = None,
    seed: int | None = None,
) -> Path:
    """Markdown: the reproduction line, the setup, then one table per task and overall.

    Marked sections other tools keep in the same file (``write_marked_section``, e.g. the sweep's)
    are carried over after the tables.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = _marked_sections(target.read_text(encoding="utf-8")) if target.is_file() else []
    lines = _header_lines(
        results,
        command or "(library call: training.evaluate.evaluate)",
        results.seed if seed is None else seed,
    )
    for group in _ordered_groups(results):
        lines += _markdown_table(group)
    text = "\n".join(lines).rstrip() + "\n"
    target.write_text(text + "".join(f"\n{section}" for section in kept), encoding="utf-8")
    return target


def print_table(results: EvaluationResult, file: TextIO | None = None) -> None:
    """A compact console view: ``mean±h`` (h = the larger side of the 95% interval)."""
    out = file or sys.stdout
    width = max(len(row.name) for row in results.overall.rows) + 2
    for group in _ordered_groups(results):
        print(f"\n{group.name} (n={group.n}; best single: {group.best_single})", file=out)
        print(f"  {'strategy':<{width}}{'task':>13}{'F1':>13}{'cost':>17}{'reward':>17}{'gap':>16}", file=out)
        for row in group.rows:
            mark = " ≈" if row.inside_noise else ""
            print(
                f"  {row.name:<{width}}{row.task_metric.compact():>13}{row.f1.compact():>13}"
                f"{row.cost.compact(4):>17}{row.reward.compact(4):>17}{row.gap.compact(2):>16}{mark}",
                file=out,
            )
        if group.router_lengths:
            lengths = ", ".join(f"{hops}: {count}" for hops, count in group.router_lengths.items())
            print(f"  {ROUTER} route lengths (hops: queries): {lengths}", file=out)
    aiq_text = ", ".join(f"{k}: {NO_SWEEP if v is None else f'{v:.4f}'}" for k, v in results.aiq.items())
    print(f"\nAIQ: {aiq_text}", file=out)


def plot_cost_quality(results: EvaluationResult, path: str | Path = "docs/cost_quality.png") -> Path:
    """Overall mean cost (x) vs task metric (y), one labelled point per strategy (+ the α sweep)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    markers = {"router": "*", "oracle": "^", "task_oracle": "^", "random": "x", "fixed": "s"}
    labels: dict[tuple[float, float], list[str]] = {}  # strategies on the same spot share one label
    for row in results.overall.rows:
        marker = markers.get(row.kind, "o")
        axes.scatter([row.cost.mean], [row.task_metric.mean], marker=marker, s=90 if marker == "*" else 40)
        labels.setdefault((round(row.cost.mean, 12), round(row.task_metric.mean, 12)), []).append(row.name)
    for (x, y), names in labels.items():
        axes.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if results.sweep:
        axes.plot(
            [p.cost for p in results.sweep],
            [p.task_metric for p in results.sweep],
            "--",
            color="grey",
            label=f"{ROUTER} α sweep",
        )
        axes.legend(fontsize=8)
    axes.set_xlabel("mean cost per query (base_rate · tokens)")
    axes.set_ylabel("task metric")
    axes.set_title(
        f"Cost vs quality, test split (n = {results.n_test}, α = {results.alpha:g}, L = {results.horizon})"
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target)
    return target


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate HierRouter against RouterBench-style baselines.")
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--policy", type=Path, default=Path("runs/ppo/policy"), help="saved policy")
    parser.add_argument("--no-policy", action="store_true", help="baselines only (no router row)")
    parser.add_argument("--replay", type=Path, default=Path("runs/replay.sqlite"), help="replay store")
    parser.add_argument("--live", action="store_true", help="generate hops missing from the replay store")
    parser.add_argument("--reward", choices=("task", "f1"), default="task")
    parser.add_argument(
        "--allow-stop",
        action="store_true",
        help="the router has a STOP action (RouterConfig.allow_stop) on top of the config",
    )
    parser.add_argument(
        "--uncertainty",
        action="store_true",
        help="the router reads the last reply's confidence (RouterConfig.uncertainty_state)",
    )
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument(
        "--per-task",
        type=int,
        default=DEFAULT_PER_TASK,
        help="routing items per task (30%% test; shipped: 100)",
    )
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the train/test split")
    parser.add_argument(
        "--items", type=Path, default=None, help="JSONL of TEST items instead of the benchmarks"
    )
    parser.add_argument("--train-items", type=Path, default=None, help="JSONL train items (with --items)")
    parser.add_argument(
        "--sweep-run-dirs",
        type=Path,
        nargs="+",
        default=None,
        help="PPO run dirs trained at different α (AIQ)",
    )
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/cost_quality.png"))
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def _load_splits(ns: argparse.Namespace) -> tuple[list[Item], list[Item], dict[str, Any]]:
    """(train, test, description): ``ppo.load_items`` for train, the same split's other half for test."""
    if ns.items is not None:
        test, info = load_items(items_path=ns.items)
        train = load_items(items_path=ns.train_items)[0] if ns.train_items is not None else []
        return train, test, {**info, "train_path": str(ns.train_items) if ns.train_items else None}
    from training.datasets import build_routing_dataset

    train, info = load_items(tasks=ns.tasks, per_task=ns.per_task, data_seed=ns.data_seed)
    test = build_routing_dataset(ns.tasks, per_task=ns.per_task, seed=ns.data_seed).test
    if not test:
        raise ValueError(
            f"the test split of {ns.tasks} at --per-task {ns.per_task} is empty; raise --per-task"
        )
    described = {k: v for k, v in info.items() if k != "items"}
    return train, test, {**described, "train_items": len(train), "test_items": len(test)}


def _policy_folder(path: Path) -> Path:
    """A run dir or a policy dir: ``run_dir/policy`` when the run dir holds one."""
    return path / POLICY_DIRNAME if (path / POLICY_DIRNAME / "policy.json").is_file() else path


def _load_sweep(run_dirs: Sequence[Path], load: Any) -> dict[float, RoutingPolicy]:
    policies: dict[float, RoutingPolicy] = {}
    for run_dir in run_dirs:
        folder = _policy_folder(run_dir)
        meta_path = folder / "policy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no policy in sweep run dir {run_dir} (expected {meta_path})")
        alpha = json.loads(meta_path.read_text()).get("training", {}).get("alpha")
        if alpha is None:
            raise ValueError(
                f"{meta_path} records no training α (training.alpha); cannot place it in the sweep"
            )
        if float(alpha) in policies:
            raise ValueError(f"two sweep runs were trained at α = {alpha}")
        policies[float(alpha)] = load(folder)
    return policies


def run_from_cli(
    ns: argparse.Namespace,
    *,
    chat_models: Mapping[str, Any] | None = None,
    encoder: Any = None,
    command: str | None = None,
) -> EvaluationResult:
    """The CLI's wiring, callable from tests: ``chat_models``/``encoder`` replace the real ones."""
    from hierrouter_graph.defaults import default_config
    from hierrouter_graph.encoder import load_encoder
    from hierrouter_graph.graph import build_pool
    from training.replay import CachedEncoder, ReplayStore

    if ns.threads is not None:
        import torch

        torch.set_num_threads(ns.threads)
    config = RouterConfig.from_file(ns.config) if ns.config is not None else default_config()
    if ns.allow_stop:
        config = config.model_copy(update={"allow_stop": True})
    if ns.uncertainty:
        config = config.model_copy(update={"uncertainty_state": True})
    train, test, info = _load_splits(ns)

    if ns.config is None and ns.items is None:
        with ReplayStore(ns.replay) as store:
            import_shipped_replay(store)  # the default pool's recorded outcome tree (and its states)
    if not ns.live and not ns.replay.is_file():
        raise ReplayMissError(
            f"no replay store at {ns.replay}: record it with training/record.py, or pass --live"
        )
    pool = build_pool(config, chat_models)
    with ReplayStore(ns.replay) as store:

        def load(folder: Path) -> RoutingPolicy:
            """The saved policy, reading state embeddings through the store (recorded ones are
            looked up, new ones kept for the next run)."""
            text_encoder = encoder or load_encoder(
                config.encoder, config.max_seq_len, cache_dir=config.resolved_cache_dir
            )
            return load_saved_policy(folder, config, CachedEncoder(text_encoder, store))

        policy = None if ns.no_policy else load(_policy_folder(ns.policy))
        sweep = _load_sweep(ns.sweep_run_dirs, load) if ns.sweep_run_dirs else None
        results = evaluate(
            config,
            pool,
            policy,
            train,
            test,
            store,
            ns.reward,
            config.alpha,
            ns.seed,
            live=ns.live,
            resamples=ns.resamples,
            sweep=sweep,
            progress=not ns.no_progress,
            data_info={
                **info,
                "config": str(ns.config) if ns.config else "default_config()",
                "replay": str(ns.replay),
            },
        )
    if not ns.no_report:
        write_report(results, ns.report, command=command, seed=ns.seed)
        plot_cost_quality(results, ns.plot)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/evaluate.py ...``: evaluate, print the table, write the report and plot."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args)
    command = shlex.join(["python", "training/evaluate.py", *args])
    try:
        results = run_from_cli(ns, command=command)
    except (ReplayMissError, FileNotFoundError, ValueError) as error:  # PolicyMismatchError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(results)
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    if not ns.no_report:
        print(f"\nreport: {ns.report}  plot: {ns.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
