"""α's rules, once: the valid range, THE tolerance, which α a policy serves, and the check.

R = Q − α·C: α is fixed when a policy is trained, or — with ``RouterConfig.alpha_range`` — an input
the policy reads, so one policy serves every α in its range. Every place an α meets a policy (the
config, the trained policies, the graph, the training environment, the agents middleware, the
server and its command line) used to restate these rules, with three different tolerances; they
now ask this module, so the graph and the server report the same α and refuse the same requests.

- ``check_alpha_range``: a range is ``[lo, hi]`` with finite ``0 < lo < hi``.
- ``ALPHA_TOLERANCE`` / ``same_alpha`` / ``within_alpha_range``: one relative tolerance, so an α or
  a bound that went through JSON, YAML or ``%g`` still counts as the same number.
- ``trained_alpha_of`` / ``serving_alpha``: which α a policy was trained for and serves by default
  (a fixed-α policy: the α in its ``policy.json``'s ``training`` block when known, else the config's;
  an α-conditioned one: the config's default α).
- ``resolve_alpha``: the α a request, run or episode is routed for, or an ``AlphaError`` naming
  the field and what the policy can serve.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, overload

__all__ = [
    "ALPHA_TOLERANCE",
    "DEFAULT_ALPHA",
    "AlphaError",
    "AlphaTraits",
    "check_alpha",
    "check_alpha_range",
    "check_default_alpha",
    "resolve_alpha",
    "same_alpha",
    "serving_alpha",
    "trained_alpha_of",
    "within_alpha_range",
]

DEFAULT_ALPHA = 0.005
"""``RouterConfig.alpha``'s default (the shipped policy's α)."""

ALPHA_TOLERANCE = 1e-9
"""THE tolerance of every α comparison, relative: two α are the same when they differ by at most
this fraction of the larger (so 0.005 written as ``%g`` and read back is still 0.005, while any α a
user would choose on purpose differs by far more)."""


class AlphaError(ValueError):
    """An α a policy cannot serve (or a malformed one); the message starts with the field."""


class AlphaTraits(Protocol):
    """What the α rules read of a policy (every ``RoutingPolicy`` has both)."""

    @property
    def alpha_range(self) -> tuple[float, float] | None: ...

    @property
    def trained_alpha(self) -> float | None: ...


def check_alpha_range(
    alpha_range: Sequence[float] | None, field: str = "alpha_range"
) -> tuple[float, float] | None:
    """``alpha_range`` as ``(lo, hi)`` floats, or None; anything but finite ``0 < lo < hi`` raises
    a ``ValueError`` naming ``field`` (log α is the policy's input, so both ends must be > 0)."""
    if alpha_range is None:
        return None
    values = list(alpha_range)
    if len(values) != 2 or not all(isinstance(a, int | float) and math.isfinite(a) for a in values):
        raise ValueError(f"{field}: expected [lo, hi] with 0 < lo < hi, got {values}")
    lo, hi = float(values[0]), float(values[1])
    if not 0 < lo < hi:
        raise ValueError(f"{field}: expected [lo, hi] with 0 < lo < hi, got {values}")
    return lo, hi


def same_alpha(a: float, b: float) -> bool:
    """Whether two cost weights are the same α, up to ``ALPHA_TOLERANCE`` (relative)."""
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= ALPHA_TOLERANCE * max(abs(a), abs(b))


def within_alpha_range(alpha: float, alpha_range: Sequence[float]) -> bool:
    """Whether ``alpha`` lies in ``[lo, hi]``, each bound stretched by ``ALPHA_TOLERANCE``."""
    lo, hi = alpha_range
    return math.isfinite(alpha) and lo * (1 - ALPHA_TOLERANCE) <= alpha <= hi * (1 + ALPHA_TOLERANCE)


def check_default_alpha(alpha: float, alpha_range: Sequence[float] | None) -> float:
    """A config's α: with an ``alpha_range`` it is the default α of an α-conditioned router and must
    lie in the range (``ValueError`` naming ``alpha``)."""
    if alpha_range is not None and not within_alpha_range(alpha, alpha_range):
        lo, hi = alpha_range
        raise ValueError(
            f"alpha: {alpha} is the default cost weight of an α-conditioned router and "
            f"must lie in alpha_range [{lo}, {hi}]"
        )
    return float(alpha)


def check_alpha(alpha: float | None, alpha_range: Sequence[float]) -> float:
    """α for an α-conditioned policy: given, and inside the range it was trained on (the policy
    never saw a trade-off outside it, so a value there would be a guess, not a decision)."""
    lo, hi = alpha_range
    if alpha is None:
        raise AlphaError(f"this policy is α-conditioned (trained for alpha in [{lo:g}, {hi:g}]): pass alpha=")
    if not within_alpha_range(alpha, alpha_range):
        raise AlphaError(f"alpha={alpha!r} is outside the range [{lo:g}, {hi:g}] this policy was trained for")
    return float(alpha)


def trained_alpha_of(meta: Mapping[str, Any]) -> float | None:
    """The α a saved policy was trained for, from its ``policy.json``: the ``training`` block's
    ``alpha`` (what ``training/ppo.py`` writes), else a top-level ``alpha``; None when neither."""
    training = meta.get("training")
    value = training.get("alpha") if isinstance(training, Mapping) else None
    if value is None:
        value = meta.get("alpha")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"policy.json: training.alpha: expected a finite number >= 0, got {value!r}")
    return float(value)


def serving_alpha(config_alpha: float, policy: AlphaTraits) -> float:
    """The α a policy serves when a request names none — what the graph and the server report.

    An α-conditioned policy: the config's α (its default, inside the range). A fixed-α policy: the
    α it was trained for when its files say (``trained_alpha``), else the config's — the graph
    would otherwise report one α while the policy decides for another.
    """
    if policy.alpha_range is None and policy.trained_alpha is not None:
        return float(policy.trained_alpha)
    return float(config_alpha)


@overload
def resolve_alpha(
    requested: Any, default: float, alpha_range: Sequence[float] | None, field: str = "alpha"
) -> float: ...


@overload
def resolve_alpha(
    requested: Any, default: float | None, alpha_range: Sequence[float] | None, field: str = "alpha"
) -> float | None: ...


def resolve_alpha(
    requested: Any, default: float | None, alpha_range: Sequence[float] | None, field: str = "alpha"
) -> float | None:
    """The α a query is routed for: ``requested`` (a run's, request's or episode's), else ``default``.

    With an ``alpha_range`` (an α-conditioned policy) any α in it is served; without one only
    ``default`` (the α the policy serves, ``serving_alpha``), so another is refused instead of
    being routed with the trained trade-off while reported as the asked one. Errors are
    ``AlphaError`` naming ``field``.
    """
    if requested is None:
        return default
    if isinstance(requested, bool) or not isinstance(requested, int | float):
        raise AlphaError(f"{field}: expected a number, got {type(requested).__name__}")
    asked = float(requested)
    if alpha_range is not None:
        lo, hi = alpha_range
        if not within_alpha_range(asked, alpha_range):
            raise AlphaError(
                f"{field}: alpha={requested} is outside the range [{lo:g}, {hi:g}] this policy was "
                "trained for"
            )
        return asked
    if default is None or not same_alpha(asked, default):
        raise AlphaError(
            f"{field}: this policy was trained for alpha={default} only (no alpha_range), so "
            f"alpha={requested} cannot be served; train an α-conditioned policy (alpha_range in the "
            "config) to choose α per query"
        )
    return default
