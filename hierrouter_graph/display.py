"""Human-readable rendering of a routed answer (used by the CLI and the demo)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["format_result"]


def _clip(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_result(result: Mapping[str, Any], width: int = 160) -> str:
    """One line per hop (model, probability, tokens, δ_t, reply) then the answer and total cost."""
    lines = [f"query: {_clip(result.get('query', ''), width)}"]
    for hop in result.get("trace", []):
        lines.append(
            f"  hop {hop['stage']}: {hop['model']:<16} p={hop['prob']:.3f}  "
            f"tokens {hop['tokens_in']:>4} in + {hop['tokens_out']:>4} out  "
            f"δ={hop['cost']:.6f}  → {_clip(hop['reply'], width - 70)}"
        )
    lines.append(f"  answer: {_clip(result.get('answer', ''), width)}")
    route = " → ".join(h["model"] for h in result.get("trace", []))
    lines.append(f"  route: {route}   total cost C_L = {result.get('cost', 0.0):.6f}")
    return "\n".join(lines)
