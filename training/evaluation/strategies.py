"""The strategies every router is compared with, each read off the same replayed outcome tree.

Definitions (exact; "reward" is R = Q − α·C of ``training.tasks.reward.terminal_reward``):

- **candidate routes**: every route of length 1..L (the tree's nodes). A length-1 route is one
  call of one model with the stage-0 instruction; its reward uses its own (one-call) cost.
- **HierRouter**: greedy ``policy.decide(context, stage, cost)`` at each of the L stages, fed the
  context text and cumulative cost the graph would feed it (the route step of
  ``hierrouter_graph.route``); a router with ``allow_stop`` that chooses STOP after ℓ hops takes
  the length-ℓ route (the tree holds every prefix, so early exit is pure replay too) and is scored
  on it: R = Q(c_ℓ) − α·C_ℓ.
- **single model**: ``m (1 call)`` = route ``(m,)``; ``m (×L)`` = route ``(m, …, m)``.
- **best single** (per table): the single-model strategy with the highest mean reward on that
  table's queries (ties: the first in pool order, one call before ×L).
- **random**: the exact expectation of uniform routing — per query, the mean over all M^L routes
  of length L; no sampling.
- **best fixed route**: the candidate route with the highest mean reward over the whole TRAIN
  split, evaluated on test (ties: lower mean cost, then candidate order). Without a train tree it
  is chosen on test and labelled "hindsight".
- **per-task routing (train)**: per task, the candidate route with the highest mean reward on that
  task's TRAIN items (``best_route``), taken by every test query of the task — what routing by a
  known task label alone gives (the router never sees the label; a test task without train items
  takes the best fixed route, with a note). Left out without a train tree.
- **kNN router (k=…)** / **MLP router**: the learned routers (``training.evaluation.learned_routers``):
  from the frozen embedding of the query alone, one whole route of length 1..L per query — the
  route with the best mean R among the k nearest train queries (k chosen on held-out train
  items), or the best R = Q̂ − α·Ĉ of an MLP predicting every route's Q and C. Fitted on the
  train tree only, at the table's α; left out (with a note) without a train tree or embeddings.
- **task oracle**: per task, the candidate route with the highest mean reward on that task's test
  queries (hindsight); the overall row gives each query its own task's route.
- **oracle**: per query, the candidate route with the highest reward (ties: lower cost, then
  candidate order) — the ceiling of every strategy above.

A new baseline is a ``StrategyBuilder``: a function of ``StrategyInputs`` (the test tree and items,
the candidates, the train tree and items when recorded) returning its ``Strategy`` rows; add it to
``BASELINES`` (or pass ``baselines=`` to ``evaluate``) and every table, interval and report has it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.policy.protocol import STOP_ACTION, RoutingPolicy
from hierrouter_graph.policy.signature import PolicyMismatchError, PolicySignature
from hierrouter_graph.policy.trained import TrainedPolicy
from hierrouter_graph.route import RouteState, decide_next
from training.evaluation.learned_routers import KNN, MLP, fit_routers, stack
from training.evaluation.statistics import FloatArray
from training.replay.tree import OutcomeTree, Route, RouteOutcome, route_label
from training.tasks.items import ALL_TASKS, Item

__all__ = [
    "BASELINES",
    "ORACLE",
    "PER_TASK",
    "RANDOM",
    "ROUTER",
    "TASK_ORACLE",
    "Scores",
    "Strategy",
    "StrategyBuilder",
    "StrategyInputs",
    "best_fixed_strategy",
    "best_route",
    "fixed_strategy",
    "learned_strategies",
    "oracle_routes",
    "oracle_strategy",
    "per_query_strategy",
    "per_task_routes",
    "per_task_strategy",
    "random_strategy",
    "router_routes",
    "router_strategy",
    "single_model_strategies",
    "task_oracle_strategy",
    "task_order",
]

ROUTER = "HierRouter"
RANDOM = "random (uniform, exact)"
TASK_ORACLE = "task oracle (hindsight)"
PER_TASK = "per-task routing (train)"
ORACLE = "oracle (per query)"


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
    """"router", "router_seeds", "single", "random", "fixed", "per_task", "learned", "task_oracle" or
    "oracle"."""
    scores: Scores
    routes: tuple[Route | None, ...]
    """The route per query (None for random routing, which is a mixture)."""
    description: str = ""


def fixed_strategy(name: str, kind: str, tree: OutcomeTree, items: Sequence[Item], route: Route) -> Strategy:
    outcomes = [tree[item.id][route] for item in items]
    return Strategy(name, kind, Scores.of(outcomes), tuple(route for _ in items), route_label(route))


def per_query_strategy(
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
        out.append(fixed_strategy(f"{name} (1 call)", "single", tree, items, (name,)))
        if config.horizon > 1:
            out.append(
                fixed_strategy(f"{name} (×{config.horizon})", "single", tree, items, (name,) * config.horizon)
            )
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


def task_order(items: Sequence[Item]) -> list[str]:
    """The tasks of ``items``: the benchmarks' in ``ALL_TASKS`` order, then any others sorted."""
    present = {item.task for item in items}
    return [t for t in ALL_TASKS if t in present] + sorted(present - set(ALL_TASKS))


