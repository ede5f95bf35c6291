"""Evaluate a router on the test split against the RouterBench/RouteLLM baselines.

Why a full outcome tree: every strategy compared here — the learned router, each pool model
alone, uniform random routing, fixed routes and the oracles (``training.evaluation.strategies``) — is a way
of picking a route through the same tree of replies. Replaying that tree once
(``training.replay.tree.outcome_tree``) and reading every strategy off it makes the comparison exact
(random routing is an expectation, not a sample) and free of generation noise: every strategy is
scored on the very same replies, through ``run_hop`` (the graph's hop) and ``training.tasks.reward``
(the reward PPO optimised).

Each table (a task's test queries, and all of them) gives every strategy's mean task metric,
token-F1, cost, quality and reward with paired bootstrap intervals, the share of the
best-single → oracle gap it recovers, and its paired difference with the best single
(``training.evaluation.statistics``); AIQ needs an α sweep. ``training.evaluation.reports`` writes them out.

- **gap recovered**: (S − best single) / (oracle − best single) on mean rewards; undefined ("n/a")
  when the oracle does no better than the best single.

    python training/evaluate.py --policy runs/ppo/policy --replay runs/replay.sqlite
    (the command line: ``training/cli/evaluate.py``)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.protocol import RoutingPolicy
from hierrouter_graph.policy.trained import TrainedPolicy
from training.evaluation.curves import AlphaPoint, alpha_points, oracle_point
from training.evaluation.learned_routers import query_embeddings
from training.evaluation.seeds import SeedRun, seed_runs, seed_strategies
from training.evaluation.statistics import Interval, aiq, bootstrap_indices, mean_interval
from training.evaluation.strategies import (
    BASELINES,
    ROUTER,
    Strategy,
    StrategyBuilder,
    StrategyInputs,
    best_route,
    router_strategy,
)
from training.evaluation.tables import GroupResult, group_table
from training.replay.readers import ReplayMissError
from training.replay.store import StateEncoder
from training.replay.tree import (
    OutcomeTree,
    Route,
    candidate_routes,
    complete_items,
    shared_tree,
)
from training.tasks.items import ALL_TASKS, Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "OVERALL",
    "EvaluationResult",
    "SeedRun",
    "evaluate",
]

OVERALL = "overall"


# ---------------------------------------------------------------------------------- tables


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
    alpha_points: list[AlphaPoint] = field(default_factory=list)
    """The router's (cost, quality) at each α of ``alpha_policies`` (empty without them)."""
    seed_runs: list[SeedRun] = field(default_factory=list)
    router_pairs: dict[tuple[str, str], Interval] = field(default_factory=dict)
    """(A, B) → paired interval of A − B mean reward over all test queries, for every pair of
    learned routers (HierRouter rows, kNN, MLP): whether they differ from each other at all."""
    """Each PPO seed's overall result (``seed_policies``); their mean is the "mean of N seeds" row."""
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
) -> tuple[Route, str, OutcomeTree | None, list[Item]]:
    """The best fixed route on the train tree; on test ("hindsight") when there is none.

    Also returns the train tree and the train items it holds (those whose tree is recorded), for
    the baselines that learn from them.
    """
    candidates = candidate_routes(config)
    if train_items and cache is not None and not tree_options.get("live"):
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
            return best_route(train_tree, train_items, candidates), "train", train_tree, list(train_items)
        except ReplayMissError as error:
            notes.append(f"train outcome tree not replayable ({error}); best fixed route chosen on test")
    else:
        notes.append("no train items: the best fixed route is chosen on test (hindsight)")
    return best_route(test_tree, test_items, candidates), "hindsight", None, []


