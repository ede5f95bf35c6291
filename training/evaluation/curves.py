"""Cost–quality curves of router families over an α grid, their AIQ with bootstrap intervals,
and RouteLLM's APGR / CPT(50%).

Why curves: one α is one point, and a router that looks better at one α may just sit elsewhere on
the same trade-off. RouterBench compares routers by the area under each family's non-decreasing
convex hull (AIQ, ``statistics.aiq``) against the "zero router" — the hull of the fixed routes,
reachable with no learning by mixing them. Everything here is pure replay of the test tree.

A **family** is just a function α → the route of every test item (``RouteFamily``): a PPO policy
per α (``policy_family``), one α-conditioned policy (later: the same shape, one policy), the kNN /
MLP routers fitted once on train (``learned_family``), the per-query oracle (``oracle_family``),
the best fixed route chosen on train at each α (``best_fixed_family``). ``trace`` evaluates a
family on a grid and keeps the per-query cost and quality of every point, so AIQ is bootstrapped
by resampling test queries (``aiq_intervals``), paired across families. The zero router is the
set of every fixed route's point (``fixed_curve``), with no α.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.protocol import RoutingPolicy
from training.evaluation.learned_routers import KNN, MLP, FittedRouters, calibrate, stack
from training.evaluation.statistics import FloatArray, Interval, aiq, apgr, bootstrap_indices, cpt
from training.evaluation.strategies import best_route, oracle_routes, router_routes
from training.replay.tree import OutcomeTree, Route, outcome_tree, reprice, route_label
from training.tasks.items import Item
from training.tasks.reward import terminal_reward

__all__ = [
    "ZERO_ROUTER",
    "AIQResult",
    "AlphaPoint",
    "Curve",
    "RouteFamily",
    "aiq_intervals",
    "alpha_points",
    "best_fixed_family",
    "calibrate_family",
    "conditioned_family",
    "fixed_curve",
    "learned_family",
    "mean_curve",
    "oracle_family",
    "policy_family",
    "routellm_scores",
    "trace",
    "weak_and_strong",
]

ZERO_ROUTER = "zero router (fixed routes)"

RouteFamily = Callable[[float], Sequence[Route]]
"""α → the route each evaluated item takes (item order). Any router that can be asked at an α."""


@dataclass(frozen=True)
class Curve:
    """A family's points: per point (an α, or a fixed route) the per-query cost and quality."""

    family: str
    labels: tuple[str, ...]
    """Per point: ``α = …`` or the fixed route."""
    alphas: tuple[float, ...]
    """Per point: its α (NaN for a fixed route)."""
    cost: FloatArray
    """[points, queries]"""
    quality: FloatArray
    task_metric: FloatArray

    def points(self, index: NDArray[np.intp] | None = None) -> list[tuple[float, float]]:
        """(mean cost, mean quality) per point, over ``index`` of the queries (default: all)."""
        cost = self.cost if index is None else self.cost[:, index]
        quality = self.quality if index is None else self.quality[:, index]
        return list(zip(cost.mean(axis=1).tolist(), quality.mean(axis=1).tolist(), strict=True))

    def take(self, index: NDArray[np.intp]) -> Curve:
        """The same curve over a subset of the queries (a task's table)."""
        return Curve(
            self.family, self.labels, self.alphas, self.cost[:, index], self.quality[:, index],
            self.task_metric[:, index],
        )  # fmt: skip


def _columns(tree: OutcomeTree, items: Sequence[Item], routes: Sequence[Route]) -> tuple[FloatArray, ...]:
    outcomes = [tree[item.id][route] for item, route in zip(items, routes, strict=True)]
    return tuple(
        np.array([getattr(o, c) for o in outcomes], dtype=np.float64)
        for c in ("cost", "quality", "task_metric")
    )


def trace(
    family: str, routes_at: RouteFamily, alphas: Sequence[float], tree: OutcomeTree, items: Sequence[Item]
) -> Curve:
    """Evaluate ``routes_at`` at every α of ``alphas`` on ``items`` of ``tree`` (Q and C only: α
    changes which route is taken, never what a route scores)."""
    columns = [_columns(tree, items, routes_at(alpha)) for alpha in alphas]
    return Curve(
        family,
        tuple(f"α = {alpha:g}" for alpha in alphas),
        tuple(float(a) for a in alphas),
        *(np.stack([c[i] for c in columns]) for i in range(3)),
    )


