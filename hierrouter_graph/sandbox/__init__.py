"""Isolation for model-written code: used by program-aided members and by code scoring.

``run_python`` runs a program and returns its output; ``evaluate_in_sandbox`` runs a program and
returns the plain values of expressions evaluated after it, so that a verdict can be computed
outside the untrusted process. docs/security.md says what is guaranteed and what is not.
"""

from hierrouter_graph.sandbox.isolation import BACKEND_ENV, SandboxUnavailable
from hierrouter_graph.sandbox.plain import PlainDataError, decode_plain, encode_plain
from hierrouter_graph.sandbox.runner import (
    Evaluation,
    ExpressionOutcome,
    SandboxLimits,
    SandboxResult,
    evaluate_in_sandbox,
    isolation_summary,
    run_python,
)

__all__ = [
    "BACKEND_ENV",
    "Evaluation",
    "ExpressionOutcome",
    "PlainDataError",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "decode_plain",
    "encode_plain",
    "evaluate_in_sandbox",
    "isolation_summary",
    "run_python",
]
