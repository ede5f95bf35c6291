"""``python training/specialists/specialize.py``: train a LoRA specialist of the generalist.

python training/specialists/specialize.py --domain code   # the shipped adapter's recipe (DOMAIN_RECIPES)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import training.specialists.lora as specialize
from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.sandbox import SandboxUnavailable
from training.cli.context import load_config
from training.cli.flags import dataclass_from_flags
from training.specialists.examples import DOMAINS, domain_items
from training.specialists.lora import GENERALIST, train_specialist
from training.specialists.settings import SpecializeArgs

__all__ = ["DOMAIN_RECIPES", "args_from", "main", "parse_args"]

DOMAIN_RECIPES: dict[str, dict[str, Any]] = {
    "code": {"steps": 64, "batch_tokens": 1024, "lr": 3e-4, "threads": 1, "checkpoint_every": 8},
    "math": {"steps": 48, "batch_tokens": 1024, "lr": 3e-4, "threads": 1, "checkpoint_every": 8},
}
"""The recorded runs of docs/specialists.md, the CLI defaults for each ``--domain``.

Why per domain: ``python training/specialists/specialize.py --domain code`` alone must rebuild the shipped
adapter (hierrouter_graph/specialists/smollm2-135m-code). One CPU thread is part of the recipe:
the float sums of a GEMM split over more threads can differ in the last bit, so other thread
counts give a close, not bit-identical, adapter (and a new fingerprint, so no stale replay).
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    defaults = SpecializeArgs()
    parser = argparse.ArgumentParser(description=(specialize.__doc__ or "").split("\n\n")[0])
    parser.add_argument("--domain", choices=sorted(DOMAINS), required=True)
    parser.add_argument(
        "--out", type=Path, default=None, help="adapter folder (default runs/specialists/DOMAIN)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="optimizer steps, overrides --epochs (default: the recipe)"
    )
    parser.add_argument("--epochs", type=float, default=defaults.epochs)
    parser.add_argument("--lr", type=float, default=None, help=f"default: the recipe, else {defaults.lr}")
    parser.add_argument("--rank", type=int, default=defaults.rank)
    parser.add_argument("--alpha", type=int, default=None, help="LoRA alpha (default 2 x rank)")
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument(
        "--batch-tokens", type=int, default=None, help=f"default: the recipe, else {defaults.batch_tokens}"
    )
    parser.add_argument("--max-answer-tokens", type=int, default=defaults.max_answer_tokens)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default=defaults.precision)
    parser.add_argument("--checkpoint-every", type=int, default=None, help="default: the recipe")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: offline pool)")
    parser.add_argument("--base", default=GENERALIST, help="pool member whose weights are adapted")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: the recipe's, on CPU)"
    )
    parser.add_argument("--no-progress", action="store_true")
    ns = parser.parse_args(argv)
    recipe = DOMAIN_RECIPES.get(ns.domain, {})
    fallback = {"lr": defaults.lr, "batch_tokens": defaults.batch_tokens}
    fallback["checkpoint_every"] = defaults.checkpoint_every
    for field_name in ("steps", "lr", "batch_tokens", "checkpoint_every", "threads"):
        if getattr(ns, field_name) is None:
            setattr(ns, field_name, recipe.get(field_name, fallback.get(field_name)))
    return ns


def args_from(ns: argparse.Namespace) -> SpecializeArgs:
    """Parsed flags → ``SpecializeArgs`` (settings without a flag keep their defaults)."""
    return dataclass_from_flags(ns, SpecializeArgs)


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    if ns.threads and not torch.cuda.is_available():  # the recipe's CPU threads; GPUs ignore it
        torch.set_num_threads(ns.threads)
    config = load_config(ns)  # --config, else the offline pool
    spec = config.spec(ns.base)
    args = args_from(ns)
    out = ns.out or Path("runs/specialists") / ns.domain
    given = sys.argv[1:] if argv is None else list(argv)
    command = "python training/specialists/specialize.py " + shlex.join(given)
    result = train_specialist(
        spec,
        config,
        domain_items(ns.domain),
        out,
        args,
        resume=ns.resume,
        progress=not ns.no_progress,
        command=command,
    )
    training = result.card["training"]
    print(
        f"{result.card['name']}: {training['steps']} steps ({training['epochs']} epochs), "
        f"{training['tokens']} tokens in {training['seconds']} s = {training['tokens_per_s']} tok/s, "
        f"loss {training['first_loss']} -> {training['final_loss']}; adapter + card in {result.out}"
    )
    return 0


def cli() -> int:
    """The command line: ``main`` with its expected errors reported in one line (``run_cli``)."""
    return run_cli(main, extra=(SandboxUnavailable,))


if __name__ == "__main__":
    raise SystemExit(cli())