def per_task_routes(
    tree: OutcomeTree, items: Sequence[Item], candidates: Sequence[Route]
) -> dict[str, Route]:
    """Per task of ``items`` (``task_order``), the candidate with the best mean reward on that
    task's items (``best_route``: ties → lower cost, then candidate order)."""
    return {t: best_route(tree, [i for i in items if i.task == t], candidates) for t in task_order(items)}


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
    policy: RoutingPolicy,
    config: RouterConfig,
    tree: OutcomeTree,
    items: Sequence[Item],
    chunk: int = 64,
    *,
    alpha: float | None = None,
) -> list[Route]:
    """Greedy routes of ``policy``, walking the tree with the graph's state (c_t, ℓ_t, C_t).

    ``alpha``: the cost weight an α-conditioned policy routes for (default: the config's, as the
    graph's); a policy trained at one α ignores it.

    A ``TrainedPolicy``'s encoder caches by text, so each chunk's
    reachable contexts are encoded in one batch first; the decisions themselves are the graph's
    (``route.decide_next``). A STOP decision ends the walk there (routes may be shorter than L);
    STOP at stage 0 or from a config without ``allow_stop`` raises, as the graph would.
    """
    PolicySignature(pool=tuple(config.model_names)).check(PolicySignature(pool=tuple(policy.pool)))
    routes: list[Route] = []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        if isinstance(policy, TrainedPolicy):
            reachable: list[str] = []
            for item in part:
                reachable.append(item.prompt)
                reachable += [o.context for r, o in tree[item.id].items() if len(r) < config.horizon]
            policy.encoder.encode(list(dict.fromkeys(reachable)))
        for item in part:
            state = RouteState.start(item.prompt, config.alpha if alpha is None else alpha)
            while state.stage < config.horizon:
                decision = decide_next(policy, state, config.allow_stop)
                if decision.model == STOP_ACTION:
                    break
                if decision.model not in config.model_names:
                    raise PolicyMismatchError(f"policy chose {decision.model!r}, not in {config.model_names}")
                node = tree[item.id][(*state.route, decision.model)]
                state = RouteState(
                    item.prompt,
                    node.context,
                    state.stage + 1,
                    node.cost,
                    node.route,
                    node.confidence,
                    alpha=state.alpha,
                )
            routes.append(state.route)
    return routes


