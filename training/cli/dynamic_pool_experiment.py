"""``python training/dynamic_pool_experiment.py``: hold a member out of a DescriptorPolicy, add it back.

python training/dynamic_pool_experiment.py --report docs/results.md
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import load_run_context
from training.cli.flags import PPO_FLAG_ALIASES, add_dataclass_flags, dataclass_from_flags
from training.evaluation.reports import write_marked_section
from training.experiments.dynamic_pool import DEFAULT_HOLD_OUT, SECTION, copy_store, run_experiment
from training.experiments.dynamic_pool_report import dynamic_pool_report
from training.replay.store import ReplayStore
from training.rl.args import PPOArgs
from training.tasks.items import ALL_TASKS, DEFAULT_PER_TASK

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hold a member out of a DescriptorPolicy, add it back.")
    parser.add_argument("--hold-out", default=DEFAULT_HOLD_OUT, help="member trained without, then added")
    parser.add_argument(
        "--replay",
        type=Path,
        default=Path("runs/replay.sqlite"),
        help="recorded store to COPY (never written); missing: the shipped tree only",
    )
    parser.add_argument("--run-dir", type=Path, default=Path("runs/dynamic_pool"), help="PPO run dirs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    add_dataclass_flags(
        parser.add_argument_group("PPO of every run (PPOArgs; seeds: --seeds; kinds: the experiment's)"),
        PPOArgs,
        exclude=("seed", "policy_kind"),
        aliases=PPO_FLAG_ALIASES,
    )
    parser.add_argument("--per-task", type=int, default=DEFAULT_PER_TASK)
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--report", type=Path, default=None, help="write the section into this markdown")
    parser.set_defaults(config=None, tasks=list(ALL_TASKS))  # the default pool on every benchmark
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    command = shlex.join(["python", "training/dynamic_pool_experiment.py", *args_list])
    context = load_run_context(ns, split="evaluation")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dynamic-pool-") as tmp:
        copy_path = Path(tmp) / "replay.sqlite"  # runs/replay.sqlite is never written (a recording may be)
        if ns.replay.is_file():
            copy_store(ns.replay, copy_path)
            notes.append(f"Replay: a backup-API copy of `{ns.replay}` plus the shipped tree.")
        elif context.shipped is not None:
            notes.append(f"Replay: the shipped tree (`training/data/{context.shipped.replay.name}`) only.")
        with ReplayStore(copy_path) as store:
            if context.shipped is not None:
                context.shipped.import_into(store)
            result = run_experiment(
                ns.hold_out,
                context.pool,
                context.train,
                context.data_info,
                context.test,
                store,
                context.encoder(),
                ns.run_dir,
                seeds=ns.seeds,
                base=dataclass_from_flags(ns, PPOArgs),
                notes=notes,
            )
    text = dynamic_pool_report(result, context.test, ns.hold_out, ns.seeds, command, ns.resamples)
    print(text)
    if ns.report is not None:
        section = SECTION if ns.hold_out == DEFAULT_HOLD_OUT else f"{SECTION}-{ns.hold_out}"
        write_marked_section(ns.report, section, text)
        print(f"section '{section}' written to {ns.report}", file=sys.stderr)
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
