"""The learning curve: how each router's test reward grows with the number of training items
(``run_learning_curve`` → ``LearningCurve``, written as ``learning_curve.json``);
``python training/learning_curve.py`` (``cli/learning_curve.py``) runs it,
``learning_curve_report.py`` writes it.

Why: a router that loses to the best single member at 48 items may still win at 420 (or never);
none of the anchors publishes the curve. At every size n the recorded train items are cut to a
nested, task-stratified subset (subset(24) ⊂ subset(48) ⊂ …, ``stratified_order``), and everything
that learns — HierRouter (PPO through ``settings.train_setting``, one run per seed), the kNN and MLP
routers, per-task routing, the best fixed route and the best single itself — is fitted on that
subset alone, then scored on the whole test split at one α. A size above the recorded train items
is skipped with a note, never padded. Several subset draws (``draws``) average out which items
happened to be drawn: every row is then the per-query mean over the draws (and over the seeds for
HierRouter), so its paired bootstrap interval stays one over test items.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from training.evaluation.learned_routers import KNN, MLP, fit_routers, query_embeddings, stack
from training.evaluation.statistics import FloatArray, Interval, bootstrap_indices, mean_interval
from training.evaluation.strategies import (
    PER_TASK,
    Scores,
    best_route,
    per_query_strategy,
    per_task_routes,
    router_routes,
    task_order,
)
from training.experiments.settings import Setting, setting_config, train_setting
from training.replay.readers import CachedEncoder
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import (
    OutcomeTree,
    Route,
    candidate_routes,
    complete_items,
    route_label,
    shared_tree,
)
from training.rl.args import PPOArgs
from training.rl.checkpointing import atomic_write
from training.tasks.items import Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "BEST_FIXED",
    "BEST_SINGLE",
    "DEFAULT_SIZES",
    "HIERROUTER",
    "PER_TASK",
    "STRATEGIES",
    "CurveRow",
    "LearningCurve",
    "LearningCurveSettings",
    "run_learning_curve",
    "stratified_order",
]

DEFAULT_SIZES = (24, 48, 96, 192, 420)
"""Train items per point: the issue's grid, up to the 420 train items of a whole routing split."""
HIERROUTER = "HierRouter (PPO, seed mean)"
BEST_SINGLE = "best single (chosen on train)"
BEST_FIXED = "best fixed route (chosen on train)"
STRATEGIES = (HIERROUTER, KNN, MLP, PER_TASK, BEST_FIXED, BEST_SINGLE)
"""Row order of every table and plot."""


@dataclass(frozen=True)
class LearningCurveSettings:
    """What the curve is measured with, beside the sizes, the PPO seeds and the PPO arguments."""

    draws: int = 1
    """nested subset sequences drawn (each from its own seed); rows are the per-query mean over them"""
    subset_seed: int = 0
    """seed of the first draw (draw d uses subset_seed + d)"""
    alpha: float | None = None
    """the table's cost weight α (PPO trains at it too; default: the config's)"""
    resamples: int = 1000
    """paired bootstrap resamples over test items"""
    bootstrap_seed: int = 0
    """seed of the bootstrap resamples"""

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        if self.resamples < 1:
            raise ValueError(f"resamples must be >= 1, got {self.resamples}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha}")


@dataclass(frozen=True)
class CurveRow:
    """One strategy at one training size: test reward and its paired Δ vs the best single member
    chosen on the same subset (both with 95% intervals over test items)."""

    size: int
    strategy: str
    reward: Interval
    delta: Interval
    cost: float
    task_metric: float
    routes: str
    """the route(s) it took: a fixed route's label, per task, or the most taken with its share"""
    seed_rewards: tuple[float, ...] = ()
    """HierRouter: each seed's mean test reward (over the draws): the seed spread"""


