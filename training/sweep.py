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

It writes the marked "## Sweeps" section of docs/results.md (the rest of the file is left alone),
docs/sweep_pareto.png and ``run_dir/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.encoder import TextEncoder
from hierrouter_graph.policy import RouterPolicy
from hierrouter_graph.pool import PoolMember
from training import evaluate as ev
from training.datasets import ALL_TASKS, DEFAULT_PER_TASK, Item
from training.ppo import PPOArgs, build_env, make_policy, train
from training.replay import CachedEncoder, ReplayOnlyCache, ReplayStore
from training.reports import write_marked_section
from training.reward import ScoreMemo
from training.shipped import import_shipped_replay
from training.statistics import Interval, bootstrap_interval
from training.strategies import ORACLE, ROUTER
from training.tree import complete_items, with_horizon

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_HORIZONS",
    "DEFAULT_STOP_HORIZONS",
    "DEFAULT_UNCERTAINTY_HORIZONS",
    "SECTION",
    "Setting",
    "SettingResult",
    "Skipped",
    "SweepResult",
    "main",
    "markdown_section",
    "parse_args",
    "plot_pareto",
    "run_sweep",
    "setting_config",
    "settings_grid",
]

DEFAULT_HORIZONS = (1, 2, 3, 4)
DEFAULT_ALPHAS = (0.001, 0.005, 0.01)
DEFAULT_STOP_HORIZONS = (2,)
"""Horizons at which a STOP router is trained too (at every α), beside the fixed-L one."""
DEFAULT_UNCERTAINTY_HORIZONS = (2,)
"""Horizons at which a router with the last reply's confidence in its state is trained too."""
SECTION = "sweeps"
"""Name of the marked block of docs/results.md this tool owns (``reports.write_marked_section``)."""


@dataclass(frozen=True, order=True)
class Setting:
    """One point of the grid: horizon L, cost weight α, whether the router may STOP, and whether
    it reads the last reply's confidence (``RouterConfig.uncertainty_state``)."""

    horizon: int
    allow_stop: bool
    alpha: float
    uncertainty: bool = False

    @property
    def name(self) -> str:
        """Run-dir name, e.g. ``L2-a0.005-stop`` or ``L2-a0.005-conf``."""
        return (
            f"L{self.horizon}-a{self.alpha:g}"
            + ("-stop" if self.allow_stop else "")
            + ("-conf" if self.uncertainty else "")
        )

    @property
    def family(self) -> str:
        """The α sweep this setting belongs to: ``L=2``, ``L=2 + STOP`` or ``L=2 + confidence``."""
        return (
            f"L={self.horizon}"
            + (" + STOP" if self.allow_stop else "")
            + (" + confidence" if self.uncertainty else "")
        )


def settings_grid(
    horizons: Sequence[int],
    alphas: Sequence[float],
    stop_horizons: Sequence[int],
    uncertainty_horizons: Sequence[int] = (),
) -> list[Setting]:
    """Every (L, α) without STOP, plus (L, α) with STOP for L in ``stop_horizons`` and with the
    confidence in the state for L in ``uncertainty_horizons`` (L ≥ 2 only for both: at L = 1 the
    only decision is the first, before any reply, so STOP is not allowed and there is no
    confidence to read: it would be a copy)."""
    grid = {Setting(h, False, float(a)) for h in horizons for a in alphas}
    grid |= {Setting(h, True, float(a)) for h in stop_horizons if h >= 2 for a in alphas}
    grid |= {Setting(h, False, float(a), True) for h in uncertainty_horizons if h >= 2 for a in alphas}
    return sorted(grid)


def setting_config(base: RouterConfig, setting: Setting) -> RouterConfig:
    """``base`` at this setting's L (``tree.with_horizon``: deeper stages reuse the last prompt),
    α and STOP."""
    deeper = with_horizon(base, setting.horizon)
    return deeper.model_copy(
        update={
            "alpha": setting.alpha,
            "allow_stop": setting.allow_stop,
            "uncertainty_state": setting.uncertainty,
        }
    )


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


def _summary(row: ev.StrategyRow) -> dict[str, Any]:
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


