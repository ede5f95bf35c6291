"""The curves' report: the marked "curves" section of docs/results.md, the console view, the PNG.

Why apart from ``training/experiments/curve_study.py``: the study is measured there; everything here only
formats a ``CurveStudy`` (AIQ table with intervals and the paired difference with the zero router,
the per-seed AIQ, the APGR / CPT(50%) table, the points of every curve and the cost–quality plot
with the zero router's hull), so a new family or column is added in one place.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from training.evaluation.curves import Curve
from training.evaluation.statistics import Interval, quality_curve
from training.experiments.curve_study import CONDITIONED_FAMILY, CurveStudy

__all__ = ["markdown_section", "plot_curves", "print_study"]


def _ci(value: Interval, digits: int = 4, signed: bool = False) -> str:
    sign = "+" if signed else ""
    mark = " ≈" if signed and value.contains(0.0) else ""
    return (
        f"{value.mean:{sign}.{digits}f} [{value.low:{sign}.{digits}f}, {value.high:{sign}.{digits}f}]{mark}"
    )


def _num(value: float, digits: int = 3, percent: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "never"
    return f"{value:.0%}" if percent else f"{value:.{digits}f}"


def _span(study: CurveStudy) -> tuple[float, float]:
    points = study.zero.points()
    return min(c for c, _ in points), max(c for c, _ in points)


def _aiq_table(study: CurveStudy) -> list[str]:
    lines = [
        "| family | AIQ [95% CI] | Δ AIQ vs zero router [95% CI] | points (α grid) |",
        "|---|---:|---:|---:|",
    ]
    families = [study.zero, *study.curves]
    for curve in families:
        result = study.aiq[curve.family]
        delta = "—" if curve is study.zero else _ci(result.vs_zero, signed=True)
        name = f"**{curve.family}**" if curve.family.startswith("HierRouter") else curve.family
        lines.append(f"| {name} | {_ci(result.aiq)} | {delta} | {len(curve.labels)} |")
    return lines


def _seed_lines(study: CurveStudy) -> list[str]:
    if not study.seed_aiq:
        return []
    values = list(study.seed_aiq.values())
    spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    each = ", ".join(f"seed {seed}: {value:.4f}" for seed, value in study.seed_aiq.items())
    return [
        f"- HierRouter AIQ per PPO seed (one PPO run per α and seed): {each}; mean {np.mean(values):.4f}, "
        f"standard deviation {spread:.4f}, range {min(values):.4f}–{max(values):.4f}.",
    ]


def _routellm_table(study: CurveStudy) -> list[str]:
    """One row per (table, family) where the pair spans a trade-off; one line per table where the
    cheapest member is also the best (nothing to recover: every family is n/a there)."""
    lines = [
        "| table | weak (cheapest member) | strong (best member) | family | APGR | CPT(50%) |",
        "|---|---|---|---|---:|---:|",
    ]
    degenerate: dict[str, str] = {}
    for row in study.routellm:
        if row.weak == row.strong:
            degenerate[row.group] = row.weak
            continue
        lines.append(
            f"| {row.group} | `{row.weak}` | `{row.strong}` | {row.family} | {_num(row.apgr)} "
            f"| {_num(row.cpt, percent=True)} |"
        )
    if degenerate:
        same = ", ".join(f"{group} (`{member}`)" for group, member in degenerate.items())
        lines += ["", f"n/a (the cheapest member is also the best, no trade-off to recover): {same}."]
    return lines


def _points_lines(curve: Curve) -> str:
    points = ", ".join(
        f"{label}: ({c:.4f}, {q:.3f})" for label, (c, q) in zip(curve.labels, curve.points(), strict=True)
    )
    return f"- *{curve.family}* (mean cost, mean Q): {points}"


def _conditioned_note(study: CurveStudy) -> list[str]:
    """The set-up line of the α-conditioned family, when the study trained one."""
    if not any(c.family.startswith(CONDITIONED_FAMILY) for c in study.curves):
        return []
    positive = [a for a in study.alphas if a > 0]
    return [
        f"- **{CONDITIONED_FAMILY}:** ONE PPO run per seed with `alpha_range` = [{min(positive):g}, "
        f"{max(positive):g}] (α drawn log-uniformly per episode, log α a state input), asked at every α "
        "of the grid without retraining (α = 0 at the range's lower end); its iterations: the command's "
        "`--conditioned-iterations` (default: the per-α family's total, iterations × grid points)."
    ]


def markdown_section(study: CurveStudy, command: str, plot: Path, report: Path) -> str:
    """The "curves" block: set-up, AIQ per family, seeds, APGR/CPT, the points, the plot."""
    lo, hi = _span(study)
    ppo = study.info.get("ppo", {})
    plot_ref = os.path.relpath(plot, report.parent)
    lines = [
        "## Cost–quality curves: AIQ per router family",
        "",
        f"- **Command:** `{command}`",
        f"- **Grid:** α ∈ {{{', '.join(f'{a:g}' for a in study.alphas)}}}; test split n = {study.n_test}, "
        f"trained / fitted on the {study.n_train} train items whose tree is recorded.",
        f"- **HierRouter:** one PPO run per α (and per seed): lr {ppo.get('learning_rate', 'n/a')}, "
        f"{ppo.get('iterations', 'n/a')} iterations × {ppo.get('rollouts', 'n/a')} episodes (the shipped "
        "policy's, chosen by training/tune.py), greedy on test. With several seeds its curve is the "
        "per-query mean over seeds at each α (the expected curve of one seed).",
        *_conditioned_note(study),
        "- **kNN / MLP routers:** fitted once on the train tree (Q and C of every route of length 1..L from "
        "the query's frozen embedding), asked at each α; the kNN's k re-chosen per α on held-out train "
        "items. **Best fixed route:** chosen on train at each α. **Oracle:** per query, in hindsight.",
        f"- **AIQ** (RouterBench): area under the non-decreasing upper convex hull of (mean cost, mean Q) "
        f"divided by the cost range, over the fixed routes' range [{lo:.4g}, {hi:.4g}] (a curve is 0 below "
        "its cheapest point). **Zero router**: the hull of every fixed route (length 1..L), no learning. "
        "Intervals: 95% percentile bootstrap over test queries (1000 resamples, paired across families, "
        "the range recomputed per resample); ≈: the Δ interval contains 0.",
        "",
        *_aiq_table(study),
        "",
        *_seed_lines(study),
        "",
        "### RouteLLM's framing: APGR and CPT(50%)",
        "",
        "Between the cheapest one-call member (weak) and the member route of best mean Q (strong) on that "
        "table's queries: x = (C − C_weak)/(C_strong − C_weak) (for a two-model router: the share of calls "
        "to the strong one), PGR = (Q − Q_weak)/(Q_strong − Q_weak). APGR = mean of the family's curve "
        "(non-decreasing hull, PGR 0 left of its cheapest point) over x ∈ [0, 1]: randomising between weak "
        "and strong gets 0.5. CPT(50%) = the least x at which the curve recovers half the gap (0% when it "
        "does at the weak member's cost; never = not on the grid). n/a: the cheapest member is also the best "
        "(no trade-off to recover). Definitions: `training/evaluation/statistics.py` (`apgr`, `cpt`).",
        "",
        *_routellm_table(study),
        "",
        "### The points",
        "",
        *(_points_lines(curve) for curve in study.curves),
        "",
        f"![cost vs quality of every router family]({plot_ref})",
        "",
        f"`{plot}` — reproduce with the command above (it rewrites this section and the plot).",
    ]
    return "\n".join(lines)


def print_study(study: CurveStudy) -> None:
    """The console view: AIQ per family and the overall APGR / CPT."""
    width = max(len(c.family) for c in [study.zero, *study.curves]) + 2
    print(f"\nAIQ over the fixed routes' cost range (n = {study.n_test}):")
    for curve in [study.zero, *study.curves]:
        result = study.aiq[curve.family]
        print(f"  {curve.family:<{width}}{_ci(result.aiq)}   Δ vs zero {_ci(result.vs_zero, signed=True)}")
    for line in _seed_lines(study):
        print(line)
    print("\nAPGR / CPT(50%) (overall):")
    for row in study.routellm:
        if row.group == "overall":
            print(f"  {row.family:<{width}}APGR {_num(row.apgr)}  CPT(50%) {_num(row.cpt, percent=True)}")


def plot_curves(study: CurveStudy, path: str | Path) -> Path:
    """Mean cost (x) vs mean Q (y): each family's points and non-decreasing hull; the zero router's
    fixed routes and shaded hull beneath."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8.5, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    zero_points = study.zero.points()
    hull = quality_curve(zero_points)
    right = max(c for c, _ in zero_points)
    xs, ys = [x for x, _ in hull] + [right], [y for _, y in hull] + [hull[-1][1]]
    axes.fill_between(xs, 0, ys, color="grey", alpha=0.15, label=f"{study.zero.family} hull")
    axes.scatter([x for x, _ in zero_points], [y for _, y in zero_points], color="grey", s=14, marker="s")
    for label, (x, y) in zip(study.zero.labels, zero_points, strict=True):
        axes.annotate(label, (x, y), fontsize=5, color="grey", xytext=(3, -6), textcoords="offset points")
    markers = ["*", "o", "D", "s", "^", "v"]
    for curve, marker in zip(study.curves, markers * 4, strict=False):
        points = curve.points()
        line = quality_curve(points)
        drawn = axes.plot([x for x, _ in line], [y for _, y in line], "-", lw=1.3, label=curve.family)
        size = 40 if marker == "*" else 18
        xy = ([x for x, _ in points], [y for _, y in points])
        axes.scatter(*xy, marker=marker, s=size, color=drawn[0].get_color())
    axes.set_xlabel("mean cost per query (base_rate · tokens)")
    axes.set_ylabel("mean quality Q (task metric)")
    axes.set_title(
        f"Cost vs quality over α ∈ [{min(study.alphas):g}, {max(study.alphas):g}], "
        f"test split (n = {study.n_test})"
    )
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(target)
    return target
