"""Router overhead on the default offline pool: one routing decision vs each generating member's hop.

A decision is: encode the context c_t (uncached: every context here is new) + one policy
forward. Why per member: timing only the hop the policy picks is misleading — the shipped policy
often picks ``cloze-mc``, whose refusal of a non-multiple-choice prompt takes no time, so the
median "hop" was 0 s and the ratio meaningless. Here every member that generates text (``kind:
generate``) answers every context, and the decision is compared with each member's median hop
and with the cheapest member's (the smallest price per token: the hop the router's own time
matters most against). Contexts: each query at stage 0, and the query plus the cheapest member's
reply at stage 1. Target: decision / hop <= 0.05.

    python bench/router_overhead.py [--queries 3] [--max-new-tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from hierrouter_graph import HierRouterGraph, RouterConfig, default_config, run_hop
from hierrouter_graph.hop import extend_context
from hierrouter_graph.members.build import build_pool

QUERIES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a python function that returns the n-th Fibonacci number.",
    "Which gas do plants absorb for photosynthesis? A. Oxygen B. Carbon dioxide C. Nitrogen D. Helium",
    "What is the derivative of x^3 + 2x with respect to x?",
    "Name the largest planet of the solar system and explain why it is so large.",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
]


def bench_config(max_new_tokens: int | None, path: Path | None = None) -> RouterConfig:
    """The pool of ``path`` (default: the default pool), optionally with a shorter generation
    length for every generating member."""
    config = RouterConfig.from_file(path) if path is not None else default_config()
    if max_new_tokens is None:
        return config
    models: list[Any] = [
        spec.model_copy(update={"max_new_tokens": max_new_tokens}) if spec.kind == "generate" else spec
        for spec in config.models
    ]
    return RouterConfig.model_validate({**config.model_dump(), "models": models})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--queries", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the pool's")
    parser.add_argument("--config", type=Path, default=None, help="router YAML/JSON (default: default pool)")
    args = parser.parse_args()
    config = bench_config(args.max_new_tokens, args.config)
    pool = build_pool(config)
    router = HierRouterGraph(config, chat_models=pool)
    policy = router.policy
    generating = [spec for spec in config.models if spec.kind == "generate"]
    cheapest = min(generating, key=lambda spec: pool[spec.name].base_rate).name
    policy.decide("warm-up", 0, 0.0)
    for spec in generating:
        run_hop(pool[spec.name], "warm-up", config.stage_prompt(0))

    decide_s: list[float] = []
    hop_s: dict[str, list[float]] = {spec.name: [] for spec in generating}
    tokens: dict[str, list[int]] = {spec.name: [] for spec in generating}
    for number, query in enumerate(QUERIES[: args.queries]):
        context, cost = f"{query} (#{number})", 0.0
        for stage in range(config.horizon):
            started = time.perf_counter()
            policy.decide(context, stage, cost)
            decide_s.append(time.perf_counter() - started)
            replies = {}
            for spec in generating:
                started = time.perf_counter()
                hop = run_hop(pool[spec.name], context, config.stage_prompt(stage))
                hop_s[spec.name].append(time.perf_counter() - started)
                tokens[spec.name].append(hop.tokens_out)
                replies[spec.name] = hop
            context, cost = extend_context(context, replies[cheapest].reply), cost + replies[cheapest].cost

    decision = statistics.median(decide_s)
    print(f"pool={config.model_names} encoder={config.encoder} decisions={len(decide_s)}")
    print(
        f"routing decision (encode + policy): median {decision * 1000:.1f} ms, "
        f"max {max(decide_s) * 1000:.1f} ms"
    )
    for spec in generating:
        median_hop = statistics.median(hop_s[spec.name])
        new_tokens = statistics.median(tokens[spec.name])
        print(
            f"  {spec.name:22s} hop median {median_hop:6.2f} s ({new_tokens:.0f} new tokens, "
            f"max_new_tokens={spec.max_new_tokens}, {pool[spec.name].base_rate}/token)  "
            f"decision/hop = {decision / median_hop:.4f}"
        )
    ratio = decision / statistics.median(hop_s[cheapest])
    verdict = "met" if ratio <= 0.05 else "NOT met"
    print(
        f"router overhead vs the cheapest generating member ({cheapest}) = {ratio:.4f}  "
        f"(target <= 0.05: {verdict})"
    )


if __name__ == "__main__":
    main()
