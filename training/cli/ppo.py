"""``python training/ppo.py``: train the router with PPO on the recorded train items, then
evaluate it on the test split and print the table.

    python training/ppo.py --run-dir runs/ppo --replay runs/replay.sqlite --reward task
    python training/ppo.py --args-from hierrouter_graph/default_policy   # the shipped policy's settings
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.hop import ReplyCache
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import RunContext, add_data_flags, add_router_flags, load_run_context
from training.cli.flags import PPO_FLAG_ALIASES, add_dataclass_flags, dataclass_from_flags
from training.replay.readers import ReplayMissError, ReplayOnlyCache
from training.replay.store import StateEncoder
from training.replay.tree import encode_recorded_states, recorded_only
from training.rl.args import PPOArgs
from training.rl.train import TrainResult, train_router

__all__ = [
    "cli",
    "evaluate_trained",
    "main",
    "parse_args",
    "ppo_args_from",
    "run_from_cli",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The CLI's flags; defaults are ``PPOArgs``'s (or, with ``--args-from``, that policy's), so
    the CLI and the library cannot drift apart."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument("--args-from", type=Path, default=None)
    args_from = early.parse_known_args(argv)[0].args_from
    defaults = PPOArgs.from_policy(args_from) if args_from is not None else PPOArgs()
    parser = argparse.ArgumentParser(
        description="Train the HierRouter policy with PPO (paper defaults) on the routing train split."
    )
    parser.add_argument(
        "--args-from",
        type=Path,
        default=None,
        metavar="POLICY_DIR",
        help="start from the PPO arguments a saved policy was trained with (its policy.json); "
        "flags given here still override them",
    )
    add_router_flags(parser)
    # ppo_base: what the flags start from, read once; --reward is the router flags' (shared with
    # evaluate.py), and --device defaults to this machine's choice, never the saved run's
    parser.set_defaults(reward=defaults.reward, ppo_base=defaults)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/ppo"), help="log, checkpoint, policy/")
    add_dataclass_flags(
        parser.add_argument_group("PPO (PPOArgs; the documented short spellings are aliases)"),
        PPOArgs,
        dataclasses.replace(defaults, device=PPOArgs.device),
        exclude=("reward",),
        aliases=PPO_FLAG_ALIASES,
    )
    add_data_flags(parser, items_help="a JSONL dataset instead of the benchmarks")
    parser.add_argument("--no-resume", action="store_true", help="ignore a checkpoint in --run-dir")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation afterwards")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="also write the evaluation as markdown (+ PNG plot beside it)",
    )
    return parser.parse_args(argv)


def ppo_args_from(ns: argparse.Namespace) -> PPOArgs:
    """Parsed flags → ``PPOArgs``: the ``--args-from`` policy's arguments (else the paper's) with
    every flag given applied."""
    return dataclass_from_flags(ns, PPOArgs, getattr(ns, "ppo_base", None) or PPOArgs())


def run_from_cli(
    ns: argparse.Namespace,
    *,
    chat_models: Mapping[str, Any] | None = None,
    encoder: StateEncoder | None = None,
    context: RunContext | None = None,
) -> TrainResult:
    """The CLI's wiring, callable from tests: ``chat_models``/``encoder`` replace the real ones."""
    args = ppo_args_from(ns)
    context = context or load_run_context(ns, chat_models=chat_models, encoder=encoder)
    config, pool, items, data_info = context.config, context.pool, context.train, context.data_info
    with context.open_store() as store:
        if not ns.live:
            items, data_info = recorded_only(config, pool, items, data_info, store)
        cache: ReplyCache = store if ns.live else ReplayOnlyCache(store)
        state_encoder = context.state_encoder(store)
        if not ns.live:
            encode_recorded_states(state_encoder, config, pool, items, cache)
        metadata = {
            "dataset": data_info,
            "config": str(ns.config) if ns.config is not None else "default_config()",
            "replay": str(ns.replay),
            "live": bool(ns.live),
        }
        return train_router(
            config,
            items,
            pool,
            state_encoder,
            args,
            ns.run_dir,
            cache=cache,
            policy_encoder=context.encoder(),
            progress=not ns.no_progress,
            resume=not ns.no_resume,
            metadata=metadata,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/ppo.py ...``: parse, wire, train, print a one-line summary, evaluate."""
    ns = parse_args(argv)
    try:
        context = load_run_context(ns)
        result = run_from_cli(ns, context=context)
    except ReplayMissError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    final = result.final
    how = f"resumed after iteration {result.start_iteration}" if result.resumed else "fresh run"
    nan = float("nan")
    print(
        f"trained {len(result.history)} iterations ({how}); last iteration: mean return "
        f"{final.get('mean_return', nan):.4f}, quality {final.get('mean_quality', nan):.4f}, "
        f"cost {final.get('mean_cost', nan):.4f}; policy saved to {result.policy_dir}"
    )
    if ns.no_eval or ns.items is not None:
        return 0
    return evaluate_trained(ns, context, result.policy_dir)


def evaluate_trained(ns: argparse.Namespace, context: RunContext, policy_dir: Path) -> int:
    """Evaluate the policy just trained on the TEST split of the same data, and print the table."""
    from training.cli.context import evaluation_splits
    from training.cli.evaluate import evaluate_saved
    from training.evaluation.reports import plot_cost_quality, print_table, write_report

    train_items, test_items, info = evaluation_splits(ns)
    split = RunContext(
        context.config, context.pool, train_items, test_items, info, ns.replay, context.shipped
    )
    split.given_encoder = context.encoder()
    command = "python training/ppo.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python training/ppo.py"
    try:
        with split.open_store() as store:
            results = evaluate_saved(
                split,
                store,
                policy_dir,
                reward=ns.reward,
                live=ns.live,
                progress=not ns.no_progress,
                data_info={
                    "config": str(ns.config) if ns.config else "default_config()",
                    "replay": str(ns.replay),
                },
            )
    except ReplayMissError as error:
        print(f"evaluation skipped: {error}", file=sys.stderr)
        return 2
    if ns.report is not None:
        write_report(results, ns.report, command=command, seed=0)
        plot_cost_quality(results, ns.report.with_name("cost_quality.png"))
    print_table(results)
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