def _record_command(setting: Setting, config_path: Path | None, per_task: int) -> str:
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
    encoder: TextEncoder,
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
    hint = record_hint or (lambda s: _record_command(s, None, DEFAULT_PER_TASK))
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
        log(f"{setting.name}: training on {len(recorded_train)} train items …")
        began = time.perf_counter()
        cache = store if live else ReplayOnlyCache(store)
        env = build_env(config, recorded_train, pool, cached, reward=args.reward, cache=cache)
        metadata = {
            "alpha": setting.alpha,
            "horizon": setting.horizon,
            "allow_stop": setting.allow_stop,
            "uncertainty_state": setting.uncertainty,
            "sweep": setting.name,
            "train_items": len(recorded_train),
        }
        folder = run_dir / setting.name
        resume = _same_train_items(folder, recorded_train, log)
        fresh = make_policy(config, encoder, args)
        trained = train(env, fresh, args, folder, progress, resume=resume, metadata=metadata)
        seconds = time.perf_counter() - began
        policy = RouterPolicy.load(
            trained.policy_dir,
            pool=config.model_names,
            encoder=cached,  # the evaluation's states are read back from the store too
            horizon=setting.horizon,
            allow_stop=setting.allow_stop,
            uncertainty=setting.uncertainty,
        )
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
        results.append(_setting_result(setting, result, len(recorded_train), seconds, trained.run_dir))
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
            sweep=by_alpha,
        )
        aiq[family] = dict(swept.aiq)
        spans[family] = swept.aiq_cost_range
        singles[config.horizon] = [_summary(r) for r in swept.overall.rows if r.kind == "single"]
    return SweepResult(results, skipped, aiq, spans, singles, len(test_items), args.as_dict())


def _same_train_items(folder: Path, items: Sequence[Item], log: Callable[[str], None]) -> bool:
    """Record the train item ids in ``folder``; False (train from scratch) when they changed.

    Why: a PPO checkpoint only remembers its hyperparameters, and a sweep rerun after more of the
    tree was recorded trains on more items — resuming the old run would silently report a policy
    trained on the old items.
    """
    ids = [item.id for item in items]
    marker = folder / "train_items.json"
    same = not marker.is_file() or json.loads(marker.read_text()) == ids
    if not same:
        log(f"{folder.name}: the recorded train items changed since the last run; training from scratch")
    folder.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(ids) + "\n")
    return same


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


# ---------------------------------------------------------------------------------- report


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}f}"


def _ci(triple: tuple[float, float, float], digits: int = 4) -> str:
    mean, low, high = triple
    if not np.isfinite(mean):
        return "n/a"
    mark = " ≈" if low <= 0.0 <= high else ""
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]{mark}"


def _reading_lines(sweep: SweepResult) -> list[str]:
    """Facts needed to read the table that it does not show: how much α can move the reward on
    this pool, and how often the STOP routers actually stopped."""
    if not sweep.results:
        return []
    dearest = max(hi for _, hi in sweep.aiq_cost_range.values()) if sweep.aiq_cost_range else math.nan
    alphas = sorted({r.setting.alpha for r in sweep.results})
    lines = ["Reading the table:", ""]
    if math.isfinite(dearest):
        scale = ", ".join(f"α = {a:g}: ≤ {a * dearest:.4f}" for a in alphas)
        lines.append(
            f"- **Cost scale.** The dearest route costs {dearest:.4f} per query, so α·C can move the "
            f"reward by at most ({scale}); one query of {sweep.n_test} moves mean Q by "
            f"{1 / sweep.n_test:.4f}. Where α·C is far below that, cost cannot change a decision and "
            "every α trains the same router."
        )
    for r in sweep.results:
        if r.setting.allow_stop:
            early = sum(count for hops, count in r.lengths.items() if hops < r.setting.horizon)
            lines.append(
                f"- **{r.setting.name}** stopped before hop {r.setting.horizon} on {early} of {r.n_test} "
                f"test queries (mean hops {r.router['mean_hops']:.2f})."
            )
    return [*lines, ""]


