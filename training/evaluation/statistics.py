"""The statistics of every report: bootstrap intervals (paired), the gap share, AIQ.

Why a module of its own: the evaluation, the sweep, the tuner, the dynamic-pool experiment and
the specialist evaluation all report means with the same 95% percentile bootstrap intervals, drawn
once per table and shared by every row (paired), and AIQ (RouterBench) over α sweeps; none of that
depends on routing.

- **Intervals**: 95% percentile bootstrap over queries, ``resamples`` resamples drawn once per table
  from ``seed`` and shared by every strategy (paired); the gap share is bootstrapped as the ratio
  of paired resampled means. A difference is "inside the noise" when its paired interval contains 0.
- **AIQ** (``aiq``), **APGR** and **CPT** (``apgr``, ``cpt``: RouteLLM's, on cost): see their
  docstrings; all three read one curve, ``quality_curve``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "UNDEFINED",
    "FloatArray",
    "Interval",
    "aiq",
    "apgr",
    "bootstrap_indices",
    "bootstrap_interval",
    "cpt",
    "gap_interval",
    "mean_interval",
    "quality_curve",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% bootstrap interval; all three are NaN when the value is undefined."""

    mean: float
    low: float
    high: float

    @property
    def defined(self) -> bool:
        return math.isfinite(self.mean)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, digits: int = 3) -> str:
        """``mean [low, high]`` (markdown report)."""
        if not self.defined:
            return "n/a"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def compact(self, digits: int = 3) -> str:
        """``mean±h`` with h the larger side of the interval (console)."""
        if not self.defined:
            return "n/a"
        half = max(self.mean - self.low, self.high - self.mean)
        return f"{self.mean:.{digits}f}±{half:.{digits}f}"


UNDEFINED = Interval(math.nan, math.nan, math.nan)


