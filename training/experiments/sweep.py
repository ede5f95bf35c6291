"""Sweeps: horizon L × cost weight α (× STOP, × confidence in the state), each trained with PPO and
evaluated on the test split.

Why a tool of its own: one PPO run answers "does the router beat the best single model at this
(L, α)?"; the questions a user of HierRouter actually has — is a second hop worth it, what does α
buy, does early exit help — need the same run repeated over settings and read side by side, with
each setting's own baselines (best single, best fixed route, oracle) and the AIQ of every α sweep.

Every setting is pure replay of the recorded outcome tree (``training/record.py``): PPO trains on
the train items whose whole tree of depth L is recorded and the evaluation replays the test tree.
A setting whose test tree is not recorded is skipped with the record command to run (generating a
deeper tree of the default pool takes hours on a CPU) unless ``--live`` allows generating it.
Runs resume: a setting already trained in ``--run-dir`` is only evaluated again.

    python training/sweep.py                                   # L 1-4 × α {0.001, 0.005, 0.01}, STOP at L=2
    python training/sweep.py --horizons 1 2 --alphas 0.005 --stop-horizons

The report (``training/experiments/sweep_report.py``) writes the marked "## Sweeps" section of docs/results.md
(the rest of the file is left alone),
docs/sweep_pareto.png and ``run_dir/summary.json``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.policy.router import RouterPolicy
from training.evaluation import evaluate as ev
from training.evaluation.statistics import Interval
from training.evaluation.strategies import ORACLE, ROUTER
from training.evaluation.tables import StrategyRow
from training.experiments.settings import Setting, setting_config, train_setting
from training.replay.readers import CachedEncoder
from training.replay.store import ReplayStore, StateEncoder
from training.replay.tree import complete_items
from training.rl.args import PPOArgs
from training.tasks.items import DEFAULT_PER_TASK, Item
from training.tasks.reward import ScoreMemo

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_HORIZONS",
    "DEFAULT_STOP_HORIZONS",
    "DEFAULT_UNCERTAINTY_HORIZONS",
    "SECTION",
    "SettingResult",
    "Skipped",
    "SweepResult",
    "record_command",
    "run_sweep",
]

DEFAULT_HORIZONS = (1, 2, 3, 4)
DEFAULT_ALPHAS = (0.001, 0.005, 0.01)
DEFAULT_STOP_HORIZONS = (2,)
"""Horizons at which a STOP router is trained too (at every α), beside the fixed-L one."""
DEFAULT_UNCERTAINTY_HORIZONS = (2,)
"""Horizons at which a router with the last reply's confidence in its state is trained too."""
SECTION = "sweeps"
"""Name of the marked block of docs/results.md this tool owns (``reports.write_marked_section``)."""


@dataclass(frozen=True)
class Skipped:
    """A setting that was not run, and why (with the command that would make it runnable)."""

    setting: Setting
    reason: str


@dataclass
class SettingResult:
    """One trained and evaluated setting: the router's overall row and its baselines."""

    setting: Setting
    n_train: int
    n_test: int
    router: dict[str, float]
    """task_metric, quality, cost, reward, mean_hops (overall test means)."""
    vs_best_single: tuple[float, float, float]
    """(mean, low, high) of the router's reward minus the best single's, paired 95% bootstrap."""
    gap: tuple[float, float, float]
    best_single: dict[str, Any]
    best_fixed: dict[str, Any]
    oracle: dict[str, float]
    routes: dict[str, int]
    lengths: dict[int, int]
    train_seconds: float
    run_dir: str
    router_rewards: list[float] = field(repr=False, default_factory=list)
    """Per-query rewards in test-item order (for paired comparisons between settings)."""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("router_rewards")
        out["setting"] = {**asdict(self.setting), "name": self.setting.name}
        return out


@dataclass
class SweepResult:
    """Everything one sweep produced, in grid order."""

    results: list[SettingResult]
    skipped: list[Skipped]
    aiq: dict[str, dict[str, float | None]]
    """Family → AIQ of HierRouter's α sweep, of the oracle at the same α values, of fixed routes."""
    aiq_cost_range: dict[str, tuple[float, float]]
    singles: dict[int, list[dict[str, Any]]]
    """L → the single-model rows (name, cost, task metric, quality) of the test split."""
    n_test: int
    args: dict[str, Any]


def _summary(row: StrategyRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "route": row.description,
        "task_metric": row.task_metric.mean,
        "quality": row.quality.mean,
        "cost": row.cost.mean,
        "reward": row.reward.mean,
    }


def _interval(value: Interval | None) -> tuple[float, float, float]:
    return (value.mean, value.low, value.high) if value is not None else (0.0, 0.0, 0.0)


def record_command(setting: Setting, config_path: Path | None, per_task: int) -> str:
    parts = ["python", "training/record.py", "--split", "all", "--horizon", str(setting.horizon)]
    parts += ["--chunk-items", "48"]
    parts += ["--config", str(config_path)] if config_path is not None else []
    parts += ["--per-task", str(per_task)] if per_task != DEFAULT_PER_TASK else []
    return shlex.join(parts)