def _paired_rows(sweep: SweepResult, feature: str) -> list[str]:
    """Per-query reward difference of each router with ``feature`` ("allow_stop" or "uncertainty")
    against the plain router at the same (L, α), with its paired bootstrap interval."""
    by_setting = {r.setting: r for r in sweep.results}
    lines: list[str] = []
    for setting, with_it in by_setting.items():
        if not getattr(setting, feature) or (setting.allow_stop and setting.uncertainty):
            continue
        without = by_setting.get(Setting(setting.horizon, False, setting.alpha))
        if without is None:
            continue
        diff = np.asarray(with_it.router_rewards) - np.asarray(without.router_rewards)
        delta = bootstrap_interval(diff, resamples=1000, seed=0)
        lines.append(
            f"| {setting.horizon} | {setting.alpha:g} | {_fmt(without.router['reward'], 4)} "
            f"| {_fmt(with_it.router['reward'], 4)} | {_ci((delta.mean, delta.low, delta.high))} "
            f"| {_fmt(without.router['task_metric'])} → {_fmt(with_it.router['task_metric'])} "
            f"| {_fmt(without.router['cost'], 4)} → {_fmt(with_it.router['cost'], 4)} "
            f"| {_fmt(with_it.router['mean_hops'], 2)} |"
        )
    return lines


def _stop_rows(sweep: SweepResult) -> list[str]:
    """Paired per-query comparison of each STOP router with the fixed-L router at the same (L, α)."""
    lines = _paired_rows(sweep, "allow_stop")
    if not lines:
        return []
    return [
        "### Early exit (STOP) against the fixed-L router",
        "",
        "Same L, same α, same test queries; Δ = reward with STOP − reward without, per query, with its "
        "paired 95% bootstrap interval (≈: contains 0).",
        "",
        "| L | α | reward, fixed L | reward, + STOP | Δ reward [95% CI] | task metric | mean cost | "
        "mean hops with STOP |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
    ]


def _uncertainty_rows(sweep: SweepResult) -> list[str]:
    """Paired comparison of each router that reads the last reply's confidence with the plain one."""
    lines = _paired_rows(sweep, "uncertainty")
    if not lines:
        return []
    return [
        "### Uncertainty in the state against the paper's state",
        "",
        "Same L, same α, same test queries, same PPO seed; the only difference is the router's input "
        "(`uncertainty_state`: + the last reply's mean token log-prob, mean entropy and a known flag). "
        "Δ = reward with the confidence − reward without, per query, with its paired 95% bootstrap "
        "interval (≈: contains 0).",
        "",
        "| L | α | reward, paper state | reward, + confidence | Δ reward [95% CI] | task metric "
        "| mean cost | mean hops |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines,
        "",
    ]


