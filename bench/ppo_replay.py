"""PPO with the paper's defaults on the shipped recorded outcome tree: wall time on this machine.

Runs exactly what ``python training/ppo.py --no-eval`` runs (the same ``run_from_cli`` wiring,
paper hyper-parameters, the default offline pool, replay only) in a fresh run directory and a
fresh replay store, and prints the set-up time (tokenizers, encoder, importing the shipped record
and its state embeddings, finding the recorded items, encoding any decision state not shipped)
apart from the whole wall time. Target: whole run under 60 s on 2 CPU cores.

    python bench/ppo_replay.py [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from training.cli import ppo as ppo_cli
from training.rl.args import PPOArgs

TARGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ppo-bench-") as tmp:
        argv = [
            "--run-dir",
            str(Path(tmp) / "run"),
            "--replay",
            str(Path(tmp) / "replay.sqlite"),
            "--no-progress",
            "--no-eval",
        ]
        if args.threads is not None:
            argv += ["--threads", str(args.threads)]
        started = time.perf_counter()
        result = ppo_cli.run_from_cli(ppo_cli.parse_args(argv))
        wall = time.perf_counter() - started
    history = result.history
    train_s = sum(row.get("wall_seconds", 0.0) for row in history)
    defaults = PPOArgs()
    print(
        f"PPO (paper defaults: {defaults.iterations} iterations x {defaults.rollouts} rollouts, "
        f"{defaults.num_minibatches} minibatches, {defaults.update_epochs} epochs) on the shipped record, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"  iterations logged: {len(history)}; last mean return {result.final.get('mean_return', 0):.4f}")
    print(f"  PPO iterations (rollouts + updates): {train_s:.1f} s")
    print(
        f"  set-up (tokenizers, encoder, shipped record + embeddings import, recorded-item probe, "
        f"encoding states not shipped): {wall - train_s:.1f} s"
    )
    verdict = "met" if wall < TARGET_S else "NOT met"
    print(f"  whole run: {wall:.1f} s  (target < {TARGET_S:.0f} s) -> {verdict}")
    print(f"  ratio whole run / target: {wall / TARGET_S:.2f}")


if __name__ == "__main__":
    main()
