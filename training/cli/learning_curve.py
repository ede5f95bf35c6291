"""``python training/learning_curve.py``: HierRouter, kNN, MLP, per-task routing, the best fixed
route and the best single member fitted on nested, task-stratified subsets of the recorded train
items (``--sizes``), each scored on the test split at one α with paired 95% intervals.

Writes ``--out-dir/learning_curve.json`` (and the PPO runs under ``--out-dir/runs``), the marked
"learning-curve" section of ``--report`` and the ``--plot`` PNG. PPO's arguments start from
``--args-from`` (default: the shipped policy, what training/tune.py chose for the default pool);
PPOArgs flags given beside it win.

    python training/learning_curve.py --seeds 42 43 44 45 46 --threads 1 --no-progress
    python training/learning_curve.py --sizes 24 48 --seeds 42 --draws 3 --no-report
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import add_data_flags, add_router_flags, load_run_context
from training.cli.flags import PPO_FLAG_ALIASES, add_dataclass_flags, dataclass_from_flags
from training.experiments.learning_curve import (
    DEFAULT_SIZES,
    LearningCurveSettings,
    run_learning_curve,
)
from training.replay.store import StateEncoder
from training.rl.args import PPOArgs

__all__ = ["JSON_NAME", "main", "parse_args"]

JSON_NAME = "learning_curve.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags: router and data (shared), sizes and seeds, ``LearningCurveSettings``'s fields,
    ``PPOArgs``'s fields (defaults: the ``--args-from`` policy's), the outputs."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--args-from", type=Path, default=Path(DEFAULT_POLICY_DIR))
    args_from = early.parse_known_args(argv)[0].args_from
    base = dataclasses.replace(PPOArgs.from_policy(args_from), device=PPOArgs.device)
    parser = argparse.ArgumentParser(description="Learning curve: every router against the best single.")
    add_router_flags(parser)
    add_data_flags(parser, items_help="JSONL of TEST items instead of the benchmarks")
    parser.add_argument("--train-items", type=Path, default=None, help="JSONL train items (with --items)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="train items per point"
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[42, 43, 44, 45, 46], help="PPO seeds")
    add_dataclass_flags(parser.add_argument_group("the curve (LearningCurveSettings)"), LearningCurveSettings)
    parser.add_argument(
        "--args-from",
        type=Path,
        default=Path(DEFAULT_POLICY_DIR),
        metavar="POLICY_DIR",
        help="PPO arguments of a saved policy (its policy.json; default: the shipped policy's)",
    )
    parser.set_defaults(ppo_base=base)
    add_dataclass_flags(
        parser.add_argument_group("PPO of every HierRouter run (PPOArgs; the seeds are --seeds)"),
        PPOArgs,
        base,
        exclude=("seed", "reward"),  # --reward is the router flags'
        aliases=PPO_FLAG_ALIASES,
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("runs/learning_curve"),
        help=f"{JSON_NAME} and the PPO runs (runs/n<N>-draw<D>/seed<S>/)",
    )
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/learning_curve.png"))
    parser.add_argument("--no-report", action="store_true", help="print and write the JSON only")
    return parser.parse_args(argv)


def main(
    argv: Sequence[str] | None = None,
    *,
    chat_models: Mapping[str, Any] | None = None,
    encoder: StateEncoder | None = None,
) -> int:
    """Run the curve, print it, write the JSON, the section and the PNG (``chat_models`` and
    ``encoder``: a test's own)."""
    from training.evaluation.reports import write_marked_section
    from training.experiments.learning_curve_report import (
        SECTION,
        markdown_section,
        plot_learning_curve,
        print_curve,
    )

    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    context = load_run_context(
        ns, split="evaluation", require_replay=True, chat_models=chat_models, encoder=encoder
    )
    ppo = dataclass_from_flags(ns, PPOArgs, ns.ppo_base)
    settings = dataclass_from_flags(ns, LearningCurveSettings)
    began = time.perf_counter()
    ns.replay.parent.mkdir(parents=True, exist_ok=True)
    with context.open_store() as store:
        curve = run_learning_curve(
            context.config, context.pool, context.train, context.test, store, context.encoder(),
            sizes=ns.sizes, seeds=ns.seeds, args=ppo, settings=settings, run_dir=ns.out_dir / "runs",
            progress=not ns.no_progress,
        )  # fmt: skip
    command = shlex.join(["python", "training/learning_curve.py", *args_list])
    curve.info = {
        "command": command,
        "ppo": ppo.as_dict(),
        "args_from": str(ns.args_from),
        "wall_seconds": time.perf_counter() - began,
    }
    print_curve(curve)
    written = curve.write(ns.out_dir / JSON_NAME)
    print(f"curve: {written}")
    if not ns.no_report:
        plot_learning_curve(curve, ns.plot)
        write_marked_section(ns.report, SECTION, markdown_section(curve, command, ns.plot, ns.report))
        print(f"report: {ns.report} (section '{SECTION}')  plot: {ns.plot}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