def fixed_curve(tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]) -> Curve:
    """The zero router: every fixed route of length 1..L is a point; its hull mixes them."""
    columns = [_columns(tree, items, [route] * len(items)) for route in candidates]
    return Curve(
        ZERO_ROUTER,
        tuple(route_label(route) for route in candidates),
        tuple(math.nan for _ in candidates),
        *(np.stack([c[i] for c in columns]) for i in range(3)),
    )


def mean_curve(family: str, curves: Sequence[Curve]) -> Curve:
    """Per point and query, the mean over ``curves`` (e.g. PPO seeds on one α grid): the expected
    curve of a seed drawn at random, whose query bootstrap then has the usual meaning."""
    if not curves or len({c.alphas for c in curves}) != 1:
        raise ValueError("mean_curve needs at least one curve, all on the same grid")
    return Curve(
        family, curves[0].labels, curves[0].alphas,
        *(np.mean([getattr(c, f) for c in curves], axis=0) for f in ("cost", "quality", "task_metric")),
    )  # fmt: skip


# ---------------------------------------------------------------------------------- families


def policy_family(
    policies: Mapping[float, RoutingPolicy], config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> RouteFamily:
    """Greedy routes of the policy trained at each α (an α without a policy raises KeyError)."""
    return lambda alpha: router_routes(policies[alpha], config, tree, items)


def conditioned_family(
    policy: RoutingPolicy, config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> RouteFamily:
    """Greedy routes of ONE α-conditioned policy asked at each α (no retraining); an α outside
    its ``alpha_range`` is asked at the nearest end (α = 0 → the lower end)."""
    lo, hi = policy.alpha_range or (config.alpha, config.alpha)
    return lambda alpha: router_routes(policy, config, tree, items, alpha=min(max(alpha, lo), hi))


def calibrate_family(
    family: RouteFamily,
    tree: OutcomeTree,
    items: Sequence[Item],
    target_cost: float,
    *,
    low: float = 1e-4,
    high: float = 100.0,
) -> float:
    """The α at which ``family``'s mean cost per query on ``items`` (TRAIN items: never calibrate
    on test) is closest to ``target_cost`` — e.g. "spend 0.05 per query on average" for an
    α-conditioned policy, which then serves that α with no retraining."""

    def mean_cost(alpha: float) -> float:
        routes = family(alpha)
        return float(np.mean([tree[item.id][route].cost for item, route in zip(items, routes, strict=True)]))

    return calibrate(mean_cost, target_cost, low=low, high=high)


def oracle_family(tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]) -> RouteFamily:
    """Per query, the route of best R = Q − α·C at that α (hindsight: the ceiling)."""
    return lambda alpha: oracle_routes(reprice(tree, alpha), items, candidates)


def best_fixed_family(
    train_tree: OutcomeTree, train_items: Sequence[Item], candidates: Sequence[Route], n_test: int
) -> RouteFamily:
    """At each α, the one route of best mean R on the TRAIN items, taken by every test query."""
    return lambda alpha: [best_route(reprice(train_tree, alpha), train_items, candidates)] * n_test


def learned_family(
    fitted: FittedRouters, kind: str, embeddings: Mapping[str, FloatArray], items: Sequence[Item]
) -> RouteFamily:
    """The kNN (k re-chosen on held-out train items per α) or MLP router, fitted once on train."""
    if kind not in (KNN, MLP):
        raise ValueError(f"kind must be {KNN!r} or {MLP!r}, got {kind!r}")
    queries = stack(embeddings, items)
    return lambda alpha: fitted.routes(kind, alpha, queries)


# ---------------------------------------------------------------------------------- AIQ


@dataclass(frozen=True)
class AIQResult:
    """A family's AIQ on the shared cost range, and its paired difference with the zero router."""

    aiq: Interval
    vs_zero: Interval


def _interval(point: float, boot: FloatArray) -> Interval:
    low, high = np.percentile(boot, [2.5, 97.5])
    return Interval(point, float(low), float(high))


def aiq_intervals(
    curves: Sequence[Curve], zero: Curve, resamples: int = 1000, seed: int = 0
) -> dict[str, AIQResult]:
    """AIQ of every curve (and the zero router) over the zero router's cost range, with 95%
    percentile intervals from resampling the test queries (the same resamples for every family:
    paired). Each resample recomputes the range from the resampled fixed routes, so "0 below the
    family's cheapest point" is measured against the same span as the point estimate."""
    everything = [zero, *[c for c in curves if c.family != zero.family]]

    def values(index: NDArray[np.intp] | None) -> list[float]:
        fixed = zero.points(index)
        span = (min(c for c, _ in fixed), max(c for c, _ in fixed))
        return [aiq(curve.points(index), cost_range=span) for curve in everything]

    point = np.array(values(None))
    boot = np.array([values(index) for index in bootstrap_indices(zero.cost.shape[1], resamples, seed)])
    return {
        curve.family: AIQResult(
            _interval(point[i], boot[:, i]), _interval(point[i] - point[0], boot[:, i] - boot[:, 0])
        )
        for i, curve in enumerate(everything)
    }


# ---------------------------------------------------------------------------------- RouteLLM


def weak_and_strong(
    singles: Curve, single_routes: Sequence[Route], index: NDArray[np.intp] | None = None
) -> tuple[tuple[str, tuple[float, float]], tuple[str, tuple[float, float]]]:
    """RouteLLM's pair on these queries: weak = the cheapest one-call member (mean cost; ties:
    pool order), strong = the single-member route (one call or ×L) of best mean quality (ties:
    cheaper). Returns ((label, (cost, quality)), …) for weak and strong."""
    points = singles.points(index)
    labelled = list(zip(singles.labels, points, single_routes, strict=True))
    weak = min((p for p in labelled if len(p[2]) == 1), key=lambda p: p[1][0])
    strong = min(labelled, key=lambda p: (-p[1][1], p[1][0]))
    return (weak[0], weak[1]), (strong[0], strong[1])


def routellm_scores(
    curve: Curve,
    weak: tuple[float, float],
    strong: tuple[float, float],
    index: NDArray[np.intp] | None = None,
) -> tuple[float, float]:
    """(APGR, CPT(50%)) of ``curve`` between ``weak`` and ``strong`` (``statistics.apgr``/``cpt``);
    (NaN, NaN) when the pair spans no trade-off (strong neither dearer nor better)."""
    if not (strong[0] > weak[0] and strong[1] > weak[1]):
        return math.nan, math.nan
    points = curve.points(index)
    return apgr(points, weak, strong), cpt(points, weak, strong)


# ---------------------------------------------------------------------------------- α sweep (policies)


@dataclass(frozen=True)
class AlphaPoint:
    """One trained policy of an α sweep, evaluated greedily on the test items."""

    alpha: float
    cost: float
    quality: float
    task_metric: float
    mean_hops: float = math.nan
    """Mean route length of the policy's greedy routes (< L only with STOP)."""


def alpha_points(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    policies: Mapping[float, RoutingPolicy],
    items: Sequence[Item],
    cache: ReplyCache | None,
    *,
    reward_metric: str = "task",
    tree: OutcomeTree | None = None,
    live: bool = False,
) -> list[AlphaPoint]:
    """(mean cost, mean quality) on ``items`` of policies already trained at each α, by α.

    Quality is the reward's metric Q (independent of α), so the points trace the cost/quality
    trade-off the α knob buys; ``tree`` reuses an outcome tree of ``items`` already replayed.
    """
    if tree is None:
        tree = outcome_tree(config, pool, items, cache, reward_metric=reward_metric, live=live)
    points = []
    for alpha, policy in sorted(policies.items()):
        routes = router_routes(policy, config, tree, items)
        cost, quality, task_metric = _columns(tree, items, routes)
        hops = float(np.mean([len(route) for route in routes]))
        points.append(
            AlphaPoint(
                float(alpha), float(cost.mean()), float(quality.mean()), float(task_metric.mean()), hops
            )
        )
    return points


def oracle_point(
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
