"""Reply budgets from measurement: how long each candidate member's replies are, per task, and how
often they hit the budget — on specialization (or router-train) items only, never test items.

Why: a reply cut at ``max_new_tokens`` scores 0, and on the earlier pool a third of the 1.5B's
stage-0 replies were cut at 320 tokens (issue 26). A budget and a stage prompt are chosen here,
from the measured distribution of tokens out (p50/p90/p99), the share of replies that hit the
budget, accuracy (``training/metrics.score``, the reward's metric) and mean cost (δ of the hop,
execution price included). Each candidate answers stage ``--stage`` of the config's prompts on
each item, through the hop itself (``run_hops``: batched, priced as in the graph).

    python training/budgets.py --config training/budget-candidates.yaml --per-task 20 --out runs/budgets.json

A program member's tokens out are the tokens it generated (not the output the sandbox added), so
its "hit the budget" share is about its own text, like every member's.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.hop import applied_budget, run_hops
from hierrouter_graph.members.build import build_pool
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.sandbox import SandboxUnavailable
from training.tasks.benchmarks import load_specialization_items
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK, Item
from training.tasks.metrics import score
from training.tasks.routing_data import build_routing_dataset

__all__ = ["BudgetRow", "budget_items", "main", "measure_budgets", "percentile"]

ITEM_SOURCES = ("specialization", "train")


@dataclass(frozen=True)
class BudgetRow:
    """One candidate on one task: its reply lengths, budget hits, accuracy and cost."""

    member: str
    task: str
    items: int
    budget: int | None
    """The reply budget its hops ran with (stage cap or its own max_new_tokens); None: unknown."""
    p50_tokens_out: float
    p90_tokens_out: float
    p99_tokens_out: float
    capped: int
    """Replies whose tokens out reached the budget (cut, most likely mid-answer)."""
    capped_share: float
    accuracy: float
    mean_cost: float


def percentile(values: Sequence[int], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order statistics (numpy's default)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def budget_items(
    tasks: Sequence[str], per_task: int, source: str = "specialization", seed: int = 42
) -> dict[str, list[Item]]:
    """``per_task`` items of each task, never from the router's test split.

    ``specialization``: a seeded sample of the specialization half (what pool members may be
    tuned on). ``train``: the first items of the router's train split (``build_routing_dataset``
    at ``seed`` with the shipped per-task size), the ones the router learns from.
    """
    if per_task <= 0:
        raise ValueError(f"per_task must be positive, got {per_task}")
    if source == "specialization":
        chosen = {}
        for task in tasks:
            pool = sorted(load_specialization_items(task), key=lambda item: item.id)
            chosen[task] = random.Random(f"{seed}:budgets:{task}").sample(pool, min(per_task, len(pool)))
        return chosen
    if source == "train":
        train = build_routing_dataset(tasks, per_task=DEFAULT_PER_TASK, seed=seed).train
        return {task: [item for item in train if item.task == task][:per_task] for task in tasks}
    raise ValueError(f"source must be one of {ITEM_SOURCES}, got {source!r}")


def _row(
    member: PoolMember,
    task: str,
    budget: int | None,
    tokens: list[int],
    scores: list[float],
    costs: list[float],
) -> BudgetRow:
    capped = sum(budget is not None and count >= budget for count in tokens)
    return BudgetRow(
        member=member.name,
        task=task,
        items=len(tokens),
        budget=budget,
        p50_tokens_out=percentile(tokens, 50),
        p90_tokens_out=percentile(tokens, 90),
        p99_tokens_out=percentile(tokens, 99),
        capped=capped,
        capped_share=capped / len(tokens),
        accuracy=sum(scores) / len(scores),
        mean_cost=sum(costs) / len(costs),
    )


def measure_budgets(
    config: RouterConfig,
    pool: Mapping[str, PoolMember],
    items: Mapping[str, Sequence[Item]],
    *,
    stage: int = 0,
    batch_size: int = 8,
    on_row: Callable[[list[BudgetRow]], None] | None = None,
) -> list[BudgetRow]:
    """Each member of ``pool`` answers stage ``stage`` on every item once; one row per member and task.

    ``on_row`` gets the rows so far after each one (the CLI rewrites its ``--out`` file then, so a
    run stopped after an hour keeps an hour of measurements).
    """
    instruction, cap = config.stage_prompt(stage), config.stage_token_cap(stage)
    rows = []
    for member in pool.values():
        budget = applied_budget(member, cap) or member.max_new_tokens
        for task, task_items in items.items():
            if not task_items:
                continue
            hops = []
            for start in range(0, len(task_items), batch_size):
                chunk = task_items[start : start + batch_size]
                hops += run_hops(member, [item.prompt for item in chunk], instruction, None, cap)
            scores = [score(item, hop.reply) for item, hop in zip(task_items, hops, strict=True)]
            tokens = [hop.tokens_out for hop in hops]
            rows.append(_row(member, task, budget, tokens, scores, [hop.cost for hop in hops]))
            print(markdown_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            if on_row is not None:
                on_row(rows)
    return rows


def markdown_table(rows: Sequence[BudgetRow]) -> str:
    lines = [
        "| member | task | n | budget | tokens out p50 / p90 / p99 | hit budget | accuracy | mean cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.member} | {r.task} | {r.items} | {r.budget if r.budget is not None else '–'} | "
            f"{r.p50_tokens_out:.0f} / {r.p90_tokens_out:.0f} / {r.p99_tokens_out:.0f} | "
            f"{r.capped} ({r.capped_share:.0%}) | {r.accuracy:.3f} | {r.mean_cost:.4f} |"
        )
    return "\n".join(lines)


def _write_json(path: Path, data: object) -> None:
    """Atomically (temp file + rename): a killed run never leaves half a JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, suffix=".tmp", delete=False, encoding="utf-8"
    ) as tmp:
        json.dump(data, tmp, indent=2)
        tmp.write("\n")
    os.replace(tmp.name, path)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="router YAML/JSON listing the candidates")
    parser.add_argument("--members", nargs="+", default=None, help="candidates to measure (default: all)")
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument("--per-task", type=int, default=20)
    parser.add_argument("--items", choices=ITEM_SOURCES, default="specialization")
    parser.add_argument("--stage", type=int, default=0, help="whose stage prompt and stage budget (0-based)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="write the rows and settings as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    if ns.per_task <= 0:
        parser().error(f"--per-task: expected a positive number of items, got {ns.per_task}")
    config = RouterConfig.from_file(ns.config)
    members = ns.members or config.model_names
    unknown = sorted(set(members) - set(config.model_names))
    if unknown:
        parser().error(f"--members: {unknown} are not in {ns.config} (its members: {config.model_names})")
    if not 0 <= ns.stage < config.horizon:
        raise ValueError(
            f"--stage: expected 0..{config.horizon - 1} (the config's horizon is {config.horizon})"
        )
    chosen = config.model_copy(update={"models": [config.spec(name) for name in members]})
    items = budget_items(ns.tasks, ns.per_task, ns.items, ns.seed)
    pool = build_pool(chosen)
    settings = {key: value for key, value in vars(ns).items() if key not in ("config", "out")}

    def save(rows: list[BudgetRow]) -> None:
        if ns.out is not None:
            data = {"config": str(ns.config), "settings": settings, "rows": [asdict(row) for row in rows]}
            _write_json(ns.out, data)

    rows = measure_budgets(chosen, pool, items, stage=ns.stage, batch_size=ns.batch_size, on_row=save)
    print(markdown_table(rows))
    if ns.out is not None:
        print(f"wrote {ns.out}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
