"""``python training/tune.py``: choose PPO's lr and length on held-out train items, print the winner.

python training/tune.py                                  # lr {1e-4, 3e-4, 1e-3} × iterations {8, 32, 96}
python training/tune.py --lrs 3e-4 1e-3 --iterations 16 --val-share 0.3 --seeds 42 43
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import training.experiments.tune as tuning
from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import add_horizon_flag, load_run_context
from training.evaluation.reports import write_marked_section
from training.experiments.tune import DEFAULT_ITERATIONS, DEFAULT_LRS, SECTION, markdown_section, tune
from training.replay.tree import complete_items

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(tuning.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    add_horizon_flag(parser)
    parser.add_argument("--items", type=Path, default=None, help="a JSONL dataset instead of the benchmarks")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(DEFAULT_LRS))
    parser.add_argument("--iterations", type=int, nargs="+", default=list(DEFAULT_ITERATIONS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[42], help="PPO seeds per grid point (averaged)"
    )
    parser.add_argument(
        "--val-share", type=float, default=0.25, help="share of each task's train items held out"
    )
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out draw")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/tune"))
    parser.add_argument("--replay", type=Path, default=Path("runs/replay.sqlite"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--report", type=Path, default=None, help=f"write the '{SECTION}' section of this markdown file"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    context = load_run_context(ns)  # the train items of the benchmarks (or all of --items)
    config, pool = context.config, context.pool
    with context.open_store() as store:
        recorded = complete_items(config, pool, context.train, store)
        result = tune(
            config,
            pool,
            recorded,
            store,
            context.encoder(),
            ns.run_dir,
            lrs=ns.lrs,
            iterations=ns.iterations,
            seeds=ns.seeds,
            val_share=ns.val_share,
            split_seed=ns.split_seed,
        )
    best = result.best
    own = (
        (["--config", str(ns.config)] if ns.config else [])
        + (["--horizon", str(ns.horizon)] if ns.horizon is not None else [])
        + (["--items", str(ns.items)] if ns.items else [])
    )
    command = [
        "python",
        "training/ppo.py",
        *own,
        "--lr",
        f"{best.learning_rate:g}",
        "--iterations",
        str(best.iterations),
    ]
    tune_command = shlex.join(["python", "training/tune.py", *(sys.argv[1:] if argv is None else argv)])
    summary = {
        "command": tune_command,
        "fit_items": result.fit_items,
        "val_items": result.val_items,
        "best_fixed_route": result.best_fixed_route,
        "best_fixed_val_reward": result.best_fixed_val_reward,
        "per_task_val_reward": result.per_task_val_reward,
        "grid": [asdict(point) for point in result.grid],
        "chosen": asdict(best),
        "train_command": shlex.join(command),
    }
    if ns.report is not None:
        body = markdown_section(result, tune_command, shlex.join(command), shipped=ns.config is None)
        write_marked_section(ns.report, SECTION, body)
        print(f"report: {ns.report} (section '{SECTION}')")
    ns.run_dir.mkdir(parents=True, exist_ok=True)
    (ns.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(
        f"chosen: lr {best.learning_rate:g}, {best.iterations} iterations "
        f"(validation reward {best.val_reward:.4f})"
    )
    print(f"train it on every train item: {shlex.join(command)}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
