"""The statistics of every report: bootstrap intervals (paired), the gap share, AIQ.

Why a module of its own: the evaluation, the sweep, the tuner, the dynamic-pool experiment and
the specialist evaluation all report means with the same 95% percentile bootstrap intervals, drawn
once per table and shared by every row (paired), and AIQ (RouterBench) over α sweeps; none of that
depends on routing.

- **Intervals**: 95% percentile bootstrap over queries, ``resamples`` resamples drawn once per table
  from ``seed`` and shared by every strategy (paired); the gap share is bootstrapped as the ratio
  of paired resampled means. A difference is "inside the noise" when its paired interval contains 0.
- **AIQ** (``aiq``): see its docstring.
"""

from __future__ import annotations

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
    "bootstrap_indices",
    "bootstrap_interval",
    "gap_interval",
    "mean_interval",
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


def aiq(points: Sequence[tuple[float, float]], cost_range: tuple[float, float] | None = None) -> float:
    """Average Improvement in Quality (RouterBench): area under the non-decreasing convex hull of
    (cost, quality) points, divided by the cost range.

    Construction: (1) of points with equal cost keep the best quality; (2) take the upper convex
    hull (any mixture of two strategies is reachable by randomising between them); (3) make it
    non-decreasing: after the hull's highest vertex it stays flat at that quality (spending more
    can never force a worse result); (4) integrate that piecewise-linear g exactly (trapezoids)
    over [lo, hi] and divide by hi − lo. By default [lo, hi] is the points' own cost span. A given
    ``cost_range`` lets several families share one span: there g is 0 below the family's cheapest
    point (nothing that cheap exists) and flat beyond its dearest. Degenerate span (one point, or
    all costs equal, or lo == hi): the value of g there — the best quality at that cost.
    """
    if not points:
        raise ValueError("aiq needs at least one (cost, quality) point")
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise ValueError(f"aiq needs finite (cost, quality) pairs, got {points!r}")
    best: dict[float, float] = {}
    for cost, quality in array.tolist():
        best[cost] = max(quality, best.get(cost, -math.inf))
    hull = _upper_hull(sorted(best.items()))
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    rising = hull[: peak + 1] if peak == len(hull) - 1 else [*hull[: peak + 1], (hull[-1][0], hull[peak][1])]
    xs, ys = np.array([x for x, _ in rising]), np.array([y for _, y in rising])
    lo, hi = cost_range if cost_range is not None else (float(xs[0]), float(xs[-1]))
    if hi < lo:
        raise ValueError(f"cost_range must be (low, high) with low <= high, got {cost_range}")

    def g(c: float) -> float:
        return 0.0 if c < xs[0] else float(np.interp(c, xs, ys))

    if hi == lo:
        return g(lo)
    start = max(lo, float(xs[0]))
    if start >= hi:
        return 0.0
    knots = np.array(sorted({start, hi, *(x for x in xs.tolist() if start < x < hi)}))
    values = np.interp(knots, xs, ys)
    area = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(knots)))
    return area / (hi - lo)
