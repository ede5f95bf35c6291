"""The learning curve's report: the marked "learning-curve" section of docs/results.md, the console
table, the PNG (test reward vs training items, 95% intervals as bars).

Why apart from ``learning_curve.py``: the curve is measured there; everything here only formats a
``LearningCurve`` (read back from ``learning_curve.json`` just as well), so a column or a plot
change never touches the measurement.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.evaluation.statistics import Interval
from training.experiments.learning_curve import BEST_SINGLE, HIERROUTER, STRATEGIES, LearningCurve

__all__ = ["SECTION", "markdown_section", "plot_learning_curve", "print_curve"]

SECTION = "learning-curve"
"""The marked section of docs/results.md ``python training/learning_curve.py`` owns."""


def _ci(value: Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    mark = " ≈" if signed and value.contains(0.0) and value.high > value.low else ""
    return f"{value.mean:{sign}.4f} [{value.low:{sign}.4f}, {value.high:{sign}.4f}]{mark}"


def _spread(seed_rewards: tuple[float, ...]) -> str:
    if len(seed_rewards) < 2:
        return ""
    std = float(np.std(seed_rewards, ddof=1))
    return f"; seeds sd {std:.4f}, range {min(seed_rewards):.4f}–{max(seed_rewards):.4f}"


def _table(curve: LearningCurve) -> list[str]:
    lines = [
        "| n train | strategy | reward Q − αC [95% CI] | Δ vs best single [95% CI] | task metric "
        "| mean cost |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for size in curve.sizes:
        for name in STRATEGIES:
            try:
                row = curve.row(size, name)
            except KeyError:
                continue
            shown = f"**{name}**" if name == HIERROUTER else name
            delta = "—" if name == BEST_SINGLE else _ci(row.delta, signed=True)
            lines.append(
                f"| {size} | {shown} | {_ci(row.reward)} | {delta} | {row.task_metric:.3f} | {row.cost:.4f} |"
            )
    return lines


def _routes(curve: LearningCurve) -> list[str]:
    lines = []
    for size in curve.sizes:
        for row in curve.rows:
            if row.size == size:
                lines.append(f"- n = {size}, {row.strategy}: {row.routes}{_spread(row.seed_rewards)}")
    return lines


def markdown_section(curve: LearningCurve, command: str, plot: Path, report: Path) -> str:
    """The section's markdown: what was measured, the command, the table, the routes, the plot."""
    plot_ref = os.path.relpath(plot, report.parent)
    draws = curve.settings.draws
    lines = [
        "## Learning curve",
        "",
        "Command:",
        "",
        f"    {command}",
        "",
        f"Every strategy fitted on nested, task-stratified subsets of the {curve.n_train} train items whose "
        f"whole tree is recorded (subset({curve.sizes[0]}) ⊂ … ⊂ subset({curve.sizes[-1]}); "
        f"{draws} draw{'s' if draws > 1 else ''} from seed {curve.settings.subset_seed}, rows are the "
        f"per-query mean over draws), then scored on all {curve.n_test} test items at α = {curve.alpha:g}. "
        "HierRouter: PPO on the subset only, the per-query mean over the PPO seeds "
        f"({', '.join(map(str, curve.seeds)) or 'none: no HierRouter row'}). "
        "kNN/MLP: fitted on the subset's tree (k chosen on held-out subset items). Per-task routing: on "
        "each task, the single member or fixed route best on that task's subset items. Best fixed route "
        "and best single: chosen on the subset. Δ = paired difference with the best single chosen on the "
        f"same subset, 95% percentile bootstrap over test items ({curve.settings.resamples} resamples, "
        "`training/evaluation/statistics.py`); ≈ = the interval contains 0.",
        "",
        *_table(curve),
        "",
        *(f"Note: {note}" for note in curve.notes),
        *([""] if curve.notes else []),
        "Routes taken (fixed ones by label, learned ones: the most taken and its share):",
        "",
        *_routes(curve),
        "",
        f"![test reward vs training items]({plot_ref})",
        "",
        f"`{plot}` — reproduce with the command above (it rewrites this section, the plot and "
        "`learning_curve.json` under `--out-dir`).",
    ]
    return "\n".join(lines)


def print_curve(curve: LearningCurve) -> None:
    """The console view: the table with intervals."""
    print(f"\nLearning curve at α = {curve.alpha:g} ({curve.n_test} test items):")
    for line in _table(curve):
        print(line)
    for note in curve.notes:
        print(f"note: {note}")


def plot_learning_curve(curve: LearningCurve, path: str | Path) -> Path:
    """Test reward (y) vs training items (x, log scale): a line per strategy, 95% intervals as bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8.0, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    offsets = np.linspace(-0.04, 0.04, len(STRATEGIES))  # side by side, so the bars stay apart
    for name, offset, marker in zip(STRATEGIES, offsets, "*oDs^v", strict=True):
        rows = [row for row in curve.rows if row.strategy == name]
        if not rows:
            continue
        xs = np.array([row.size for row in rows], dtype=float) * np.exp(offset)
        ys = np.array([row.reward.mean for row in rows])
        errors = np.array(
            [
                [row.reward.mean - row.reward.low for row in rows],
                [row.reward.high - row.reward.mean for row in rows],
            ]
        )
        axes.errorbar(
            xs, ys, yerr=errors, marker=marker, capsize=3, lw=1.3, ms=8 if marker == "*" else 5, label=name
        )
    axes.set_xscale("log")
    axes.set_xticks(list(curve.sizes), [str(n) for n in curve.sizes])
    axes.minorticks_off()
    axes.set_xlabel("training items (nested, task-stratified subsets)")
    axes.set_ylabel(f"test reward Q − αC (α = {curve.alpha:g})")
    axes.set_title(f"Learning curve, test split (n = {curve.n_test}), 95% paired bootstrap intervals")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(target)
    return target
