"""Route a handful of sample queries (math, code, science multiple choice) through the offline pool.

Run with ``make demo`` (or ``python examples/demo.py``). Prints, per hop, the chosen model with its
probability, the tokens and δ_t, then the answer and total cost.
"""

from __future__ import annotations

import time

from hierrouter_graph import HierRouterGraph
from hierrouter_graph.defaults import DEFAULT_POLICY_DIR
from hierrouter_graph.display import format_result
from hierrouter_graph.policy import RouterPolicy

SAMPLE_QUERIES = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Put the final answer in \\boxed{}.",
    "Write a python function `is_palindrome(s)` that returns True when the string s reads the same "
    "backwards. Answer with a fenced python block.",
    "Which gas do plants absorb from the air for photosynthesis?\nA. Oxygen\nB. Carbon dioxide\n"
    "C. Nitrogen\nD. Helium\nAnswer with the letter of the correct option.",
]


def main() -> None:
    started = time.perf_counter()
    router = HierRouterGraph()
    trained = isinstance(router.policy, RouterPolicy) and (DEFAULT_POLICY_DIR / "policy.json").is_file()
    print(
        f"pool: {router.config.model_names}  L={router.config.horizon}  alpha={router.config.alpha}  "
        f"policy: {'shipped trained policy' if trained else 'untrained (near-uniform)'}  "
        f"(loaded in {time.perf_counter() - started:.1f}s)\n"
    )
    for query in SAMPLE_QUERIES:
        started = time.perf_counter()
        result = router.invoke(query)
        print(format_result(result))
        print(f"  ({time.perf_counter() - started:.1f}s)\n", flush=True)


if __name__ == "__main__":
    main()