def markdown_section(sweep: SweepResult, command: str, plot: Path, report: Path) -> str:
    """The "## Sweeps" section: settings table, STOP comparison, AIQ table, plot, skipped settings."""
    args = sweep.args
    plot_link = Path(os.path.relpath(plot, report.parent)).as_posix()
    lines = [
        "## Sweeps",
        "",
        f"- **Command:** `{command}`",
        f"- **PPO:** {args['iterations']} iterations × {args['rollouts']} episodes, "
        f"{args['num_minibatches']} minibatches, {args['update_epochs']} epochs, lr "
        f"{args['learning_rate']:g}, seed {args['seed']} (paper defaults unless the command says "
        f"otherwise); reward metric: {args['reward']}; pure replay of the recorded outcome tree, trained "
        "on the train items whose whole tree of depth L is recorded.",
        f"- **Evaluation:** the {sweep.n_test} test queries, greedy routing; per setting its own baselines "
        "(best single = the best single-model row of that L and α; best fixed route chosen on the train "
        "items; oracle = best route of length 1..L per query). Δ: paired 95% bootstrap interval "
        "(1000 resamples); ≈ marks an interval that contains 0.",
        "",
        "| L | STOP | conf. | α | train items | task metric | Q | mean cost | reward Q − αC | mean hops "
        "| Δ reward vs best single [95% CI] | best single (reward) | best fixed route (reward) "
        "| oracle (reward) | gap recovered | routes taken (top 3) |",
        "|---:|:---:|:---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for r in sweep.results:
        s = r.setting
        top = ", ".join(f"`{route}` {count / r.n_test:.0%}" for route, count in list(r.routes.items())[:3])
        lines.append(
            f"| {s.horizon} | {'yes' if s.allow_stop else 'no'} | {'yes' if s.uncertainty else 'no'} "
            f"| {s.alpha:g} | {r.n_train} "
            f"| {_fmt(r.router['task_metric'])} | {_fmt(r.router['quality'])} | {_fmt(r.router['cost'], 4)} "
            f"| {_fmt(r.router['reward'], 4)} | {_fmt(r.router['mean_hops'], 2)} | {_ci(r.vs_best_single)} "
            f"| {r.best_single['name']} ({_fmt(r.best_single['reward'], 4)}) "
            f"| `{r.best_fixed['route']}` ({_fmt(r.best_fixed['reward'], 4)}) "
            f"| {_fmt(r.oracle['reward'], 4)} | {_fmt(r.gap[0])} | {top} |"
        )
    lines.append("")
    lines += _reading_lines(sweep)
    lines += _stop_rows(sweep)
    lines += _uncertainty_rows(sweep)
    if sweep.aiq:
        lines += [
            "### AIQ of each α sweep",
            "",
            "Area under the non-decreasing convex hull of (mean cost, mean Q) over the α values, divided by "
            "the cost range of that L's fixed routes (`training/statistics.py: aiq`); the oracle at the "
            "same α values and the fixed routes (every route of length 1..L, no router) on the same range.",
            "",
            "| family | HierRouter | oracle (same α) | fixed routes | cost range |",
            "|---|---:|---:|---:|---|",
        ]
        for family, values in sweep.aiq.items():
            lo, hi = sweep.aiq_cost_range[family]
            cells = [values.get(f"{ROUTER} (α sweep)"), values.get("oracle (same α values)")]
            cells.append(values.get("fixed routes (zero router)"))
            text = " | ".join("n/a" if v is None else f"{v:.4f}" for v in cells)
            lines.append(f"| {family} | {text} | [{lo:.4g}, {hi:.4g}] |")
        lines.append("")
    lines += [
        f"![cost vs task metric of every sweep setting]({plot_link})",
        "",
        f"`{plot.as_posix()}` — reproduce with the command above (it rewrites this section and the plot).",
        "",
    ]
    if sweep.skipped:
        lines += ["### Not run", ""]
        lines += [f"- {s.setting.name}: {s.reason}" for s in sweep.skipped]
        lines.append("")
    return "\n".join(lines)


def plot_pareto(sweep: SweepResult, path: Path) -> Path:
    """Mean cost (x) vs task metric (y): each family's α sweep as a line, the oracle at each α,
    and every single-model row (one call and L calls) as reference points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(9, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    families: dict[str, list[SettingResult]] = {}
    for result in sweep.results:
        families.setdefault(result.setting.family, []).append(result)
    for index, (family, results) in enumerate(sorted(families.items())):
        results = sorted(results, key=lambda r: r.setting.alpha)
        color = f"C{index}"
        xs, ys = [r.router["cost"] for r in results], [r.router["task_metric"] for r in results]
        axes.plot(xs, ys, "-o" if "STOP" not in family else "--D", color=color, label=f"HierRouter {family}")
        spots: dict[tuple[float, float], list[str]] = {}  # α values that landed on the same point
        for r in results:
            spot = (round(r.router["cost"], 9), round(r.router["task_metric"], 9))
            spots.setdefault(spot, []).append(f"{r.setting.alpha:g}")
        for (x, y), alphas in spots.items():
            label = "α=" + ", ".join(alphas)
            lift = 4 + 10 * index  # families that share a point keep their labels apart
            axes.annotate(
                label, (x, y), textcoords="offset points", xytext=(4, lift), fontsize=7, color=color
            )
        if "STOP" not in family:
            ox, oy = [r.oracle["cost"] for r in results], [r.oracle["task_metric"] for r in results]
            axes.plot(ox, oy, ":^", color=color, alpha=0.6, label=f"oracle {family} (same α)")
    seen: set[str] = set()
    for rows in sweep.singles.values():
        for row in rows:
            if row["name"] in seen:
                continue
            seen.add(row["name"])
            axes.scatter([row["cost"]], [row["task_metric"]], marker="s", color="grey", s=25)
            axes.annotate(
                row["name"],
                (row["cost"], row["task_metric"]),
                textcoords="offset points",
                xytext=(4, -9),
                fontsize=6,
                color="grey",
            )
    axes.set_xlabel("mean cost per query (base_rate · tokens)")
    axes.set_ylabel("task metric (test split)")
    axes.set_title(f"HierRouter sweeps: cost vs quality, test split (n = {sweep.n_test})")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path)
    return path


# ---------------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = PPOArgs()
    parser = argparse.ArgumentParser(
        description="Sweep horizon L, cost weight α and STOP; train + evaluate each."
    )
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--horizons", type=int, nargs="+", default=list(DEFAULT_HORIZONS))
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS))
    parser.add_argument(
        "--stop-horizons",
        type=int,
        nargs="*",
        default=list(DEFAULT_STOP_HORIZONS),
        help="also train a STOP router (allow_stop) at these horizons (none: no STOP settings)",
    )
    parser.add_argument(
        "--uncertainty-horizons",
        type=int,
        nargs="*",
        default=list(DEFAULT_UNCERTAINTY_HORIZONS),
        help="also train a router with the last reply's confidence in its state (uncertainty_state) "
        "at these horizons (none: no such settings)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/sweep"), help="one PPO run dir per setting"
    )
    parser.add_argument("--replay", type=Path, default=Path("runs/replay.sqlite"), help="replay store")
    parser.add_argument("--live", action="store_true", help="generate hops missing from the replay store")
    parser.add_argument("--reward", choices=("task", "f1"), default=defaults.reward)
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--rollouts", type=int, default=defaults.rollouts)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument("--per-task", type=int, default=DEFAULT_PER_TASK)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/sweep_pareto.png"))
    parser.add_argument("--no-report", action="store_true", help="print only (no docs written)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/sweep.py ...``: wire the default (or given) pool and run the grid."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    import torch

    from hierrouter_graph.defaults import default_config
    from hierrouter_graph.encoder import load_encoder
    from hierrouter_graph.graph import build_pool
    from training.datasets import build_routing_dataset

    if ns.threads is not None:
        torch.set_num_threads(ns.threads)
    base = RouterConfig.from_file(ns.config) if ns.config is not None else default_config()
    data = build_routing_dataset(ns.tasks, per_task=ns.per_task, seed=ns.data_seed)
    args = PPOArgs(iterations=ns.iterations, rollouts=ns.rollouts, seed=ns.seed, reward=ns.reward)
    grid = settings_grid(ns.horizons, ns.alphas, ns.stop_horizons, ns.uncertainty_horizons)
    encoder = load_encoder(base.encoder, base.max_seq_len, cache_dir=base.resolved_cache_dir)
    pool = build_pool(base)
    ns.replay.parent.mkdir(parents=True, exist_ok=True)
    with ReplayStore(ns.replay) as store:
        if ns.config is None:
            import_shipped_replay(store)  # the default pool's recorded outcome tree (L ≤ 2)
        sweep = run_sweep(
            base,
            pool,
            data.train,
            data.test,
            store,
            encoder,
            grid,
            args,
            ns.run_dir,
            live=ns.live,
            progress=not ns.no_progress,
            record_hint=lambda s: _record_command(s, ns.config, ns.per_task),
        )
    ns.run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "results": [r.as_dict() for r in sweep.results],
        "skipped": [{"setting": s.setting.name, "reason": s.reason} for s in sweep.skipped],
        "aiq": sweep.aiq,
        "args": sweep.args,
    }
    (ns.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    command = shlex.join(["python", "training/sweep.py", *args_list])
    if not ns.no_report and sweep.results:
        plot_pareto(sweep, ns.plot)
        body = markdown_section(sweep, command, ns.plot, ns.report)
        write_marked_section(ns.report, SECTION, body)
        print(f"report: {ns.report} (section '{SECTION}')  plot: {ns.plot}")
    for skipped in sweep.skipped:
        print(f"note: {skipped.setting.name} {skipped.reason}", file=sys.stderr)
    return 0 if sweep.results else 2


if __name__ == "__main__":
    raise SystemExit(main())
