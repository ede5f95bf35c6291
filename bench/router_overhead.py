"""Router overhead on the default offline pool: one routing decision vs one hop's generation.

A decision is: encode the context c_t (uncached: every context here is new) + one policy
forward. A hop is one ``run_hop`` on the pool model the policy picked. Both are timed in this
run, on the same contexts, and the ratio (median decision / median hop) is printed last.
Target: <= 0.05.

    python bench/router_overhead.py [--queries 4]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `hierrouter_graph` and `training` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hierrouter_graph import HierRouterGraph, run_hop
from hierrouter_graph.graph import build_pool
from hierrouter_graph.hop import extend_context

QUERIES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a python function that returns the n-th Fibonacci number.",
    "Which gas do plants absorb for photosynthesis? A. Oxygen B. Carbon dioxide C. Nitrogen D. Helium",
    "What is the derivative of x^3 + 2x with respect to x?",
    "Name the largest planet of the solar system and explain why it is so large.",
    "A train travels 60 km in 45 minutes. What is its average speed in km/h?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=4)
    args = parser.parse_args()
    router = HierRouterGraph()
    config, policy = router.config, router.policy
    pool = build_pool(config)  # the same loaded models (shared per process)
    policy.decide("warm-up", 0, 0.0)
    run_hop(pool[config.model_names[0]], "warm-up", config.stage_prompt(0))

    decide_s: list[float] = []
    hop_s: list[float] = []
    for number, query in enumerate(QUERIES[: args.queries]):
        context, cost = f"{query} (#{number})", 0.0
        for stage in range(config.horizon):
            started = time.perf_counter()
            decision = policy.decide(context, stage, cost)
            decide_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            hop = run_hop(pool[decision.model], context, config.stage_prompt(stage))
            hop_s.append(time.perf_counter() - started)
            context, cost = extend_context(context, hop.reply), cost + hop.cost
    decision_median, hop_median = statistics.median(decide_s), statistics.median(hop_s)
    print(f"pool={config.model_names} encoder={config.encoder} decisions={len(decide_s)}")
    print(
        f"routing decision (encode + policy): median {decision_median * 1000:.1f} ms, "
        f"max {max(decide_s) * 1000:.1f} ms"
    )
    print(f"hop generation (max_new_tokens={config.models[0].max_new_tokens}): median {hop_median:.2f} s")
    ratio = decision_median / hop_median
    verdict = "met" if ratio <= 0.05 else "NOT met"
    print(f"router overhead ratio (decision / hop) = {ratio:.4f}  (target <= 0.05: {verdict})")


if __name__ == "__main__":
    main()
