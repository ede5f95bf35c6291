"""The pool check as markdown: the route table (quality per task, cost), the best single member
against the task oracle with the gap's interval, the cost range, and the verdict.

Why apart from ``pool_check.py``: the check is measured there; this only formats a ``PoolCheck``.
"""

from __future__ import annotations

from training.evaluation.statistics import Interval
from training.experiments.pool_check import PoolCheck

__all__ = ["SECTION", "markdown"]

SECTION = "pool-check"
"""The marked section ``python training/pool_check.py --report`` writes."""


def _ci(value: Interval, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{value.mean:{sign}.3f} [{value.low:{sign}.3f}, {value.high:{sign}.3f}]"


def _verdict(ok: bool) -> str:
    return "passes" if ok else "**fails**"


def markdown(check: PoolCheck, command: str | None = None) -> str:
    """The check as a markdown block (``command``: the line that reproduces it, shown first)."""
    tasks = list(check.per_task)
    lines: list[str] = []
    if command:
        lines += ["```", command, "```", ""]
    counts = ", ".join(f"{task} {n}" for task, n in check.per_task.items())
    lines += [
        f"Train items whose tree to horizon {check.horizon} is recorded: **{check.items}** of "
        f"{check.items_requested} ({counts}); reward R = Q − α·C at α = {check.alpha:g}, "
        f"quality = {check.reward_metric} metric.",
        "",
        "| route | " + " | ".join(tasks) + " | all | mean cost |",
        "|---|" + "---:|" * (len(tasks) + 2),
    ]
    for row in check.routes:
        cells = " | ".join(f"{row.quality[task]:.3f}" for task in tasks)
        lines.append(f"| {row.route} | {cells} | {row.overall_quality:.3f} | {row.overall_cost:.4f} |")
    routes = ", ".join(f"{task}: {route}" for task, route in check.task_routes.items())
    costs = ", ".join(f"{name} {cost:.4f}" for name, cost in check.member_costs.items())
    gain_ok = check.gain.mean >= check.min_gain
    range_ok = check.cost_range >= check.min_cost_range
    lines += [
        "",
        f"- best single member: {check.best_single}, reward {_ci(check.best_single_reward)}",
        f"- task oracle (hindsight; {routes}): reward {_ci(check.task_oracle_reward)}",
        f"- **gain of the task oracle over the best single: {_ci(check.gain, signed=True)}** "
        f"(criterion ≥ {check.min_gain:g}: {_verdict(gain_ok)})",
        f"- per-task routing chosen leave-one-out (each item scored by the routes chosen on the others): "
        f"reward {_ci(check.loo_task_reward)}; **gain over the best single chosen the same way: "
        f"{_ci(check.loo_gain, signed=True)}**",
        f"- per-query oracle (ceiling): reward {_ci(check.oracle_reward)}",
        f"- mean cost of one call: {costs}; cost range {check.cost_range:.1f}× "
        f"(criterion ≥ {check.min_cost_range:g}×: {_verdict(range_ok)})",
        "",
        f"Verdict: the pool {_verdict(check.passes)} the complementarity check "
        "(in-sample: necessary, not sufficient, for a router that generalizes).",
    ]
    return "\n".join(lines) + "\n"
