"""``python training/feedback_simulation.py``: the feedback loop simulated on the recorded tree.

The algorithm is ``training.experiments.feedback_simulation``; this parses the flags, builds the
run's objects and prints the per-seed table.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.serve.feedback import FeedbackStore
from training.cli.context import add_data_flags, add_router_flags, load_run_context
from training.cli.flags import add_dataclass_flags, dataclass_from_flags
from training.evaluation.statistics import bootstrap_interval
from training.experiments.feedback_simulation import SeedResult, log_sampled_routes, test_rewards
from training.experiments.offpolicy import OffPolicyArgs, retrain_from_log
from training.replay.tree import complete_items, shared_tree
from training.tasks.reward import ScoreMemo

__all__ = ["cli", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python training/feedback_simulation.py", description=__doc__)
    add_router_flags(parser)
    add_data_flags(parser, items_help="(not used: the shipped record's benchmark split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--passes", type=int, default=4, help="routes logged per train item")
    add_dataclass_flags(
        parser.add_argument_group("the update (OffPolicyArgs; its seed is each --seeds value)"),
        OffPolicyArgs,
        exclude=("seed",),
    )
    parser.add_argument("--out", type=Path, default=None, help="keep the logs and policies here")
    ns = parser.parse_args(argv)
    ctx = load_run_context(ns, split="evaluation", require_replay=True)
    config = ctx.config
    results: list[SeedResult] = []
    with ctx.open_store() as replay, tempfile.TemporaryDirectory() as scratch:
        cached = ctx.state_encoder(replay)
        memo = ScoreMemo()
        train = complete_items(config, ctx.pool, ctx.train, replay)
        train_tree = shared_tree(config, ctx.pool, train, replay, memo)
        test_tree = shared_tree(config, ctx.pool, ctx.test, replay, memo)
        test = [item for item in ctx.test if item.id in test_tree]
        shipped = RouterPolicy.load_for(DEFAULT_POLICY_DIR, config, encoder=cached)
        before = test_rewards(shipped, config, test_tree, test)
        root = ns.out or Path(scratch)
        for seed in ns.seeds:
            db = root / f"seed{seed}" / "feedback.sqlite"
            db.parent.mkdir(parents=True, exist_ok=True)
            db.unlink(missing_ok=True)
            store = FeedbackStore(db)
            n = log_sampled_routes(
                store, shipped, train_tree, train, config.alpha, config.horizon, ns.passes, seed
            )
            store.close()
            args = dataclass_from_flags(ns, OffPolicyArgs, OffPolicyArgs(seed=seed))
            folder, _ = retrain_from_log(
                db, DEFAULT_POLICY_DIR, root / f"seed{seed}" / "policy", args, config.alpha, cached
            )
            after = test_rewards(RouterPolicy.load(folder, encoder=cached), config, test_tree, test)
            change = bootstrap_interval(after - before, seed=seed)
            results.append(SeedResult(seed, n, float(before.mean()), float(after.mean()), change))
            print(
                f"seed {seed}: {n} routes logged; test R {before.mean():.4f} -> {after.mean():.4f}, "
                f"change {change.format(4)}",
                flush=True,
            )
    print(
        f"\n{len(train)} train items x {ns.passes} passes logged per seed; {len(test)} test items; "
        f"alpha = {config.alpha}\n"
    )
    print("| seed | routes logged | test R, logging policy | test R, retrained | change [95% CI] |")
    print("|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.seed} | {r.routes_logged} | {r.logging:.4f} | {r.retrained:.4f} | {r.change.format(4)} |"
        )
    mean_change = np.mean([r.retrained - r.logging for r in results])
    print(
        f"\nmean change over {len(results)} seeds: {mean_change:+.4f}; "
        f"seeds whose interval excludes 0: {sum(1 for r in results if not r.change.contains(0.0))}"
    )
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(cli())
