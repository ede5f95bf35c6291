"""The cost–quality curve study: every router family traced over an α grid on the test split, AIQ
per family with bootstrap intervals, RouteLLM's APGR / CPT(50%) — as objects (``run_study`` →
``CurveStudy``); ``python training/curves.py`` (``cli/curves.py``) runs it, ``curves_report.py``
writes it.

HierRouter needs a policy per α (and per seed): each is one PPO run through ``settings.train_setting``
in ``run_dir/seed<S>/L<L>-a<α>`` (a finished run is only loaded again, so a rerun is cheap); one
α-conditioned policy per seed serves the whole grid instead (``run_dir/seed<S>-conditioned``). The
kNN and MLP routers are fitted once on the train tree and asked at every α; the oracle and the best
fixed route (chosen on train) are read off the trees.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.protocol import RoutingPolicy
from training.evaluation import curves as cv
from training.evaluation.learned_routers import KNN, MLP, fit_routers, query_embeddings
from training.evaluation.statistics import aiq
from training.experiments.settings import Setting, setting_config, train_setting
from training.replay.readers import CachedEncoder
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import candidate_routes, complete_items, shared_tree
from training.rl.args import PPOArgs
from training.tasks.items import ALL_TASKS, Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "CONDITIONED_FAMILY",
    "DEFAULT_CURVE_ALPHAS",
    "ROUTER_FAMILY",
    "CurveStudy",
    "RouteLLMRow",
    "run_study",
]

DEFAULT_CURVE_ALPHAS = (0.0, 0.005, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)
"""α = 0 takes the best quality whatever it costs; on the default pool routes cost 0.01–0.2 per
query while a right answer is worth 1, so by α = 100 even the per-query oracle takes each query's
cheapest route: the grid spans "always best" to "always cheapest" (0.005 is the paper's α)."""
ROUTER_FAMILY = "HierRouter (PPO per α)"
CONDITIONED_FAMILY = "HierRouter (one α-conditioned policy)"


@dataclass(frozen=True)
class RouteLLMRow:
    """APGR and CPT(50%) of one family on one table's queries, between that table's weak/strong."""

    group: str
    weak: str
    strong: str
    family: str
    apgr: float
    cpt: float


@dataclass
class CurveStudy:
    """Everything ``run_study`` measured: the curves, their AIQ, the RouteLLM scores."""

    alphas: tuple[float, ...]
    zero: cv.Curve
    curves: list[cv.Curve]
    aiq: dict[str, cv.AIQResult]
    seed_aiq: dict[int, float]
    """HierRouter's AIQ per PPO seed (same cost range as the table)."""
    routellm: list[RouteLLMRow]
    n_train: int
    n_test: int
    train_seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def _routellm(
    families: Sequence[cv.Curve],
    singles: cv.Curve,
    single_routes: list[tuple[str, ...]],
    groups: Mapping[str, Any],
) -> list[RouteLLMRow]:
    rows = []
    for group, index in groups.items():
        (weak_label, weak), (strong_label, strong) = cv.weak_and_strong(singles, single_routes, index)
        for curve in families:
            apgr_value, cpt_value = cv.routellm_scores(curve, weak, strong, index)
            rows.append(RouteLLMRow(group, weak_label, strong_label, curve.family, apgr_value, cpt_value))
    return rows


def run_study(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    train_items: Sequence[Item],
    test_items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    alphas: Sequence[float],
    *,
    seeds: Sequence[int] = (),
    extra_seeds: Sequence[int] = (),
    conditioned_seeds: Sequence[int] = (),
    conditioned_iterations: int | None = None,
    args: PPOArgs | None = None,
    run_dir: Path = Path("runs/curves"),
    resamples: int = 1000,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> CurveStudy:
    """Trace every family on ``alphas`` (HierRouter: one PPO run per α and seed in ``seeds``; none:
    baselines only) and score the curves. Replay only; the train tree is what the learned
    baselines and the best fixed route are fitted on, and what PPO trains on. ``extra_seeds`` are
    trained at the config's α only (``run_dir/seed<S>/L<L>-a<α>``, beside the curve's own runs):
    the seed runs ``evaluate.py --seed-run-dirs`` averages, sharing this process's scores.
    ``conditioned_seeds``: per seed, ONE α-conditioned policy (``alpha_range`` = the grid's
    positive ends) trained for ``conditioned_iterations`` (default: the per-α family's total,
    iterations × grid points, so both families get the same episodes) and asked at every α."""
    cached = CachedEncoder(encoder, store)
    memo = ScoreMemo()
    candidates = candidate_routes(config)
    train = complete_items(config, pool, train_items, store)
    if not train:
        raise ValueError("no train item has its whole outcome tree recorded: nothing to fit or train on")
    test_tree = shared_tree(config, pool, test_items, store, memo, progress=progress)
    train_tree = shared_tree(config, pool, train, store, memo, progress=progress)
    embeddings = query_embeddings(cached, [*train, *test_items])
    fitted = fit_routers(train_tree, train, embeddings, candidates)
    grid = tuple(sorted(float(a) for a in alphas))

    def traced(name: str, family: cv.RouteFamily) -> cv.Curve:
        return cv.trace(name, family, grid, test_tree, test_items)

    curves: list[cv.Curve] = []
    per_seed: dict[int, cv.Curve] = {}
    seconds: dict[str, float] = {}

    def trained(seed: int, alpha: float) -> RoutingPolicy:
        ppo = PPOArgs(**{**(args or PPOArgs()).as_dict(), "seed": seed})
        setting = Setting(config.horizon, config.allow_stop, alpha, config.uncertainty_state)
        policy, spent, _ = train_setting(
            setting, setting_config(config, setting), pool, train, store, cached, ppo,
            run_dir / f"seed{seed}", progress=progress, log=log, memo=memo,
        )  # fmt: skip
        seconds[f"seed{seed}/{setting.name}"] = spent
        log(f"seed {seed}, α = {alpha:g}: trained in {spent:.0f} s")
        return policy

    for seed in extra_seeds:
        trained(seed, config.alpha)
    for seed in seeds:
        policies = {alpha: trained(seed, alpha) for alpha in grid}
        per_seed[seed] = traced(
            f"{ROUTER_FAMILY}, seed {seed}", cv.policy_family(policies, config, test_tree, test_items)
        )
    if per_seed:
        name = ROUTER_FAMILY + (f", mean of {len(per_seed)} seeds" if len(per_seed) > 1 else "")
        curves.append(cv.mean_curve(name, list(per_seed.values())))
    conditioned: list[cv.Curve] = []
    for seed in conditioned_seeds:
        policy, cond_config = _trained_conditioned(
            seed, grid, config, pool, train, store, cached, args or PPOArgs(), conditioned_iterations,
            run_dir, memo, progress, log, seconds,
        )  # fmt: skip
        family = cv.conditioned_family(policy, cond_config, test_tree, test_items)
        conditioned.append(traced(f"{CONDITIONED_FAMILY}, seed {seed}", family))
    if conditioned:
        name = CONDITIONED_FAMILY + (f", mean of {len(conditioned)} seeds" if len(conditioned) > 1 else "")
        curves.append(cv.mean_curve(name, conditioned))
    curves += [
        traced(KNN, cv.learned_family(fitted, KNN, embeddings, test_items)),
        traced(MLP, cv.learned_family(fitted, MLP, embeddings, test_items)),
        traced(
            "best fixed route (chosen on train)",
            cv.best_fixed_family(train_tree, train, candidates, len(test_items)),
        ),
        traced("oracle (per query, hindsight)", cv.oracle_family(test_tree, test_items, candidates)),
    ]
    zero = cv.fixed_curve(test_tree, test_items, candidates)
    scores = cv.aiq_intervals(curves, zero, resamples=resamples)
    fixed_points = zero.points()
    span = (min(c for c, _ in fixed_points), max(c for c, _ in fixed_points))
    seed_aiq = {seed: aiq(curve.points(), cost_range=span) for seed, curve in per_seed.items()}

    singles_routes = [r for m in config.model_names for r in dict.fromkeys([(m,), (m,) * config.horizon])]
    singles = cv.fixed_curve(test_tree, test_items, singles_routes)
    tasks = [t for t in ALL_TASKS if any(i.task == t for i in test_items)]
    tasks += sorted({i.task for i in test_items} - set(tasks))
    task_of = np.array([item.task for item in test_items])
    groups: dict[str, Any] = {
        "overall": None,
        **{t: np.flatnonzero(task_of == t).astype(np.intp) for t in tasks},
    }
    routellm = _routellm([zero, *curves], singles, singles_routes, groups)
    return CurveStudy(grid, zero, curves, scores, seed_aiq, routellm, len(train), len(test_items), seconds)


def _trained_conditioned(
    seed: int,
    grid: Sequence[float],
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    train: Sequence[Item],
    store: ReplayStore,
    cached: CachedEncoder,
    args: PPOArgs,
    iterations: int | None,
    run_dir: Path,
    memo: ScoreMemo,
    progress: bool,
    log: Callable[[str], None],
    seconds: dict[str, float],
) -> tuple[RoutingPolicy, RouterConfig]:
    """One α-conditioned PPO run over the grid's positive range, in ``run_dir/seed<S>-conditioned``."""
    positive = [a for a in grid if a > 0]
    if len(positive) < 2:
        raise ValueError("an α-conditioned policy needs at least two positive α in the grid")
    lo, hi = min(positive), max(positive)
    cond = RouterConfig.model_validate({**config.model_dump(), "alpha": lo, "alpha_range": (lo, hi)})
    total = iterations if iterations is not None else args.iterations * len(grid)
    ppo = PPOArgs(**{**args.as_dict(), "seed": seed, "iterations": total})
    setting = Setting(config.horizon, config.allow_stop, lo, config.uncertainty_state)
    policy, spent, _ = train_setting(
        setting, cond, pool, train, store, cached, ppo, run_dir / f"seed{seed}-conditioned",
        progress=progress, log=log, memo=memo,
    )  # fmt: skip
    seconds[f"seed{seed}-conditioned"] = spent
    log(f"seed {seed}, one α-conditioned policy on [{lo:g}, {hi:g}], {total} iterations: {spent:.0f} s")
    return policy, cond