def bootstrap_indices(n: int, resamples: int = 1000, seed: int = 0) -> NDArray[np.intp]:
    """[resamples, n] query indices drawn with replacement; shared by all strategies (paired)."""
    if n < 1 or resamples < 1:
        raise ValueError(f"bootstrap needs n >= 1 and resamples >= 1, got n={n}, resamples={resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n)).astype(np.intp)


def _percentiles(point: float, boot: FloatArray) -> Interval:
    low, high = np.percentile(boot, [2.5, 97.5])
    return Interval(point, float(low), float(high))


def mean_interval(values: FloatArray, index: NDArray[np.intp]) -> Interval:
    return _percentiles(float(values.mean()), values[index].mean(axis=1))


def bootstrap_interval(
    values: Sequence[float] | FloatArray, *, resamples: int = 1000, seed: int = 0
) -> Interval:
    """Mean of ``values`` with its 95% percentile bootstrap interval (deterministic for a seed)."""
    array = np.asarray(values, dtype=np.float64)
    return mean_interval(array, bootstrap_indices(len(array), resamples, seed))


def gap_interval(
    strategy: FloatArray, best: FloatArray, oracle: FloatArray, index: NDArray[np.intp]
) -> Interval:
    """(S − best)/(oracle − best) on means, and the same ratio on every paired resample.

    Resamples whose oracle − best mean is 0 have no gap to recover and are left out of the interval.
    """
    numerator, denominator = strategy - best, oracle - best
    if not denominator.mean() > 0:
        return UNDEFINED
    point = float(numerator.mean() / denominator.mean())
    boot_num, boot_den = numerator[index].mean(axis=1), denominator[index].mean(axis=1)
    usable = boot_den > 0
    return _percentiles(point, boot_num[usable] / boot_den[usable])


# ---------------------------------------------------------------------------------- AIQ


def _upper_hull(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Upper convex hull (Andrew's monotone chain) of points with distinct, increasing costs."""
    hull: list[tuple[float, float]] = []
    for x, y in points:
        while len(hull) >= 2:
            (ox, oy), (ax, ay) = hull[-2], hull[-1]
            if (ax - ox) * (y - oy) - (ay - oy) * (x - ox) >= 0:  # a on or below the chord o→p
                hull.pop()
            else:
                break
        hull.append((x, y))
    return hull


def quality_curve(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-decreasing upper convex hull of (cost, quality) points, as its vertices by cost.

    Construction: (1) of points with equal cost keep the best quality; (2) take the upper convex
    hull (any mixture of two strategies is reachable by randomising between them); (3) make it
    non-decreasing: after the hull's highest vertex it stays flat at that quality up to the dearest
    point's cost (spending more can never force a worse result). Between vertices the curve is
    linear. Shared by ``aiq``, ``apgr`` and ``cpt`` so the three read the same curve.
    """
    if not points:
        raise ValueError("a quality curve needs at least one (cost, quality) point")
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise ValueError(f"expected finite (cost, quality) pairs, got {points!r}")
    best: dict[float, float] = {}
    for cost, quality in array.tolist():
        best[cost] = max(quality, best.get(cost, -math.inf))
    hull = _upper_hull(sorted(best.items()))
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[: peak + 1] if peak == len(hull) - 1 else [*hull[: peak + 1], (hull[-1][0], hull[peak][1])]


def _area(curve: list[tuple[float, float]], lo: float, hi: float, below: float) -> float:
    """Integral over [lo, hi] of the curve: ``below`` left of its cheapest point, flat right of its
    dearest, exact (trapezoids between vertices) in between."""
    xs, ys = np.array([x for x, _ in curve]), np.array([y for _, y in curve])
    start = min(max(lo, float(xs[0])), hi)
    knots = np.array(sorted({start, hi, *(x for x in xs.tolist() if start < x < hi)}))
    values = np.interp(knots, xs, ys)
    return below * (start - lo) + float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(knots)))


def aiq(points: Sequence[tuple[float, float]], cost_range: tuple[float, float] | None = None) -> float:
    """Average Improvement in Quality (RouterBench): area under the non-decreasing convex hull of
    (cost, quality) points, divided by the cost range.

    The curve is ``quality_curve`` (best quality per cost, upper convex hull, flat after its peak);
    AIQ integrates that piecewise-linear g exactly (trapezoids) over [lo, hi] and divides by
    hi − lo. By default [lo, hi] is the points' own cost span. A given ``cost_range`` lets several
    families share one span: there g is 0 below the family's cheapest point (nothing that cheap
    exists) and flat beyond its dearest. Degenerate span (one point, or all costs equal, or
    lo == hi): the value of g there — the best quality at that cost.
    """
    curve = quality_curve(points)
    xs, ys = [x for x, _ in curve], [y for _, y in curve]
    lo, hi = cost_range if cost_range is not None else (xs[0], xs[-1])
    if hi < lo:
        raise ValueError(f"cost_range must be (low, high) with low <= high, got {cost_range}")
    if hi == lo:
        return 0.0 if lo < xs[0] else float(np.interp(lo, xs, ys))
    return _area(curve, lo, hi, below=0.0) / (hi - lo)


# ---------------------------------------------------------------------------------- RouteLLM


def _gap_points(
    points: Sequence[tuple[float, float]], weak: tuple[float, float], strong: tuple[float, float]
) -> list[tuple[float, float]]:
    (cw, qw), (cs, qs) = weak, strong
    if not (cs > cw and qs > qw):
        raise ValueError(
            f"the strong member must cost more and score better than the weak one, got weak {weak}, "
            f"strong {strong}"
        )
    return [((c - cw) / (cs - cw), (q - qw) / (qs - qw)) for c, q in points]


def apgr(
    points: Sequence[tuple[float, float]], weak: tuple[float, float], strong: tuple[float, float]
) -> float:
    """Average performance gap recovered (RouteLLM, Ong et al. 2024), on cost instead of calls.

    ``weak`` and ``strong`` are the (mean cost, mean quality) of the two members that bound the
    trade-off (strong: dearer and better). Each point of a router family (its α sweep) becomes
    x = (C − C_weak)/(C_strong − C_weak) — the cost spent as a share of the weak → strong gap,
    which for a two-member single-hop router IS RouteLLM's "% of calls to the strong model" — and
    PGR = (Q − Q_weak)/(Q_strong − Q_weak). APGR is the mean over x ∈ [0, 1] of the family's
    ``quality_curve`` in those units (0 = the weak member's quality left of the family's cheapest
    point, flat right of its dearest): 0.5 is what randomising between weak and strong gets, 1 what
    always reaching the strong member's quality at the weak one's cost would get; above 1 is
    possible (a router better than the strong member). Points outside [0, 1] shape the hull.
    """
    curve = quality_curve(_gap_points(points, weak, strong))
    return _area(curve, 0.0, 1.0, below=0.0)


def cpt(
    points: Sequence[tuple[float, float]],
    weak: tuple[float, float],
    strong: tuple[float, float],
    target: float = 0.5,
) -> float:
    """Call-performance threshold (RouteLLM's CPT(50%)), on cost: the least cost share x ≥ 0 of
    the weak → strong gap (units of ``apgr``) at which the family's curve recovers ``target`` of
    the quality gap. 0 when it does so at or below the weak member's cost; above 1 when it needs
    more than the strong member costs; ``math.inf`` when it never does.
    """
    curve = quality_curve(_gap_points(points, weak, strong))
    xs, ys = [x for x, _ in curve], [y for _, y in curve]
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if y1 >= target and x1 >= 0:
            x = x0 if y0 >= target else x0 + (target - y0) / (y1 - y0) * (x1 - x0)
            return max(0.0, x)
    if ys[-1] >= target:  # a single vertex: reached there
        return max(0.0, xs[-1])
    return math.inf