@dataclass
class LearningCurve:
    """Everything ``run_learning_curve`` measured; ``to_json``/``from_json`` round-trip it."""

    sizes: tuple[int, ...]
    """the sizes measured (those not above the recorded train items)"""
    skipped: tuple[int, ...]
    alpha: float
    n_train: int
    """train items whose whole outcome tree is recorded (what subsets are drawn from)"""
    n_test: int
    seeds: tuple[int, ...]
    settings: LearningCurveSettings
    rows: list[CurveRow]
    orders: list[list[str]]
    """per draw, the train item ids in draw order: subset(n) of that draw is its first n (fitted
    and trained on in the recorded train order)"""
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def row(self, size: int, strategy: str) -> CurveRow:
        """The row of ``strategy`` at ``size`` (KeyError naming both when absent)."""
        for row in self.rows:
            if row.size == size and row.strategy == strategy:
                return row
        raise KeyError(f"no row for {strategy!r} at n = {size}")

    def subset(self, size: int, draw: int = 0) -> list[str]:
        """The item ids of subset(``size``) of draw ``draw``."""
        return self.orders[draw][:size]

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LearningCurve:
        def interval(value: Mapping[str, float]) -> Interval:
            return Interval(value["mean"], value["low"], value["high"])

        rows = [
            CurveRow(
                **{
                    **row,
                    "reward": interval(row["reward"]),
                    "delta": interval(row["delta"]),
                    "seed_rewards": tuple(row["seed_rewards"]),
                }
            )
            for row in data["rows"]
        ]
        return cls(
            sizes=tuple(data["sizes"]),
            skipped=tuple(data["skipped"]),
            alpha=data["alpha"],
            n_train=data["n_train"],
            n_test=data["n_test"],
            seeds=tuple(data["seeds"]),
            settings=LearningCurveSettings(**data["settings"]),
            rows=rows,
            orders=[list(order) for order in data["orders"]],
            notes=list(data["notes"]),
            info=dict(data["info"]),
        )

    def write(self, path: str | Path) -> Path:
        """``learning_curve.json`` written atomically (a kill leaves the old file or the new one)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

        def write(tmp: Path) -> None:
            tmp.write_text(text, encoding="utf-8")

        atomic_write(target, write)
        return target

    @classmethod
    def read(cls, path: str | Path) -> LearningCurve:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a learning_curve.json ({error})") from error


def stratified_order(items: Sequence[Item], seed: int) -> list[Item]:
    """``items`` in an order whose every prefix is task-stratified: each task's items shuffled
    (``seed``), then at every step the task furthest below its share of the items so far is next
    (ties: ``ALL_TASKS`` order). Subsets are prefixes, hence nested; with equal task counts a
    prefix of k·T items holds exactly k of each of the T tasks."""
    rng = np.random.default_rng(seed)
    tasks = task_order(items)
    queues = {t: [i for i in items if i.task == t] for t in tasks}
    queues = {t: [queue[j] for j in rng.permutation(len(queue))] for t, queue in queues.items()}
    taken = dict.fromkeys(tasks, 0)
    order: list[Item] = []
    for step in range(1, len(items) + 1):
        open_tasks = [t for t in tasks if taken[t] < len(queues[t])]
        task = max(open_tasks, key=lambda t: len(queues[t]) * step / len(items) - taken[t])
        order.append(queues[task][taken[task]])
        taken[task] += 1
    return order


def _most_taken(routes: Sequence[Route]) -> str:
    (route, count), *_ = Counter(routes).most_common(1)
    return f"{route_label(route)} ({count / len(routes):.0%})"


@dataclass
class _Point:
    """Per-query numbers of every strategy at one size, summed over the draws."""

    reward: dict[str, FloatArray] = field(default_factory=dict)
    cost: dict[str, FloatArray] = field(default_factory=dict)
    metric: dict[str, FloatArray] = field(default_factory=dict)
    routes: dict[str, list[str]] = field(default_factory=dict)
    seeds: dict[int, FloatArray] = field(default_factory=dict)

    def add(
        self, name: str, tree: OutcomeTree, items: Sequence[Item], routes: Sequence[Route], described: str,
        weight: float,
    ) -> Scores:  # fmt: skip
        """Score ``routes`` (one per test item) on ``tree`` and add them, weighted, to ``name``."""
        scores = per_query_strategy(name, "learning_curve", tree, items, routes).scores
        pairs = ((self.reward, scores.reward), (self.cost, scores.cost), (self.metric, scores.task_metric))
        for kept, values in pairs:
            kept[name] = kept.get(name, 0.0) + weight * values
        self.routes.setdefault(name, []).append(described)
        return scores


def run_learning_curve(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    train_items: Sequence[Item],
    test_items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    *,
    sizes: Sequence[int] = DEFAULT_SIZES,
    seeds: Sequence[int] = (),
    args: PPOArgs | None = None,
    settings: LearningCurveSettings | None = None,
    run_dir: Path = Path("runs/learning_curve"),
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> LearningCurve:
    """Fit every strategy on each nested subset of the recorded train items and score it on the
    test split (replay only). ``seeds``: HierRouter's PPO seeds (none: no HierRouter row), each
    run in ``run_dir/n<N>-draw<D>/seed<S>/<setting>`` (a finished run is only loaded again)."""
    settings = settings or LearningCurveSettings()
    alpha = config.alpha if settings.alpha is None else settings.alpha
    setting = Setting(config.horizon, config.allow_stop, alpha, config.uncertainty_state)
    ppo_config = setting_config(config, setting)
    cached = CachedEncoder(encoder, store)
    memo = ScoreMemo()
    candidates = candidate_routes(config)
    singles = [r for m in config.model_names for r in dict.fromkeys([(m,), (m,) * config.horizon])]
    train = complete_items(config, pool, train_items, store)
    if not train:
        raise ValueError("no train item has its whole outcome tree recorded: nothing to fit or train on")
    if not test_items:
        raise ValueError("the test split is empty: nothing to score the curve on")
    wanted = sorted({int(n) for n in sizes})
    if not wanted or wanted[0] < 1:
        raise ValueError(f"sizes must be positive integers, got {list(sizes)}")
    measured = [n for n in wanted if n <= len(train)]
    skipped = [n for n in wanted if n > len(train)]
    notes = [
        f"n = {n} skipped: only {len(train)} train items have their whole tree recorded (never padded)"
        for n in skipped
    ]
    if not measured:
        raise ValueError(f"every size {wanted} is above the {len(train)} recorded train items")
    metric = (args or PPOArgs()).reward  # the Q PPO is rewarded with scores every strategy
    test_tree = shared_tree(
        config, pool, test_items, store, memo, reward_metric=metric, alpha=alpha, progress=progress
    )
    train_tree = shared_tree(
        config, pool, train, store, memo, reward_metric=metric, alpha=alpha, progress=progress
    )
    embeddings = query_embeddings(cached, [*train, *test_items])
    test_x = stack(embeddings, test_items)
    weight = 1.0 / settings.draws
    points = {n: _Point() for n in measured}
    orders: list[list[str]] = []
    for draw in range(settings.draws):
        order = stratified_order(train, settings.subset_seed + draw)
        orders.append([item.id for item in order[: measured[-1]]])
        for n in measured:
            chosen = {item.id for item in order[:n]}
            # fitted in the recorded order: a result depends on which items, never on the draw order
            subset, point = [item for item in train if item.id in chosen], points[n]
            single = best_route(train_tree, subset, singles)
            fixed = best_route(train_tree, subset, candidates)
            by_task = per_task_routes(train_tree, subset, candidates)
            unseen = sorted({i.task for i in test_items} - set(by_task))
            if unseen:
                notes.append(
                    f"n = {n}, draw {draw}: no train item of {unseen}; the best fixed route serves them"
                )
            every = len(test_items)

            def add(name: str, routes: Sequence[Route], described: str, point: _Point = point) -> Scores:
                return point.add(name, test_tree, test_items, routes, described, weight)

            add(BEST_SINGLE, [single] * every, route_label(single))
            add(BEST_FIXED, [fixed] * every, route_label(fixed))
            add(
                PER_TASK,
                [by_task.get(i.task, fixed) for i in test_items],
                "; ".join(f"{t}: {route_label(r)}" for t, r in by_task.items()),
            )
            fitted = fit_routers(train_tree, subset, embeddings, candidates)
            for kind in (KNN, MLP):
                routes = fitted.routes(kind, alpha, test_x)
                add(kind, routes, _most_taken(routes))
            for seed in seeds:
                ppo = PPOArgs(**{**(args or PPOArgs()).as_dict(), "seed": seed})
                folder = run_dir / f"n{n}-draw{draw}" / f"seed{seed}"
                policy, spent, _ = train_setting(
                    setting, ppo_config, pool, subset, store, cached, ppo, folder,
                    progress=progress, log=log, memo=memo,
                )  # fmt: skip
                routes = router_routes(policy, ppo_config, test_tree, test_items)
                scores = add(f"{HIERROUTER}/seed{seed}", routes, _most_taken(routes))
                log(
                    f"n = {n}, draw {draw}, seed {seed}: trained in {spent:.0f} s, "
                    f"test reward {scores.reward.mean():.4f}"
                )
    index = bootstrap_indices(len(test_items), settings.resamples, settings.bootstrap_seed)
    rows = [row for n in measured for row in _rows(n, points[n], seeds, index)]
    return LearningCurve(
        tuple(measured), tuple(skipped), alpha, len(train), len(test_items), tuple(seeds), settings, rows,
        orders, notes,
    )  # fmt: skip


def _rows(size: int, point: _Point, seeds: Sequence[int], index: Any) -> list[CurveRow]:
    """The rows at one size: per-query means (over draws; HierRouter also over seeds), paired
    intervals against the best single chosen on the same subsets."""
    if seeds:
        keys = [f"{HIERROUTER}/seed{s}" for s in seeds]
        for kept in (point.reward, point.cost, point.metric):
            kept[HIERROUTER] = np.mean([kept[k] for k in keys], axis=0)
        point.routes[HIERROUTER] = [
            f"seed {s}: {'; '.join(point.routes[k])}" for s, k in zip(seeds, keys, strict=True)
        ]
    best = point.reward[BEST_SINGLE]
    rows = []
    for name in STRATEGIES:
        if name not in point.reward:
            continue
        reward = point.reward[name]
        seed_rewards = (
            tuple(float(point.reward[f"{HIERROUTER}/seed{s}"].mean()) for s in seeds)
            if name == HIERROUTER
            else ()
        )
        row = CurveRow(
            size, name, mean_interval(reward, index), mean_interval(reward - best, index),
            float(point.cost[name].mean()), float(point.metric[name].mean()),
            " | ".join(dict.fromkeys(point.routes[name])), seed_rewards,
        )  # fmt: skip
        rows.append(row)
    return rows