def run_sweep(
    base: RouterConfig,
    pool: Mapping[str, PoolMember],
    train_items: Sequence[Item],
    test_items: Sequence[Item],
    store: ReplayStore,
    encoder: StateEncoder,
    settings: Sequence[Setting],
    args: PPOArgs,
    run_dir: Path,
    *,
    live: bool = False,
    progress: bool = False,
    record_hint: Callable[[Setting], str] | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Train and evaluate every setting whose trees are recorded (all of them with ``live``).

    ``encoder`` is the state encoder of training (behind the store's embedding cache) and of the
    evaluated policies. ``record_hint(setting)`` gives the command named when a setting is
    skipped. Scores are shared across settings (they depend on neither α nor L).
    """
    hint = record_hint or (lambda s: record_command(s, None, DEFAULT_PER_TASK))
    cached = CachedEncoder(encoder, store)
    memo = ScoreMemo()
    results: list[SettingResult] = []
    skipped: list[Skipped] = []
    policies: dict[str, dict[float, RouterPolicy]] = {}
    configs: dict[str, RouterConfig] = {}
    splits: dict[int, tuple[list[Item], int]] = {}
    for setting in settings:
        config = setting_config(base, setting)
        if setting.horizon not in splits:
            recorded_test = len(test_items) if live else len(complete_items(config, pool, test_items, store))
            recorded_train = list(train_items) if live else complete_items(config, pool, train_items, store)
            splits[setting.horizon] = (recorded_train, recorded_test)
        recorded_train, recorded_test = splits[setting.horizon]
        if recorded_test < len(test_items) or not recorded_train:
            reason = (
                f"not recorded: run {hint(setting)} (L={setting.horizon} tree: {recorded_test} of "
                f"{len(test_items)} test items, {len(recorded_train)} of {len(train_items)} train items)"
            )
            log(f"skip {setting.name}: {reason}")
            skipped.append(Skipped(setting, reason))
            continue
        policy, seconds, trained_dir = train_setting(
            setting, config, pool, recorded_train, store, cached, args, run_dir,
            live=live, progress=progress, log=log, memo=memo,
        )  # fmt: skip
        result = ev.evaluate(
            config,
            pool,
            policy,
            recorded_train,
            test_items,
            store,
            args.reward,
            setting.alpha,
            memo=memo,
            live=live,
        )
        results.append(_setting_result(setting, result, len(recorded_train), seconds, trained_dir))
        policies.setdefault(setting.family, {})[setting.alpha] = policy
        configs[setting.family] = config
        row = results[-1].router
        log(
            f"{setting.name}: task metric {row['task_metric']:.3f}, cost {row['cost']:.4f}, reward "
            f"{row['reward']:.4f}, mean hops {row['mean_hops']:.2f} (train {seconds:.0f} s)"
        )

    aiq: dict[str, dict[str, float | None]] = {}
    spans: dict[str, tuple[float, float]] = {}
    singles: dict[int, list[dict[str, Any]]] = {}
    for family, by_alpha in policies.items():
        config = configs[family]
        train_for_l = splits[config.horizon][0]
        swept = ev.evaluate(
            config,
            pool,
            None,
            train_for_l,
            test_items,
            store,
            args.reward,
            config.alpha,
            memo=memo,
            live=live,
            alpha_policies=by_alpha,
        )
        aiq[family] = dict(swept.aiq)
        spans[family] = swept.aiq_cost_range
        singles[config.horizon] = [_summary(r) for r in swept.overall.rows if r.kind == "single"]
    return SweepResult(results, skipped, aiq, spans, singles, len(test_items), args.as_dict())


def _setting_result(
    setting: Setting, result: ev.EvaluationResult, n_train: int, seconds: float, run_dir: Path
) -> SettingResult:
    overall = result.overall
    router = overall.row(ROUTER)
    scores = result.strategies[ROUTER]
    hops = [len(route) for route in scores.routes if route is not None]
    fixed = next(r for r in overall.rows if r.kind == "fixed")
    return SettingResult(
        setting=setting,
        n_train=n_train,
        n_test=overall.n,
        router={
            "task_metric": router.task_metric.mean,
            "quality": router.quality.mean,
            "cost": router.cost.mean,
            "reward": router.reward.mean,
            "mean_hops": float(np.mean(hops)),
        },
        vs_best_single=_interval(router.vs_best_single),
        gap=_interval(router.gap),
        best_single=_summary(overall.row(overall.best_single)),
        best_fixed={**_summary(fixed), "chosen_on": result.best_fixed_source},
        oracle={k: v for k, v in _summary(overall.row(ORACLE)).items() if isinstance(v, float)},
        routes=dict(overall.router_routes),
        lengths=dict(overall.router_lengths),
        train_seconds=seconds,
        run_dir=str(run_dir),
        router_rewards=scores.scores.reward.tolist(),
    )