def router_strategy(
    policy: RoutingPolicy, config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> Strategy:
    """The learned router's row: its greedy route per query."""
    routes = router_routes(policy, config, tree, items)
    return per_query_strategy(ROUTER, "router", tree, items, routes, "greedy policy")


# ---------------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class StrategyInputs:
    """What a baseline may read: the test tree and items, and what was chosen on the train split."""

    config: RouterConfig
    tree: OutcomeTree
    items: Sequence[Item]
    candidates: Sequence[Route]
    fixed_route: Route
    """The best fixed route (chosen on train, or on test when ``fixed_source == "hindsight"``)."""
    fixed_source: str
    train_tree: OutcomeTree | None = None
    """The train items' outcome tree when it is recorded (what a learned baseline fits on)."""
    train_items: Sequence[Item] = ()
    alpha: float | None = None
    """The α of the reward R = Q − α·C the tables use (None: the config's)."""
    embeddings: Mapping[str, FloatArray] | None = None
    """Item id → the frozen encoder's embedding of the item's stage-0 context (its query), for the
    train and test items: what the learned single-hop baselines read (None: they are skipped)."""
    notes: list[str] = field(default_factory=list)
    """Builders append what a reader must know (e.g. a baseline left out, and why)."""

    @property
    def reward_alpha(self) -> float:
        return self.config.alpha if self.alpha is None else self.alpha


StrategyBuilder = Callable[[StrategyInputs], list[Strategy]]
"""A baseline: its rows from the inputs (the router's row is built from the policy beforehand)."""


def best_fixed_strategy(inputs: StrategyInputs) -> list[Strategy]:
    name = f"best fixed route ({inputs.fixed_source})"
    return [fixed_strategy(name, "fixed", inputs.tree, inputs.items, inputs.fixed_route)]


def learned_strategies(inputs: StrategyInputs) -> list[Strategy]:
    """The kNN and MLP rows, fitted on the train tree at the table's α (module docstring)."""
    if inputs.train_tree is None or not inputs.train_items:
        inputs.notes.append("kNN/MLP routers left out: no recorded train outcome tree to fit them on")
        return []
    if inputs.embeddings is None:
        inputs.notes.append("kNN/MLP routers left out: no query embeddings (evaluate without an encoder)")
        return []
    fitted = fit_routers(inputs.train_tree, inputs.train_items, inputs.embeddings, inputs.candidates)
    queries, alpha = stack(inputs.embeddings, inputs.items), inputs.reward_alpha
    k = fitted.knn(alpha)[0].k
    rows = []
    for kind, name, how in (
        (KNN, f"{KNN} (k={k})", f"best mean R of the {k} nearest train queries"),
        (MLP, MLP, "argmax of predicted Q − α·C"),
    ):
        routes = fitted.routes(kind, alpha, queries)
        rows.append(per_query_strategy(name, "learned", inputs.tree, inputs.items, routes, how))
    return rows


def per_task_strategy(inputs: StrategyInputs) -> list[Strategy]:
    """Each test query takes its task's best route on the train tree (module docstring)."""
    if inputs.train_tree is None or not inputs.train_items:
        inputs.notes.append(f"{PER_TASK} left out: no recorded train outcome tree to choose it on")
        return []
    by_task = per_task_routes(inputs.train_tree, inputs.train_items, inputs.candidates)
    unseen = sorted({item.task for item in inputs.items} - set(by_task))
    if unseen:
        missing = ", ".join(unseen)
        inputs.notes.append(f"{PER_TASK}: no train items of {missing}; those take the best fixed route")
    routes = [by_task.get(item.task, inputs.fixed_route) for item in inputs.items]
    described = "; ".join(f"{task}: {route_label(route)}" for task, route in by_task.items())
    return [per_query_strategy(PER_TASK, "per_task", inputs.tree, inputs.items, routes, described)]


def task_oracle_strategy(inputs: StrategyInputs) -> list[Strategy]:
    """Each test query takes its task's best route on the test tree itself (hindsight)."""
    by_task = per_task_routes(inputs.tree, inputs.items, inputs.candidates)
    routes = [by_task[item.task] for item in inputs.items]
    return [
        per_query_strategy(TASK_ORACLE, "task_oracle", inputs.tree, inputs.items, routes, "each task's best")
    ]


def oracle_strategy(inputs: StrategyInputs) -> list[Strategy]:
    routes = oracle_routes(inputs.tree, inputs.items, inputs.candidates)
    return [per_query_strategy(ORACLE, "oracle", inputs.tree, inputs.items, routes, "best route per query")]


BASELINES: tuple[StrategyBuilder, ...] = (
    lambda inputs: single_model_strategies(inputs.config, inputs.tree, inputs.items),
    lambda inputs: [random_strategy(inputs.config, inputs.tree, inputs.items)],
    best_fixed_strategy,
    per_task_strategy,
    learned_strategies,
    task_oracle_strategy,
    oracle_strategy,
)
"""The rows after the router's, in table order: singles, random, best fixed, per-task routing, kNN
and MLP routers, task oracle, oracle."""
