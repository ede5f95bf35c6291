"""``python training/evaluate.py``: evaluate a saved policy on the test split, write the report.

python training/evaluate.py --policy runs/ppo/policy          # writes docs/results.md + docs/cost_quality.png
python training/evaluate.py --no-policy                        # baselines and oracles only
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hierrouter_graph.cli_errors import one_line, run_cli
from hierrouter_graph.policy.dynamic import load_saved_policy
from hierrouter_graph.policy.protocol import RoutingPolicy
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import RunContext, add_data_flags, add_router_flags, load_run_context
from training.evaluation.evaluate import EvaluationResult, evaluate
from training.evaluation.reports import plot_cost_quality, print_table, write_report
from training.replay.readers import ReplayMissError
from training.replay.store import ReplayStore
from training.rl.train import POLICY_DIRNAME

__all__ = ["evaluate_saved", "main", "parse_args", "policy_folder", "run_from_cli"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Evaluate HierRouter against RouterBench-style baselines.")
    add_router_flags(parser)
    parser.add_argument("--policy", type=Path, default=Path("runs/ppo/policy"), help="saved policy")
    parser.add_argument("--no-policy", action="store_true", help="baselines only (no router row)")
    add_data_flags(parser, items_help="JSONL of TEST items instead of the benchmarks")
    parser.add_argument("--train-items", type=Path, default=None, help="JSONL train items (with --items)")
    parser.add_argument(
        "--sweep-run-dirs",
        type=Path,
        nargs="+",
        default=None,
        help="PPO run dirs trained at different α (AIQ)",
    )
    parser.add_argument(
        "--seed-run-dirs",
        type=Path,
        nargs="+",
        default=None,
        help="PPO run dirs trained like --policy but with other seeds (the mean-of-seeds row)",
    )
    parser.add_argument("--report", type=Path, default=Path("docs/results.md"))
    parser.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="the cost-quality PNG (default: cost_quality.png beside --report)",
    )
    parser.add_argument("--no-report", action="store_true", help="print the table only")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    ns = parser.parse_args(argv)
    if ns.plot is None:  # a report written elsewhere must not overwrite docs/cost_quality.png
        ns.plot = ns.report.with_name("cost_quality.png")
    return ns


def policy_folder(path: Path) -> Path:
    """A run dir or a policy dir: ``run_dir/policy`` when the run dir holds one."""
    return path / POLICY_DIRNAME if (path / POLICY_DIRNAME / "policy.json").is_file() else path


def _load_sweep(
    run_dirs: Sequence[Path], load: Callable[[Path], RoutingPolicy]
) -> dict[float, RoutingPolicy]:
    policies: dict[float, RoutingPolicy] = {}
    for run_dir in run_dirs:
        folder = policy_folder(run_dir)
        meta_path = folder / "policy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no policy in sweep run dir {run_dir} (expected {meta_path})")
        alpha = json.loads(meta_path.read_text()).get("training", {}).get("alpha")
        if alpha is None:
            raise ValueError(
                f"{meta_path} records no training α (training.alpha); cannot place it in the sweep"
            )
        if float(alpha) in policies:
            raise ValueError(f"two sweep runs were trained at α = {alpha}")
        policies[float(alpha)] = load(folder)
    return policies


def _load_seeds(run_dirs: Sequence[Path], load: Callable[[Path], RoutingPolicy]) -> dict[int, RoutingPolicy]:
    """PPO seed (``training.args.seed`` in policy.json) → policy, for the mean-of-seeds row."""
    policies: dict[int, RoutingPolicy] = {}
    for run_dir in run_dirs:
        folder = policy_folder(run_dir)
        meta_path = folder / "policy.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"no policy in seed run dir {run_dir} (expected {meta_path})")
        seed = json.loads(meta_path.read_text()).get("training", {}).get("args", {}).get("seed")
        if seed is None:
            raise ValueError(f"{meta_path} records no PPO seed (training.args.seed)")
        if int(seed) in policies:
            raise ValueError(f"two seed runs were trained with seed {seed}")
        policies[int(seed)] = load(folder)
    return policies


def evaluate_saved(
    context: RunContext,
    store: ReplayStore,
    policy: Path | None,
    *,
    reward: str = "task",
    seed: int = 0,
    resamples: int = 1000,
    live: bool = False,
    progress: bool = True,
    sweep_run_dirs: Sequence[Path] | None = None,
    seed_run_dirs: Sequence[Path] | None = None,
    data_info: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """``evaluate`` of the policy saved in ``policy`` (None: baselines only) on the context's test
    split; its states (and the queries the kNN/MLP baselines read) are read through the store
    (recorded ones looked up, new ones kept)."""
    config = context.config
    encoder = context.state_encoder(store)

    def load(folder: Path) -> RoutingPolicy:
        return load_saved_policy(folder, config, encoder)

    return evaluate(
        config,
        context.pool,
        None if policy is None else load(policy_folder(policy)),
        context.train,
        context.test,
        store,
        reward,
        config.alpha,
        seed,
        live=live,
        resamples=resamples,
        alpha_policies=_load_sweep(sweep_run_dirs, load) if sweep_run_dirs else None,
        progress=progress,
        data_info={**context.data_info, **dict(data_info or {})},
        encoder=encoder,
        seed_policies=_load_seeds(seed_run_dirs, load) if seed_run_dirs else None,
    )


def run_from_cli(
    ns: argparse.Namespace,
    *,
    chat_models: Mapping[str, Any] | None = None,
    encoder: Any = None,
    command: str | None = None,
) -> EvaluationResult:
    """The CLI's wiring, callable from tests: ``chat_models``/``encoder`` replace the real ones."""
    context = load_run_context(
        ns, split="evaluation", chat_models=chat_models, encoder=encoder, require_replay=True
    )
    with context.open_store() as store:
        results = evaluate_saved(
            context,
            store,
            None if ns.no_policy else ns.policy,
            reward=ns.reward,
            seed=ns.seed,
            resamples=ns.resamples,
            live=ns.live,
            progress=not ns.no_progress,
            sweep_run_dirs=ns.sweep_run_dirs,
            seed_run_dirs=ns.seed_run_dirs,
            data_info={
                "config": str(ns.config) if ns.config else "default_config()",
                "replay": str(ns.replay),
            },
        )
    if not ns.no_report:
        write_report(results, ns.report, command=command, seed=ns.seed)
        plot_cost_quality(results, ns.plot)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python training/evaluate.py ...``: evaluate, print the table, write the report and plot."""
    args = list(sys.argv[1:] if argv is None else argv)
    ns = parse_args(args)
    command = shlex.join(["python", "training/evaluate.py", *args])
    try:
        results = run_from_cli(ns, command=command)
    except (ReplayMissError, FileNotFoundError, ValueError) as error:  # PolicyMismatchError included
        print(f"error: {one_line(error)}", file=sys.stderr)  # one line, as run_cli prints them
        return 2
    print_table(results)
    if not ns.no_report:
        print(f"\nreport: {ns.report}  plot: {ns.plot}")
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
