"""Does learning from feedback help? A simulation whose answer can be checked on the recorded tree.

    python training/feedback_simulation.py --seeds 0 1 2 3 4

Per seed: the shipped policy serves every TRAIN item ``--passes`` times, drawing each member from
its π (the exploration a server started with ``--sample`` does); each route is written to a fresh
route log through the server's own ``FeedbackStore.log_route`` and scored with the tree's Q
(``add_feedback``). ``training/cli/from_feedback.retrain_from_log`` then trains a new policy from
that log alone, and both policies route the TEST items greedily on the recorded tree
(``strategies.router_routes``). Reported: mean test reward R = Q − α·C of each, and the paired
difference with its 95% bootstrap interval (``training.statistics``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from hierrouter_graph.config import RouterConfig
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.hop import CONTEXT_SEPARATOR
from hierrouter_graph.policy.router import RouterPolicy
from hierrouter_graph.policy.trained import TrainedPolicy
from hierrouter_graph.route import RouteState, decide_next
from hierrouter_graph.serve.feedback import FeedbackStore
from training.cli.context import add_data_flags, add_router_flags, load_run_context
from training.cli.from_feedback import retrain_from_log
from training.datasets import Item
from training.offpolicy import OffPolicyArgs
from training.reward import ScoreMemo
from training.statistics import Interval, bootstrap_interval
from training.strategies import router_routes
from training.tree import OutcomeTree, complete_items, shared_tree

__all__ = ["SeedResult", "log_sampled_routes", "main", "test_rewards"]


def log_sampled_routes(
    store: FeedbackStore,
    policy: TrainedPolicy,
    tree: OutcomeTree,
    items: Sequence[Item],
    alpha: float,
    horizon: int,
    passes: int,
    seed: int,
) -> int:
    """Serve ``items`` ``passes`` times with routes drawn from π; log each with its Q as feedback."""
    generator = torch.Generator().manual_seed(seed)
    logged = 0
    for round_ in range(passes):
        for item in items:
            state, trace = RouteState.start(item.prompt, alpha), []
            while state.stage < horizon:
                decision = decide_next(policy, state, False, sample=True, generator=generator)
                node = tree[item.id][(*state.route, decision.model)]
                reply = node.context[len(state.context) + len(CONTEXT_SEPARATOR) :]
                trace.append(
                    {
                        "stage": state.stage,
                        "model": decision.model,
                        "prob": decision.prob,
                        "reply": reply,
                        "cost": node.cost - state.cost,
                        "cumulative_cost": node.cost,
                    }
                )
                state = RouteState(
                    item.prompt, node.context, state.stage + 1, node.cost, node.route, alpha=alpha
                )
            completion_id = f"sim-{seed}-{round_}-{item.id}"
            output = {"query": item.prompt, "cost": state.cost, "trace": trace}
            store.log_route(completion_id, output, alpha, created=float(logged))
            store.add_feedback(completion_id=completion_id, score=tree[item.id][state.route].quality)
            logged += 1
    return logged


def test_rewards(
    policy: TrainedPolicy, config: RouterConfig, tree: OutcomeTree, items: Sequence[Item]
) -> np.ndarray:
    """Per test item, R of the policy's greedy route on the recorded tree."""
    routes = router_routes(policy, config, tree, items)
    return np.array([tree[item.id][route].reward for item, route in zip(items, routes, strict=True)])


@dataclass(frozen=True)
class SeedResult:
    seed: int
    routes_logged: int
    logging: float
    retrained: float
    change: Interval


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python training/feedback_simulation.py", description=__doc__)
    add_router_flags(parser)
    add_data_flags(parser, items_help="(not used: the shipped record's benchmark split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--passes", type=int, default=4, help="routes logged per train item")
    parser.add_argument("--epochs", type=int, default=OffPolicyArgs().epochs)
    parser.add_argument("--learning-rate", type=float, default=OffPolicyArgs().learning_rate)
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
            args = OffPolicyArgs(epochs=ns.epochs, learning_rate=ns.learning_rate, seed=seed)
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


if __name__ == "__main__":
    from hierrouter_graph.cli_errors import run_cli

    raise SystemExit(run_cli(main))
