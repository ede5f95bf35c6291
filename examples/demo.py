"""Route a handful of sample queries (math, code, science multiple choice) through the offline pool.

Run with ``make demo`` (which first trains a router on the shipped record with ``training/ppo.py``
and then routes with it: ``python examples/demo.py --policy runs/demo-ppo/policy``) or plainly
``python examples/demo.py`` (the shipped default policy). Prints, per hop, the chosen model with its
probability, the tokens and δ_t, then the answer and total cost.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hierrouter_graph import HierRouterGraph
from hierrouter_graph.cli_errors import run_cli
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.display import format_result
from hierrouter_graph.policy.router import RouterPolicy

SAMPLE_QUERIES = [
    "A box holds 6 eggs. How many eggs are in 4 boxes? Put the final answer in \\boxed{}.",
    "Write a python function `square(x)` that returns x squared. Answer with a fenced python block.",
    "Which gas do plants absorb from the air for photosynthesis?\nA. Oxygen\nB. Carbon dioxide\n"
    "C. Nitrogen\nD. Helium\nAnswer with the letter of the correct option.",
]
"""Short on purpose: on 2 CPU cores the 1.5B member writes ~4 tokens/s, so a benchmark-length
question (GSM8K's first, ~240-token worked answer) takes over a minute a query, and ``make demo``
must finish in 10 minutes including the install. These take ~30-45 s each (measured 2026-12-01)."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=None, help="a saved RouterPolicy folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    router = HierRouterGraph(policy=args.policy)
    if args.policy is not None:
        which = f"trained policy from {args.policy}"
    elif isinstance(router.policy, RouterPolicy) and (DEFAULT_POLICY_DIR / "policy.json").is_file():
        which = "shipped trained policy"
    else:
        which = "untrained (near-uniform)"
    print(
        f"pool: {router.config.model_names}  L={router.config.horizon}  alpha={router.config.alpha}  "
        f"policy: {which}  "
        f"(loaded in {time.perf_counter() - started:.1f}s)\n"
    )
    for query in SAMPLE_QUERIES:
        started = time.perf_counter()
        result = router.invoke(query)
        print(format_result(result))
        print(f"  ({time.perf_counter() - started:.1f}s)\n", flush=True)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
