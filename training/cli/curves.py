"""``python training/curves.py``: every router family's cost–quality curve over an α grid on the
test split, AIQ per family with bootstrap intervals, RouteLLM's APGR / CPT(50%), one PNG.

HierRouter needs a policy per α (and per seed): each is one PPO run through ``settings.train_setting``
in ``--run-dir/seed<S>/L<L>-a<α>`` (a finished run is only loaded again, so a rerun is cheap). The
kNN and MLP routers are fitted once on the train tree and asked at every α; the oracle and the best
fixed route (chosen on train) are read off the trees. Writes the marked "curves" section of
``--report`` and the ``--plot`` PNG.

    python training/curves.py --seeds 42 43 44 45 46 --threads 1 --no-progress
    python training/curves.py --no-router             # baselines only (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import add_data_flags, add_router_flags, load_run_context
from training.cli.flags import PPO_FLAG_ALIASES, add_dataclass_flags, dataclass_from_flags
from training.experiments.curve_study import DEFAULT_CURVE_ALPHAS, run_study
from training.rl.args import PPOArgs

__all__ = ["SECTION", "main", "parse_args"]

SECTION = "curves"
"""The marked section of docs/results.md this command writes."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Cost–quality curves and AIQ of every router family.")
    add_router_flags(parser)
    add_data_flags(parser, items_help="JSONL of TEST items instead of the benchmarks")
    parser.add_argument("--train-items", type=Path, default=None, help="JSONL train items (with --items)")
    parser.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_CURVE_ALPHAS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="PPO seeds of HierRouter's curve")
    parser.add_argument(
        "--extra-seeds",
        type=int,
        nargs="*",
        default=[],
        help="PPO seeds trained at the config's α only (for evaluate.py --seed-run-dirs)",
    )
    parser.add_argument(
        "--conditioned-seeds",
        type=int,
        nargs="*",
        default=[],
        help="PPO seeds of ONE α-conditioned policy each (alpha_range = the grid's positive ends)",
    )
    parser.add_argument(
        "--conditioned-iterations",
        type=int,
        default=None,
        help="its PPO iterations (default: --iterations × grid points, the per-α family's total)",
    )
    parser.add_argument("--no-router", action="store_true", help="baselines only: train no PPO policy")
    shipped = PPOArgs.from_policy(DEFAULT_POLICY_DIR)  # what training/tune.py chose for the default pool
    add_dataclass_flags(
        parser.add_argument_group("PPO of every policy (PPOArgs; the seeds are --seeds)"),
        PPOArgs,
        dataclasses.replace(PPOArgs(), learning_rate=shipped.learning_rate, iterations=shipped.iterations),
        exclude=("seed", "reward"),  # --reward is the router flags'
        aliases=PPO_FLAG_ALIASES,
        helps={"learning_rate": "PPO lr (the shipped policy's)", "iterations": "PPO iterations (shipped's)"},
    )
    parser.add_argument(
        "--run-dir", type=Path, default=Path("runs/curves"), help="PPO runs: seed<S>/L<L>-a<α>"
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (AIQ intervals)")
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--plot", type=Path, default=Path("docs/cost_quality_curves.png"))
    parser.add_argument("--no-report", action="store_true", help="print only (no docs written)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/curves.py ...``: run the study, print it, write the section and the PNG."""
    from training.evaluation.reports import write_marked_section
    from training.experiments.curves_report import markdown_section, plot_curves, print_study

    args_list = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args_list)
    context = load_run_context(ns, split="evaluation", require_replay=True)
    ppo = dataclass_from_flags(ns, PPOArgs)
    began = time.perf_counter()
    ns.replay.parent.mkdir(parents=True, exist_ok=True)
    with context.open_store() as store:
        study = run_study(
            context.config, context.pool, context.train, context.test, store, context.encoder(), ns.alphas,
            seeds=[] if ns.no_router else ns.seeds, extra_seeds=[] if ns.no_router else ns.extra_seeds,
            conditioned_seeds=[] if ns.no_router else ns.conditioned_seeds,
            conditioned_iterations=ns.conditioned_iterations,
            args=ppo, run_dir=ns.run_dir, resamples=ns.resamples,
            progress=not ns.no_progress,
        )  # fmt: skip
    study.info = {"ppo": ppo.as_dict(), "wall_seconds": time.perf_counter() - began}
    print_study(study)
    ns.run_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "aiq": {k: [v.aiq.mean, v.aiq.low, v.aiq.high, v.vs_zero.mean] for k, v in study.aiq.items()},
        "seed_aiq": study.seed_aiq,
        "routellm": [vars(row) for row in study.routellm],
        "train_seconds": study.train_seconds,
        **study.info,
    }
    (ns.run_dir / "curves_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if not ns.no_report:
        command = shlex.join(["python", "training/curves.py", *args_list])
        plot_curves(study, ns.plot)
        write_marked_section(ns.report, SECTION, markdown_section(study, command, ns.plot, ns.report))
        print(f"report: {ns.report} (section '{SECTION}')  plot: {ns.plot}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