def _recorded_test_items(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    test_items: Sequence[Item],
    cache: ReplyCache,
    notes: list[str],
) -> list[Item]:
    """The test items whose outcome tree is recorded; a note says how many of how many.

    Why: a record is made in chunks over many hours (``training/record.py --chunk-items``), and the
    router is evaluated on the items complete so far, every row on the same items, never on a
    mixture. No recorded test item at all is an error naming the command that records them.
    """
    recorded = complete_items(config, pool, test_items, cache)
    if not recorded:
        raise ReplayMissError(
            f"none of the {len(test_items)} test items has its outcome tree in the replay store; record "
            "it first (python training/record.py --split test ...) with the same config and items, or "
            "pass --live to generate missing hops"
        )
    if len(recorded) < len(test_items):
        notes.append(
            f"evaluated on the {len(recorded)} of {len(test_items)} test items whose outcome tree is "
            "recorded (the record is incomplete: every row is on these same items)"
        )
    return recorded


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
    alpha_policies: Mapping[float, RoutingPolicy] | None = None,
    data_info: Mapping[str, Any] | None = None,
    progress: bool = False,
    memo: ScoreMemo | None = None,
    baselines: Sequence[StrategyBuilder] = BASELINES,
    encoder: StateEncoder | None = None,
    seed_policies: Mapping[int, RoutingPolicy] | None = None,
) -> EvaluationResult:
    """Replay the test (and train) outcome trees and score every strategy (module docstring).

    ``policy=None`` leaves the router row out (baselines only). ``alpha_policies`` maps α → a policy
    trained at that α, for AIQ. Replay-only unless ``live``. ``memo``: scores (and replayed trees)
    already computed — they do not depend on α — shared by the many evaluations of a sweep.
    ``baselines``: the rows after the router's (``strategies.BASELINES``; the oracle must be one).
    ``encoder``: the frozen state encoder, for the query embeddings the learned baselines read
    (default: the policy's own when it is a ``TrainedPolicy``; none: they are left out).
    ``seed_policies``: PPO seed → policy trained like ``policy`` but for that seed; adds the
    "mean of N seeds" row and ``seed_runs`` (the seed spread).
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
    notes: list[str] = []
    if cache is not None and not live:
        test_items = _recorded_test_items(config, pool, test_items, cache, notes)
    tree = shared_tree(config, pool, test_items, cache, **options)
    fixed, source, train_tree, fitted = _choose_fixed_route(
        config, pool, train_items, tree, test_items, cache, options, notes
    )
    candidates = candidate_routes(config)
    tasks = sorted({item.task for item in test_items}, key=_task_order)
    if encoder is None and isinstance(policy, TrainedPolicy):
        encoder = policy.encoder
    embeddings = query_embeddings(encoder, [*fitted, *test_items]) if encoder is not None and fitted else None
    inputs = StrategyInputs(
        config, tree, test_items, candidates, fixed, source, train_tree, fitted, alpha, embeddings, notes
    )
    strategies: list[Strategy] = []
    if policy is not None:
        strategies.append(router_strategy(policy, config, tree, test_items))
    per_seed: list[Strategy] = []
    if seed_policies:
        mean_row, per_seed = seed_strategies(seed_policies, config, tree, test_items)
        strategies.append(mean_row)
    for build in baselines:
        strategies += build(inputs)

    task_of = np.array([item.task for item in test_items])
    groups = {
        t: group_table(t, np.flatnonzero(task_of == t).astype(np.intp), strategies, resamples, seed)
        for t in tasks
    }
    everything = np.arange(len(test_items), dtype=np.intp)
    groups[OVERALL] = group_table(OVERALL, everything, strategies, resamples, seed)

    fixed_points = [
        (
            float(np.mean([tree[i.id][r].cost for i in test_items])),
            float(np.mean([tree[i.id][r].quality for i in test_items])),
        )
        for r in candidates
    ]
    span = (min(c for c, _ in fixed_points), max(c for c, _ in fixed_points))
    aiq_values: dict[str, float | None] = {"fixed routes (zero router)": aiq(fixed_points)}
    points: list[AlphaPoint] = []
    if alpha_policies:
        points = alpha_points(
            config, pool, alpha_policies, test_items, cache, reward_metric=reward_metric, tree=tree
        )
        aiq_values[f"{ROUTER} (α sweep)"] = aiq([(p.cost, p.quality) for p in points], cost_range=span)
        oracle_points = [oracle_point(tree, test_items, candidates, a) for a in sorted(alpha_policies)]
        aiq_values["oracle (same α values)"] = aiq(oracle_points, cost_range=span)
    else:
        aiq_values[ROUTER] = None
        aiq_values["oracle"] = None

    best_single = next(s for s in strategies if s.name == groups[OVERALL].best_single)
    seeds = seed_runs(list(seed_policies or {}), per_seed, best_single)
    learners = [s for s in strategies if s.kind in ("router", "router_seeds", "learned")]
    boot = bootstrap_indices(len(test_items), resamples, seed)
    pairs = {
        (a.name, b.name): mean_interval(a.scores.reward - b.scores.reward, boot)
        for i, a in enumerate(learners)
        for b in learners[i + 1 :]
    }
    used_train = fitted or train_items  # the recorded train items when the record is incomplete
    train_tasks = Counter(item.task for item in used_train)
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
        n_train=len(used_train),
        counts={t: (train_tasks.get(t, 0), test_tasks[t]) for t in tasks},
        best_fixed_route=fixed,
        best_fixed_source=source,
        aiq=aiq_values,
        aiq_cost_range=span,
        alpha_points=points,
        seed_runs=seeds,
        router_pairs=pairs,
        data_info=dict(data_info or {}),
        notes=notes,
    )
