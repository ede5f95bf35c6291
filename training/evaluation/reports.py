"""Reports: the markdown tables of docs/results.md, the console table, the plots, marked sections.

Why a module of its own: docs/results.md is written by several tools — the evaluation's tables
(``write_report``), and one marked ``<!-- name:begin --> … <!-- name:end -->`` block each for the
sweep, the tuner and the dynamic-pool experiment (``write_marked_section``) — and each must keep
the others' blocks. Everything here formats an ``EvaluationResult``; nothing computes a number.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import TextIO

from training.evaluation.evaluate import OVERALL, EvaluationResult
from training.evaluation.strategies import ROUTER
from training.evaluation.tables import GroupResult, StrategyRow
from training.replay.tree import route_label

__all__ = ["NO_SWEEP", "plot_cost_quality", "print_table", "write_marked_section", "write_report"]

NO_SWEEP = "n/a (no α sweep)"

_TABLE_HEADER = (
    "| strategy | route | task metric | token-F1 | mean cost | reward Q − αC | gap recovered "
    "| Δ reward vs best single |"
)
_TABLE_RULE = "|---|---|---:|---:|---:|---:|---:|---:|"
_REWARD_METRICS = {"task": "task (Q = the item's own metric)", "f1": "f1 (Q = token-F1, the paper's)"}


def _ordered_groups(results: EvaluationResult) -> list[GroupResult]:
    """Overall first, then the tasks."""
    return [results.overall, *(g for name, g in results.groups.items() if name != OVERALL)]


def _delta_cell(row: StrategyRow) -> str:
    if row.vs_best_single is None:
        return "— (best single)"
    return row.vs_best_single.format(4) + (" ≈ inside the noise" if row.inside_noise else "")


def _router_sentence(group: GroupResult) -> list[str]:
    try:
        row = group.row(ROUTER)
    except KeyError:
        return []
    shares = ", ".join(f"`{route}` {count / group.n:.0%}" for route, count in group.router_routes.items())
    delta = row.vs_best_single
    verdict = (
        "is the best single"
        if delta is None
        else (
            f"minus best single (reward): {delta.format(4)} — "
            + (
                "inside the noise (the paired 95% interval contains 0)"
                if row.inside_noise
                else "outside the noise"
            )
        )
    )
    lengths = ", ".join(
        f"{hops} hop{'s' if hops != 1 else ''} {count / group.n:.0%}"
        for hops, count in group.router_lengths.items()
    )
    return [f"{ROUTER} {verdict}. Routes taken: {shares}. Route lengths: {lengths}."]


def _learned_sentences(group: GroupResult) -> list[str]:
    """Routes taken by each learned baseline (the router's are in ``_router_sentence``)."""
    lines = []
    for row in group.rows:
        if row.kind != "learned" or row.name not in group.routes_taken:
            continue
        shares = ", ".join(
            f"`{route}` {count / group.n:.0%}"
            for route, count in list(group.routes_taken[row.name].items())[:4]
        )
        more = len(group.routes_taken[row.name]) - 4
        lines.append(f"{row.name}: routes taken {shares}" + (f" (+{more} more)." if more > 0 else "."))
    return lines


def _pair_lines(results: EvaluationResult) -> list[str]:
    """The learned routers against each other (overall, paired over queries)."""
    if not results.router_pairs:
        return []
    lines = [
        "### Learned routers against each other (overall)",
        "",
        "| A − B | Δ reward [95% CI] |",
        "|---|---:|",
    ]
    for (a, b), delta in results.router_pairs.items():
        lines.append(f"| {a} − {b} | {delta.format(4)}{' ≈' if delta.contains(0.0) else ''} |")
    return [*lines, "", "≈: the paired interval (over test queries, not seeds) contains 0.", ""]


def _seed_lines(results: EvaluationResult) -> list[str]:
    """Each PPO seed's overall result and the spread, beside the effect it is read against."""
    if not results.seed_runs:
        return []
    from training.evaluation.seeds import seed_spread

    std, low, high = seed_spread(results.seed_runs)
    lines = [
        "### PPO seeds (overall)",
        "",
        "| seed | task metric | mean cost | reward Q − αC | Δ reward vs best single | most taken route |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for run in results.seed_runs:
        lines.append(
            f"| {run.seed} | {run.task_metric:.3f} | {run.cost:.4f} | {run.reward:.4f} "
            f"| {run.vs_best_single:+.4f} | `{run.top_route}` |"
        )
    lines += [
        "",
        f"Seed spread of the mean test reward: standard deviation {std:.4f}, range {low:.4f}–{high:.4f} "
        f"({high - low:.4f} wide) over {len(results.seed_runs)} seeds; the per-query mean of the seeds is "
        'the "mean of N seeds" row above (its interval is over queries, not seeds).',
        "",
    ]
    return lines


def _markdown_table(group: GroupResult) -> list[str]:
    title = "Overall" if group.name == OVERALL else f"Task `{group.name}`"
    lines = [f"## {title} (n = {group.n})", "", _TABLE_HEADER, _TABLE_RULE]
    for row in group.rows:
        name = f"**{row.name}**" if row.kind in ("router", "router_seeds", "oracle") else row.name
        cells = [
            name,
            f"`{row.description}`" if "→" in row.description or row.kind == "single" else row.description,
            row.task_metric.format(),
            row.f1.format(),
            row.cost.format(4),
            row.reward.format(4),
            row.gap.format(),
            _delta_cell(row),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Best single on this table: {group.best_single}.", *_router_sentence(group)]
    lines += [*_learned_sentences(group), ""]
    return lines


def _aiq_lines(results: EvaluationResult) -> list[str]:
    lo, hi = results.aiq_cost_range
    values = "; ".join(f"{name}: {NO_SWEEP if v is None else f'{v:.4f}'}" for name, v in results.aiq.items())
    elsewhere = "; every family's curve and AIQ, with intervals: `training/curves.py`"
    lines = [
        f"- **AIQ** (quality = Q; over the fixed routes' cost range [{lo:.4g}, {hi:.4g}], a family's curve "
        f"being 0 below its cheapest point): {values}" + ("" if results.alpha_points else elsewhere)
    ]
    for point in results.alpha_points:
        lines.append(
            f"  - α = {point.alpha:g}: mean cost {point.cost:.4f}, Q {point.quality:.4f}, "
            f"task metric {point.task_metric:.4f}"
        )
    return lines


def _header_lines(results: EvaluationResult, command: str, seed: int) -> list[str]:
    per_task = ", ".join(f"{t} {a}/{b}" for t, (a, b) in results.counts.items())
    pool = ", ".join(f"`{name}` {rate:g}" for name, rate in results.pool.items())
    route = f"`{route_label(results.best_fixed_route)}`"
    chosen = (
        f"{route}, chosen on the train split (n = {results.n_train}) by mean reward, evaluated on test"
        if results.best_fixed_source == "train"
        else f"{route}, chosen on TEST with hindsight (no train outcome tree): an optimistic baseline"
    )
    data = json.dumps(results.data_info, default=str, sort_keys=True) if results.data_info else "library call"
    return [
        "# HierRouter evaluation (test split)",
        "",
        f"- **Command:** `{command}`",
        f"- **Seed:** {seed} (bootstrap: {results.resamples} paired resamples of the queries, 95% percentile "
        "intervals, shown as `mean [low, high]`)",
        f"- **Data:** {results.n_test} test queries, {results.n_train} train queries; per task "
        f"(train/test): {per_task}. Source: `{data}`",
        f"- **Pool** (action order, base rate per token): {pool}",
        f"- **α** = {results.alpha:g} · **L** = {results.horizon} · **reward metric:** "
        f"{_REWARD_METRICS.get(results.reward_metric, results.reward_metric)}",
        f"- **Best fixed route:** {chosen}",
        *_aiq_lines(results),
        *(f"- Note: {note}" for note in results.notes),
        "",
        "Definitions: *single* = one model alone, one call (stage-0 prompt, its own cost) or L hops of "
        "itself; *random* = exact mean over all M^L routes; *per-task routing (train)* = each task's best "
        "route on the train tree, taken by that task's queries (routing by a known task label); "
        "*kNN router (k=…)* / *MLP router* = learned "
        "single-hop baselines: from the query's frozen embedding, one route of length 1..L per query, "
        "fitted on the train tree only at this α (k chosen on held-out train items); *task oracle* = "
        "each task's best fixed route in hindsight; *oracle* = each query's best route among all routes "
        "of length 1..L (the ceiling); *gap recovered* = (S − best single)/(oracle − best single) on "
        "mean reward, n/a when the oracle does no better than the best single; *best single* = the "
        "single-model row with the best mean reward on that table. ≈ marks a difference with the best "
        "single whose paired interval contains 0. See `training/evaluation/strategies.py` for the exact "
        "construction.",
        "",
    ]


_MARKED = re.compile(r"<!-- (?P<name>[a-z0-9_-]+):begin -->\n.*?<!-- (?P=name):end -->\n?", re.DOTALL)


def _marked_sections(text: str) -> list[str]:
    """Every ``<!-- name:begin --> … <!-- name:end -->`` block of a report, in order."""
    return [match.group(0).rstrip("\n") + "\n" for match in _MARKED.finditer(text)]


def write_marked_section(path: str | Path, name: str, body: str) -> Path:
    """Put ``body`` between ``<!-- name:begin -->`` and ``<!-- name:end -->`` in ``path``.

    Why markers: docs/results.md is written by several tools (this evaluation, the sweep); each
    owns one marked block and replaces only that one, so rerunning one never clobbers the other.
    An existing block is replaced in place; otherwise the block is appended.
    """
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name must be lowercase letters, digits, '-' or '_', got {name!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    block = f"<!-- {name}:begin -->\n{body.strip()}\n<!-- {name}:end -->\n"
    text = target.read_text(encoding="utf-8") if target.is_file() else ""
    pattern = re.compile(
        rf"<!-- {re.escape(name)}:begin -->\n.*?<!-- {re.escape(name)}:end -->\n?", re.DOTALL
    )
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text, count=1)
    else:
        text = (text.rstrip("\n") + "\n\n" if text.strip() else "") + block
    target.write_text(text, encoding="utf-8")
    return target


def write_report(
    results: EvaluationResult,
    path: str | Path = "docs/results.md",
    command: str | None = None,
    seed: int | None = None,
) -> Path:
    """Markdown: the reproduction line, the setup, then one table per task and overall.

    Marked sections other tools keep in the same file (``write_marked_section``, e.g. the sweep's)
    are carried over after the tables.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    kept = _marked_sections(target.read_text(encoding="utf-8")) if target.is_file() else []
    lines = _header_lines(
        results,
        command or "(library call: training.evaluation.evaluate.evaluate)",
        results.seed if seed is None else seed,
    )
    for group in _ordered_groups(results):
        lines += _markdown_table(group)
        if group.name == OVERALL:
            lines += _seed_lines(results) + _pair_lines(results)
    text = "\n".join(lines).rstrip() + "\n"
    target.write_text(text + "".join(f"\n{section}" for section in kept), encoding="utf-8")
    return target


def print_table(results: EvaluationResult, file: TextIO | None = None) -> None:
    """A compact console view: ``mean±h`` (h = the larger side of the 95% interval), then the
    notes (e.g. how many test items an incomplete record was evaluated on)."""
    out = file or sys.stdout
    width = max(len(row.name) for row in results.overall.rows) + 2
    for group in _ordered_groups(results):
        print(f"\n{group.name} (n={group.n}; best single: {group.best_single})", file=out)
        print(f"  {'strategy':<{width}}{'task':>13}{'F1':>13}{'cost':>17}{'reward':>17}{'gap':>16}", file=out)
        for row in group.rows:
            mark = " ≈" if row.inside_noise else ""
            print(
                f"  {row.name:<{width}}{row.task_metric.compact():>13}{row.f1.compact():>13}"
                f"{row.cost.compact(4):>17}{row.reward.compact(4):>17}{row.gap.compact(2):>16}{mark}",
                file=out,
            )
        if group.router_lengths:
            lengths = ", ".join(f"{hops}: {count}" for hops, count in group.router_lengths.items())
            print(f"  {ROUTER} route lengths (hops: queries): {lengths}", file=out)
    aiq_text = ", ".join(f"{k}: {NO_SWEEP if v is None else f'{v:.4f}'}" for k, v in results.aiq.items())
    print(f"\nAIQ: {aiq_text}", file=out)
    for note in results.notes:
        print(f"note: {note}", file=out)


def plot_cost_quality(results: EvaluationResult, path: str | Path = "docs/cost_quality.png") -> Path:
    """Overall mean cost (x) vs task metric (y), one labelled point per strategy (+ the α sweep)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(8, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    markers = {
        "router": "*", "router_seeds": "P", "learned": "D", "oracle": "^", "task_oracle": "^", "random": "x",
        "per_task": "v",
        "fixed": "s",
    }  # fmt: skip
    labels: dict[tuple[float, float], list[str]] = {}  # strategies on the same spot share one label
    for row in results.overall.rows:
        marker = markers.get(row.kind, "o")
        axes.scatter([row.cost.mean], [row.task_metric.mean], marker=marker, s=90 if marker == "*" else 40)
        labels.setdefault((round(row.cost.mean, 12), round(row.task_metric.mean, 12)), []).append(row.name)
    for (x, y), names in labels.items():
        axes.annotate(" = ".join(names), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if results.alpha_points:
        axes.plot(
            [p.cost for p in results.alpha_points],
            [p.task_metric for p in results.alpha_points],
            "--",
            color="grey",
            label=f"{ROUTER} α sweep",
        )
        axes.legend(fontsize=8)
    axes.set_xlabel("mean cost per query (base_rate · tokens)")
    axes.set_ylabel("task metric")
    axes.set_title(
        f"Cost vs quality, test split (n = {results.n_test}, α = {results.alpha:g}, L = {results.horizon})"
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(target)
    return target
