"""``python training/sweep.py``: train and evaluate the L × α (× STOP, × confidence) grid, write the
"Sweeps" section of docs/results.md, the Pareto plot and ``run_dir/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import load_run_context
from training.cli.flags import PPO_FLAG_ALIASES, add_dataclass_flags, dataclass_from_flags
from training.evaluation.reports import write_marked_section
from training.experiments.settings import settings_grid
from training.experiments.sweep import (
    DEFAULT_ALPHAS,
    DEFAULT_HORIZONS,
    DEFAULT_STOP_HORIZONS,
    DEFAULT_UNCERTAINTY_HORIZONS,
    SECTION,
    record_command,
    run_sweep,
)
from training.experiments.sweep_report import markdown_section, plot_pareto
from training.rl.args import PPOArgs
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sweep horizon L, cost weight α and STOP; train + evaluate each."
    )
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--horizons", type=int, nargs="+", default=list(DEFAULT_HORIZONS))
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS))
    parser.add_argument(
        "--stop-horizons",
        type=int,
        nargs="*",
        default=list(DEFAULT_STOP_HORIZONS),
        help="also train a STOP router (allow_stop) at these horizons (none: no STOP settings)",
    )
    parser.add_argument(
        "--uncertainty-horizons",
        type=int,
        nargs="*",
        default=list(DEFAULT_UNCERTAINTY_HORIZONS),
        help="also train a router with the last reply's confidence in its state (uncertainty_state) "
        "at these horizons (none: no such settings)",
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/sweep"), help="one PPO run dir per setting"
    )
    parser.add_argument("--replay", type=Path, default=Path("runs/replay.sqlite"), help="replay store")
    parser.add_argument("--live", action="store_true", help="generate hops missing from the replay store")
    add_dataclass_flags(
        parser.add_argument_group("PPO of every setting (PPOArgs)"), PPOArgs, aliases=PPO_FLAG_ALIASES
    )
    parser.add_argument("--tasks", nargs="+", default=list(ALL_TASKS), choices=ALL_TASKS)
    parser.add_argument("--per-task", type=int, default=DEFAULT_PER_TASK)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/sweep_pareto.png"))
    parser.add_argument("--no-report", action="store_true", help="print only (no docs written)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/sweep.py ...``: wire the default (or given) pool and run the grid."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    context = load_run_context(ns, split="evaluation")
    args = dataclass_from_flags(ns, PPOArgs)
    grid = settings_grid(ns.horizons, ns.alphas, ns.stop_horizons, ns.uncertainty_horizons)
    encoder = context.encoder()
    ns.replay.parent.mkdir(parents=True, exist_ok=True)
    with context.open_store() as store:  # the default pool: seeded with its recorded tree (L ≤ 2)
        sweep = run_sweep(
            context.config,
            context.pool,
            context.train,
            context.test,
            store,
            encoder,
            grid,
            args,
            ns.run_dir,
            live=ns.live,
            progress=not ns.no_progress,
            record_hint=lambda s: record_command(s, ns.config, ns.per_task),
        )
    ns.run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "results": [r.as_dict() for r in sweep.results],
        "skipped": [{"setting": s.setting.name, "reason": s.reason} for s in sweep.skipped],
        "aiq": sweep.aiq,
        "args": sweep.args,
    }
    (ns.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    command = shlex.join(["python", "training/sweep.py", *args_list])
    if not ns.no_report and sweep.results:
        plot_pareto(sweep, ns.plot)
        body = markdown_section(sweep, command, ns.plot, ns.report)
        write_marked_section(ns.report, SECTION, body)
        print(f"report: {ns.report} (section '{SECTION}')  plot: {ns.plot}")
    for skipped in sweep.skipped:
        print(f"note: {skipped.setting.name} {skipped.reason}", file=sys.stderr)
    return 0 if sweep.results else 2


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
