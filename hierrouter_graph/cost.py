"""Hop cost: δ = base_rate · (tokens_in + tokens_out), and the size heuristic for base_rate.

The paper (§3.1, Appendix B) prices each call by tokens times a per-model rate, and falls back to a
rate proportional to the parameter count when no price is known. Its table (Qwen2.5-Coder-3B 0.003,
Phi-3.5-mini 0.003, Llama-3.1-8B 0.008, Qwen-14B 0.014) is 0.001 per billion parameters, which is
the heuristic used here so a pool mixing priced and unpriced models stays on one scale.
"""

from __future__ import annotations

import re

__all__ = [
    "RATE_PER_BILLION_PARAMS",
    "base_rate_from_param_count",
    "hop_cost",
    "param_count_from_name",
]

RATE_PER_BILLION_PARAMS = 0.001
"""Cost per token for every billion parameters (the paper's table: 3B → 0.003, 8B → 0.008)."""

_SIZE_IN_NAME = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])")


def hop_cost(
    base_rate: float, tokens_in: int, tokens_out: int, executions: int = 0, execution_cost: float = 0.0
) -> float:
    """δ_t of one hop; the only place the cost formula lives (graph, env and evaluation use it).

    ``executions`` × ``execution_cost``: what a program-aided member's program runs add (one run
    per hop that held a program; ``ModelSpec.execution_cost``). Without runs the value is exactly
    ``base_rate · tokens``, as before.
    """
    if tokens_in < 0 or tokens_out < 0:
        raise ValueError(f"token counts must be >= 0, got tokens_in={tokens_in}, tokens_out={tokens_out}")
    if executions < 0 or execution_cost < 0:
        raise ValueError(f"executions and execution_cost must be >= 0, got {executions} and {execution_cost}")
    cost = base_rate * (tokens_in + tokens_out)
    return cost + executions * execution_cost if executions else cost


def base_rate_from_param_count(n_params: int) -> float:
    """Heuristic base rate for a model with ``n_params`` parameters."""
    if n_params <= 0:
        raise ValueError(f"parameter count must be positive, got {n_params}")
    return RATE_PER_BILLION_PARAMS * n_params / 1e9


def param_count_from_name(name: str) -> int | None:
    """Parameter count written in a model name ("SmolLM2-135M", "Qwen2.5-Coder-3B"), if any.

    Used before a model is loaded so a config can be priced without touching weights; the loaded
    model's real count is used when the name says nothing.
    """
    matches = _SIZE_IN_NAME.findall(name.replace("_", "-"))
    if not matches:
        return None
    number, unit = matches[-1]
    scale = 1e9 if unit.lower() == "b" else 1e6
    return int(float(number) * scale)
