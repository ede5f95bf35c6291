"""``python training/pool_check.py``: is a pool worth routing? The hindsight task oracle against the
best single member on the recorded TRAIN items (never test), the cost range, and the verdict.

Reads the replay store only (nothing is generated, no weights are loaded); ``--horizon 1`` checks a
pool on its stage-0 replies alone, before the rest of its tree is recorded.

    python training/pool_check.py --config configs/skills-pool.yaml --horizon 1
    python training/pool_check.py --config configs/skills-pool.yaml --replay runs/skills-replay.sqlite
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierrouter_graph.cli_errors import run_cli
from training.cli.context import add_data_flags, add_router_flags, load_run_context
from training.experiments.pool_check import MIN_COST_RANGE, MIN_GAIN, check_pool
from training.replay.readers import ReplayMissError

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Complementarity check of a pool on recorded train items.")
    add_router_flags(parser)
    add_data_flags(
        parser, items_help="JSONL of train/specialization items instead of the benchmarks' train split"
    )
    parser.add_argument("--alpha", type=float, default=None, help="α of R = Q − α·C (default: the config's)")
    parser.add_argument("--min-gain", type=float, default=MIN_GAIN, help="least task-oracle gain to pass")
    parser.add_argument(
        "--min-cost-range",
        type=float,
        default=MIN_COST_RANGE,
        help="least cost ratio to pass",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=None, help="also write the check as JSON here")
    parser.add_argument("--report", type=Path, default=None, help="also write it as a marked section here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, chat_models: Mapping[str, Any] | None = None) -> int:
    """Check the pool, print the markdown, write ``--out`` / ``--report``; exit 0 (1 when it fails
    the check, so a script can stop before recording more)."""
    from training.evaluation.reports import write_marked_section
    from training.experiments.pool_check_report import SECTION, markdown

    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    if ns.live:
        raise ValueError("--live: the pool check reads recorded replies only; record with training/record.py")
    context = load_run_context(ns, split="train", require_replay=True, chat_models=chat_models)
    with context.open_store() as store:
        check = check_pool(
            context.config, context.pool, context.train, store, alpha=ns.alpha,
            reward_metric=ns.reward, min_gain=ns.min_gain, min_cost_range=ns.min_cost_range,
            resamples=ns.resamples,
        )  # fmt: skip
    command = shlex.join(["python", "training/pool_check.py", *args_list])
    text = markdown(check, command)
    print(text, end="")
    if ns.out is not None:
        ns.out.parent.mkdir(parents=True, exist_ok=True)
        ns.out.write_text(json.dumps({**check.as_dict(), "command": command}, indent=2) + "\n")
    if ns.report is not None:
        write_marked_section(ns.report, SECTION, text)
    return 0 if check.passes else 1


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(ReplayMissError, ValueError))


if __name__ == "__main__":
    raise SystemExit(cli())
