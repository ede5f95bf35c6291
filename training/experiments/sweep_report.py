"""The sweep's report: the marked "Sweeps" section of docs/results.md and the Pareto plot.

Why apart from ``sweep.py``: the grid is trained and evaluated there; everything here only formats
a ``SweepResult`` — the settings table, the paired STOP / confidence comparisons and the AIQ of every
α sweep — so a new family or column is added in one place.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from training.evaluation.statistics import bootstrap_interval
from training.evaluation.strategies import ROUTER
from training.experiments.settings import Setting
from training.experiments.sweep import SettingResult, SweepResult

__all__ = ["markdown_section", "plot_pareto"]


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
            "Area under the non-decreasing convex hull of (mean cost, mean Q) over the α values, divided "
            "by the cost range of that L's fixed routes (`training/evaluation/statistics.py: aiq`); the "
            "oracle at the same α values and the fixed routes (every route of length 1..L, no router) "
            "on the same range.",
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
