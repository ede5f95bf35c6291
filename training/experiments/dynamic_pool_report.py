"""The dynamic-pool experiment's markdown section: strategies, paired differences, seeds, routes.

Why apart from ``training/dynamic_pool_experiment.py``: the experiment produces per-seed, per-query
outcomes; this module only turns them into the tables of docs/results.md (section "dynamic-pool").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.evaluation.statistics import Interval, bootstrap_interval
from training.experiments.dynamic_pool import DEFAULT_HOLD_OUT, MC_TASKS, ExperimentResult
from training.replay.tree import route_label
from training.tasks.items import Item

__all__ = ["dynamic_pool_report"]


def _cell(interval: Interval, digits: int = 3) -> str:
    return interval.format(digits)


def _subset(values: np.ndarray, mask: np.ndarray) -> str:
    return f"{float(values[mask].mean()):.3f}" if mask.any() else "n/a"


def dynamic_pool_report(
    result: ExperimentResult,
    items: Sequence[Item],
    hold_out: str,
    seeds: Sequence[int],
    command: str,
    resamples: int,
) -> str:
    """The markdown section of one run of the experiment (``hold_out`` held out, ``seeds``)."""
    outcomes, context_rows = result.outcomes, result.context_rows
    comparisons, notes = result.comparisons, result.notes
    mc = np.array([item.task in MC_TASKS for item in items])
    header = (
        "| strategy | task metric | mean cost | reward Q − αC | routes using "
        f"`{hold_out}` | task metric, MC tasks | task metric, other tasks |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    lines = [
        "## Dynamic pool" if hold_out == DEFAULT_HOLD_OUT else f"### Dynamic pool, holding out `{hold_out}`",
        "",
        f"- **Command:** `{command}`",
        f"- **What:** `DescriptorPolicy` (hierrouter_graph/policy/dynamic.py) trained without `{hold_out}`, "
        "then given the full pool with the same weights; compared with retraining from scratch. Test split "
        f"of the default pool (n = {len(items)}), replayed from a copy of the recorded store.",
        f"- **Seeds:** {', '.join(map(str, seeds))} (PPO, paper defaults). Cells: the per-query mean over "
        f"seeds, averaged over queries, with a 95% paired bootstrap interval over queries ({resamples} "
        "resamples, seed 0); the interval covers query sampling, not seed-to-seed variation — see the "
        "per-seed table.",
        *(f"- {note}" for note in notes),
        "",
        header,
        rule,
    ]

    def row(name: str, reward: np.ndarray, metric: np.ndarray, cost: np.ndarray, using: float) -> str:
        cells = [
            name,
            _cell(bootstrap_interval(metric, resamples=resamples)),
            _cell(bootstrap_interval(cost, resamples=resamples), 4),
            _cell(bootstrap_interval(reward, resamples=resamples), 4),
            f"{using:.0%}",
            _subset(metric, mc),
            _subset(metric, ~mc),
        ]
        return "| " + " | ".join(cells) + " |"

    for outcome in outcomes:
        using = float(np.mean([[hold_out in r for r in routes] for routes in outcome.routes]))
        lines.append(
            row(
                f"**{outcome.name}**",
                outcome.mean("reward"),
                outcome.mean("task_metric"),
                outcome.mean("cost"),
                using,
            )
        )
    for name, scores, routes in context_rows:
        using = float(np.mean([hold_out in r for r in routes]))
        lines.append(row(name, scores.reward, scores.task_metric, scores.cost, using))

    by_name = {o.name: o for o in outcomes}
    lines += ["", "Paired differences (seed-averaged per query; 95% bootstrap interval over queries):", ""]
    lines += ["| comparison | Δ reward | Δ task metric |", "|---|---:|---:|"]
    for label, a, b in comparisons:
        reward = by_name[a].mean("reward") - by_name[b].mean("reward")
        metric = by_name[a].mean("task_metric") - by_name[b].mean("task_metric")
        verdict = lambda i: _cell(i, 4) + (" ≈ 0" if i.contains(0.0) else "")  # noqa: E731
        lines.append(
            f"| {label} | {verdict(bootstrap_interval(reward, resamples=resamples))} | "
            f"{verdict(bootstrap_interval(metric, resamples=resamples))} |"
        )

    lines += ["", "Per seed (mean reward on test · share of routes using the held-out member):", ""]
    lines += ["| strategy | " + " | ".join(f"seed {s}" for s in seeds) + " |"]
    lines += ["|---|" + "---:|" * len(seeds)]
    for outcome in outcomes:
        cells = [
            f"{float(s.reward.mean()):.4f} · {np.mean([hold_out in r for r in routes]):.0%}"
            for s, routes in zip(outcome.scores, outcome.routes, strict=True)
        ]
        lines.append(f"| {outcome.name} | " + " | ".join(cells) + " |")
    lines.append("")
    for outcome in outcomes:
        counts: dict[str, int] = {}
        for routes in outcome.routes:
            for route in routes:
                counts[route_label(route)] = counts.get(route_label(route), 0) + 1
        total = sum(counts.values())
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
        shares = ", ".join(f"`{label}` {count / total:.0%}" for label, count in top)
        lines.append(f"- Routes of *{outcome.name}* (all seeds): {shares}.")
    return "\n".join(lines) + "\n"
