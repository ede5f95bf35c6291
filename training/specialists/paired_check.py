"""Does a LoRA specialist beat the generalist on its own domain? A paired, reproducible check.

Why a script: keeping a specialist in the pool costs the router an action and the user memory, so
it stays only when it beats the generalist on its domain beyond the noise. Both models answer the
SAME routing-half items (never seen by the specialist) as the stage-0 hop, exactly as the pool
would: both members come from the pool's factory (``local.build_pool_member``; the specialist is
the generalist's spec plus ``adapter``), prompts from ``hop.build_hop_messages``, replies from the
member's own ``BatchGenerator`` (what ``run_hops`` uses: greedy, ``max_new_tokens`` of the spec,
128), fp32 on CPU. The task metric is ``training.tasks.metrics.score``
(MBPP: pass@1 in the sandbox; GSM8K/MATH: final-answer match).

Statistics: each model's mean with a 95% percentile bootstrap interval, the paired difference
(specialist − generalist) with a 95% interval from the SAME resampled items, and the exact
McNemar test on the discordant items. Decision rule: **keep** only when the difference's interval
lies entirely above 0.

Replies are appended to ``OUT/<model>.jsonl`` chunk by chunk, so a killed run resumes where it
stopped; ``OUT/summary.json`` holds the result.

    python training/specialists/specialist_eval.py --adapter runs/specialists/code     # routing test split
    python training/specialists/specialist_eval.py --adapter runs/specialists/code --items routing   # all
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import default_config
from hierrouter_graph.hop import build_hop_messages
from hierrouter_graph.members.local import build_pool_member
from hierrouter_graph.members.pool import PoolMember
from hierrouter_graph.model_spec import ModelSpec
from hierrouter_graph.sandbox import SandboxUnavailable
from training.evaluation.statistics import Interval, bootstrap_indices, bootstrap_interval
from training.specialists.card import CARD_NAME
from training.tasks.benchmarks import load_routing_items
from training.tasks.items import Item
from training.tasks.metrics import score
from training.tasks.routing_data import build_routing_dataset

__all__ = [
    "EVAL_TASKS",
    "ReplyLog",
    "eval_items",
    "evaluate_specialist",
    "main",
    "mcnemar_exact",
    "paired_comparison",
    "print_summary",
]

EVAL_TASKS: dict[str, tuple[str, ...]] = {"code": ("mbpp",), "math": ("gsm8k", "math")}
"""Routing benchmarks of each domain (HumanEval has no routing half: it is all specialization)."""


def eval_items(domain: str, which: str = "test", per_task: int = 100, seed: int = 42) -> list[Item]:
    """The domain's routing-half items: the router's test split (``test``) or all of them (``routing``)."""
    tasks = EVAL_TASKS[domain]
    if which == "test":
        items = [it for it in build_routing_dataset(tasks, per_task=per_task, seed=seed).test]
    elif which == "routing":
        items = [it for task in tasks for it in load_routing_items(task)]
    else:
        raise ValueError(f"items must be 'test' or 'routing', got {which!r}")
    return sorted(items, key=lambda it: it.id)


class ReplyLog:
    """Append-only JSONL of one model's scored replies: what a resumed run does not regenerate.

    Rows carry the member's fingerprint (which hashes the adapter's weights), so replies of an
    older adapter saved to the same folder are never counted for a retrained one.
    """

    def __init__(self, path: Path, fingerprint: str) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.rows: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    if row.get("fingerprint") == fingerprint:
                        self.rows[row["id"]] = row

    def add(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            for row in rows:
                stamped = {**row, "fingerprint": self.fingerprint}
                fh.write(json.dumps(stamped, ensure_ascii=False) + "\n")
                self.rows[str(row["id"])] = stamped


def _generate_all(
    member: PoolMember,
    instruction: str,
    items: Sequence[Item],
    log: ReplyLog,
    chunk: int,
    progress: bool,
) -> float:
    """Stage-0 replies for the items not yet in ``log``; returns the generation seconds."""
    generate = member.batch_generate
    if generate is None:
        raise TypeError(f"{member.name}: no batch generator; only local transformers members are supported")
    todo = [it for it in items if it.id not in log.rows]
    seconds = 0.0
    bar = tqdm(
        total=len(items), initial=len(items) - len(todo), desc=member.name, unit="item", disable=not progress
    )
    try:
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            messages = [build_hop_messages(member, instruction, it.prompt) for it in part]
            began = time.perf_counter()
            replies = generate(messages)
            elapsed = time.perf_counter() - began
            seconds += elapsed
            counter = member.counter
            rows = [
                {
                    "id": it.id,
                    "task": it.task,
                    "reply": reply,
                    "tokens_out": counter.count_text(reply) if counter is not None else None,
                    "score": score(it, reply),
                    "seconds": elapsed / len(part),
                }
                for it, reply in zip(part, replies, strict=True)
            ]
            log.add(rows)
            bar.update(len(part))
    finally:
        bar.close()
    return seconds


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: a sign test on the discordant pairs."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(
    generalist: Sequence[float], specialist: Sequence[float], *, resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Both means with 95% bootstrap intervals, and the paired difference on shared resamples."""
    a = np.asarray(generalist, dtype=np.float64)
    b = np.asarray(specialist, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError("paired comparison needs two non-empty score lists of equal length")
    index = bootstrap_indices(len(a), resamples, seed)
    diff = b - a
    boot = diff[index].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    difference = Interval(float(diff.mean()), float(low), float(high))
    wins, losses = int((b > a).sum()), int((b < a).sum())
    return {
        "n": int(a.size),
        "generalist": bootstrap_interval(a, resamples=resamples, seed=seed),
        "specialist": bootstrap_interval(b, resamples=resamples, seed=seed),
        "difference": difference,
        "specialist_wins": wins,
        "specialist_losses": losses,
        "mcnemar_p": mcnemar_exact(wins, losses),
        "keep": bool(difference.low > 0),
    }


def _interval_dict(interval: Interval) -> dict[str, float]:
    return {"mean": interval.mean, "low": interval.low, "high": interval.high}


def evaluate_specialist(
    adapter: Path,
    items: Sequence[Item],
    out: Path,
    *,
    config: RouterConfig | None = None,
    spec: ModelSpec | None = None,
    chunk: int = 16,
    progress: bool = True,
) -> dict[str, Any]:
    """Generalist and specialist, each built by the pool's own factory (``build_pool_member``).

    The specialist is the generalist's spec plus ``adapter``: ``adapters.py`` attaches the LoRA to
    the shared base and selects it per call, while the plain member keeps computing the base
    exactly — the same two members a pool holding both would have.
    """
    config = config or default_config()
    card = json.loads((adapter / CARD_NAME).read_text(encoding="utf-8"))
    spec = spec or config.spec(str(card["base"]["member"]))
    name = str(card["name"])
    special_spec = spec.model_copy(update={"name": name, "adapter": str(adapter)})
    members = {
        spec.name: build_pool_member(spec, config.resolved_cache_dir),
        name: build_pool_member(special_spec, config.resolved_cache_dir),
    }
    instruction = config.stage_prompt(0)
    logs = {model: ReplyLog(out / f"{model}.jsonl", member.fingerprint) for model, member in members.items()}
    seconds = {
        model: _generate_all(member, instruction, items, logs[model], chunk, progress)
        for model, member in members.items()
    }

    def scores(model: str, subset: Sequence[Item]) -> list[float]:
        return [float(logs[model].rows[it.id]["score"]) for it in subset]

    groups: dict[str, Sequence[Item]] = {"all": items}
    for task in sorted({it.task for it in items}):
        if len({it.task for it in items}) > 1:
            groups[task] = [it for it in items if it.task == task]
    results: dict[str, Any] = {}
    for group, subset in groups.items():
        comparison = paired_comparison(scores(spec.name, subset), scores(name, subset))
        results[group] = {
            k: _interval_dict(v) if isinstance(v, Interval) else v for k, v in comparison.items()
        }
        for model in (spec.name, name):
            tokens = [logs[model].rows[it.id]["tokens_out"] or 0 for it in subset]
            results[group][f"{'generalist' if model == spec.name else 'specialist'}_mean_tokens_out"] = float(
                np.mean(tokens)
            )
    summary = {
        "adapter": str(adapter),
        "domain": card["domain"],
        "generalist": spec.name,
        "specialist": name,
        "items": len(items),
        "item_ids": [it.id for it in items],
        "stage": 0,
        "max_new_tokens": spec.max_new_tokens,
        "generation_seconds_this_run": {k: round(v, 1) for k, v in seconds.items()},
        "results": results,
        "decision": "keep" if results["all"]["keep"] else "drop",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _fmt(row: Mapping[str, float]) -> str:
    return f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def print_summary(summary: Mapping[str, Any]) -> None:
    print(f"{summary['specialist']} vs {summary['generalist']}: stage-0 hop, {summary['items']} items")
    for group, row in summary["results"].items():
        print(
            f"  {group:6s} n={row['n']:4d}  generalist {_fmt(row['generalist'])}  "
            f"specialist {_fmt(row['specialist'])}  diff {_fmt(row['difference'])}  "
            f"wins/losses {row['specialist_wins']}/{row['specialist_losses']}  "
            f"McNemar p={row['mcnemar_p']:.3g}  tokens_out {row['generalist_mean_tokens_out']:.0f} -> "
            f"{row['specialist_mean_tokens_out']:.0f}"
        )
    print(f"decision: {summary['decision'].upper()} (keep only if the difference's 95% interval is above 0)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", type=Path, required=True, help="folder written by specialize.py")
    parser.add_argument("--items", choices=("test", "routing"), default="test")
    parser.add_argument("--per-task", type=int, default=100, help="routing dataset size (--items test)")
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=None, help="default: ADAPTER/eval-ITEMS")
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--chunk", type=int, default=16, help="items per generate call / log append")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    if ns.threads:
        import torch

        torch.set_num_threads(ns.threads)
    card = json.loads((ns.adapter / CARD_NAME).read_text(encoding="utf-8"))
    config = RouterConfig.from_file(ns.config) if ns.config else default_config()
    items = eval_items(str(card["domain"]), ns.items, ns.per_task, ns.data_seed)
    out = ns.out or ns.adapter / f"eval-{ns.items}"
    summary = evaluate_specialist(
        ns.adapter, items, out, config=config, chunk=ns.chunk, progress=not ns.no_progress
    )
    summary["command"] = "python training/specialists/specialist_eval.py " + shlex.join(
        sys.argv[1:] if argv is None else list(argv)
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_summary(summary)
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
