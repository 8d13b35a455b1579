"""Latency from Prometheus histogram buckets, no raw samples needed.

* :func:`mann_whitney` — the Mann–Whitney U test on bucket ranks: every request in a bucket is tied with every other
  request in it (midranks, tie-corrected variance, continuity correction), exactly what ``scipy.stats.mannwhitneyu``
  gives on the expanded samples, computed from the bucket counts alone.
* :func:`cdf_band` — a time-uniform DKW bound (Howard & Ramdas 2022, "Sequential estimation of quantiles with
  applications to A/B-testing and best-arm identification", Theorem 2): with probability 1 − α, for *every* sample
  size n at once, sup |F̂ₙ − F| ≤ 0.85·√((log log(e·n) + 0.8·log(1612/α)) / n). Checking it at every interval keeps it
  valid.
* :func:`quantile_bounds` — what that band says about p50/p95/p99, as bucket bounds (a quantile is only known to lie
  between two bucket bounds; ``histogram_quantile`` interpolates inside, which :func:`interpolated_quantile` shows
  only for reference).
* :func:`compare_quantile` — canary against stable: bounds on each quantile and on their difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

from canary_checks.stats.outcome import Outcome

__all__ = [
    "Histogram",
    "MannWhitney",
    "QuantileComparison",
    "cdf_band",
    "compare_quantile",
    "interpolated_quantile",
    "mann_whitney",
    "quantile_bounds",
]


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts of one side: ``counts[i]`` requests took at most ``bounds[i]``; the last is +Inf."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]

    @classmethod
    def from_buckets(cls, buckets: Mapping[float, float] | Sequence[tuple[float, float]]) -> Histogram:
        """From ``{le: cumulative count}`` as Prometheus has it (any order). Counts from ``increase()`` are rounded."""
        items = sorted(buckets.items() if isinstance(buckets, Mapping) else buckets)
        return cls(tuple(float(b) for b, _ in items), tuple(float(c) for _, c in items))

    def problem(self) -> str | None:
        """Why this histogram cannot be used, or ``None``."""
        if not self.bounds:
            return "no buckets"
        if len(self.bounds) != len(self.counts):
            return "bounds and counts differ in length"
        if any(math.isnan(b) for b in self.bounds) or any(math.isnan(c) for c in self.counts):
            return "NaN among the buckets"
        if not math.isinf(self.bounds[-1]):
            return "the last bucket must be le=+Inf"
        if any(c < 0 or math.isinf(c) for c in self.counts):
            return "a bucket count is negative or infinite"
        if list(self.bounds) != sorted(set(self.bounds)):
            return "bucket bounds repeat"
        return None

    @property
    def total(self) -> int:
        last = self.counts[-1] if self.counts else 0.0
        return round(last) if math.isfinite(last) and last > 0 else 0

    def frequencies(self) -> NDArray[np.float64]:
        """Requests per bucket (non-cumulative). Cumulative counts that dip (``increase()`` extrapolation, a reset)
        are made monotone first."""
        cumulative = np.maximum.accumulate(np.round(np.asarray(self.counts, dtype=np.float64)))
        return np.diff(cumulative, prepend=0.0)

    def cdf(self) -> NDArray[np.float64]:
        freq = self.frequencies()
        total = freq.sum()
        return np.cumsum(freq) / total if total > 0 else np.full(len(freq), math.nan)

    def over(self, bound: float) -> tuple[int, int]:
        """(requests slower than ``bound``, all requests); ``bound`` must be one of the bucket bounds."""
        i = self.bounds.index(bound)
        freq = self.frequencies()
        total = int(freq.sum())
        return total - int(freq[: i + 1].sum()), total


@dataclass(frozen=True)
class MannWhitney:
    u: float
    """U statistic of the canary (the first sample)."""
    p_value: float
    z: float
    superiority: float
    """P(canary request slower than stable's) + ½ P(same bucket): 0.5 means no shift."""
    n_canary: int
    n_stable: int
    outcome: Outcome
    reason: str = ""


def mann_whitney(
    canary: Histogram, stable: Histogram, *, alternative: str = "greater", alpha: float = 0.05
) -> MannWhitney:
    """Mann–Whitney U on bucket ranks (normal approximation with tie and continuity correction). ``greater``: is the
    canary slower? Both histograms must share bucket bounds."""
    for side, h in (("canary", canary), ("stable", stable)):
        if problem := h.problem():
            return MannWhitney(math.nan, math.nan, math.nan, math.nan, 0, 0, Outcome.NO_DATA, f"{side}: {problem}")
    if canary.bounds != stable.bounds:
        return MannWhitney(
            math.nan, math.nan, math.nan, math.nan, 0, 0, Outcome.NO_DATA, "canary and stable have different buckets"
        )
    f1, f2 = canary.frequencies(), stable.frequencies()
    n1, n2 = float(f1.sum()), float(f2.sum())
    if n1 == 0 or n2 == 0:
        side = "canary" if n1 == 0 else "stable"
        return MannWhitney(
            math.nan, math.nan, math.nan, math.nan, int(n1), int(n2), Outcome.NO_DATA, f"the {side} has no requests"
        )
    ties = f1 + f2
    n = n1 + n2
    midranks = np.cumsum(ties) - ties + (ties + 1) / 2
    u = float((f1 * midranks).sum() - n1 * (n1 + 1) / 2)
    mean = n1 * n2 / 2
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12 * ((n + 1) - tie_term)
    superiority = u / (n1 * n2)
    if var <= 0:  # every request in one bucket: no evidence of a shift either way
        return MannWhitney(u, 1.0, 0.0, superiority, int(n1), int(n2), Outcome.PASS, "all requests in one bucket")
    sd = math.sqrt(var)
    if alternative == "greater":
        z = (u - mean - 0.5) / sd
        p = float(special.ndtr(-z))
    elif alternative == "less":
        z = (u - mean + 0.5) / sd
        p = float(special.ndtr(z))
    elif alternative == "two-sided":
        z = (u - mean - math.copysign(0.5, u - mean)) / sd if u != mean else 0.0
        p = min(1.0, float(2 * special.ndtr(-abs(z))))
    else:
        raise ValueError(f"alternative must be greater, less or two-sided; got {alternative!r}")
    return MannWhitney(u, p, z, superiority, int(n1), int(n2), Outcome.FAIL if p <= alpha else Outcome.PASS)


def cdf_band(n: int, alpha: float) -> float:
    """Half-width of the time-uniform confidence band for a CDF after ``n`` samples (1.0 when n is 0)."""
    if n <= 0:
        return 1.0
    return min(1.0, 0.85 * math.sqrt((math.log(math.log(math.e * n)) + 0.8 * math.log(1612 / alpha)) / n))


def quantile_bounds(h: Histogram, q: float, alpha: float) -> tuple[float, float]:
    """Bucket bounds (lo, hi] that hold the ``q`` quantile with confidence 1 − alpha at every look; latencies are
    taken as non-negative (the first bucket starts at 0). ``hi`` is +Inf when the band cannot exclude the top bucket."""
    if not 0 < q < 1:
        raise ValueError(f"q must be between 0 and 1; got {q!r}")
    if h.problem() or h.total == 0:
        return (0.0, math.inf)
    eps = cdf_band(h.total, alpha)
    cdf = h.cdf()
    bounds = np.asarray(h.bounds)
    above = np.nonzero(cdf >= q + eps)[0]  # F(b) ≥ F̂(b) − ε ≥ q  ⇒  quantile ≤ b
    hi = float(bounds[above[0]]) if above.size else math.inf
    below = np.nonzero(cdf < q - eps)[0]  # F(b) ≤ F̂(b) + ε < q  ⇒  quantile > b
    lo = float(bounds[below[-1]]) if below.size else 0.0
    return lo, hi


def interpolated_quantile(h: Histogram, q: float) -> float:
    """What PromQL's ``histogram_quantile`` reports (linear inside the bucket): for reference, never for decisions."""
    if h.problem() or h.total == 0:
        return math.nan
    cdf = h.cdf()
    i = int(np.searchsorted(cdf, q))
    if i >= len(h.bounds) - 1:
        return h.bounds[-2] if len(h.bounds) > 1 else math.nan
    lower = h.bounds[i - 1] if i > 0 else 0.0
    below = cdf[i - 1] if i > 0 else 0.0
    share = (q - below) / (cdf[i] - below) if cdf[i] > below else 0.0
    return float(lower + (h.bounds[i] - lower) * share)


@dataclass(frozen=True)
class QuantileComparison:
    quantile: float
    canary: tuple[float, float]
    """Bucket bounds (lo, hi] of the canary's quantile."""
    stable: tuple[float, float]
    difference: tuple[float, float]
    """Bounds on canary − stable."""
    outcome: Outcome
    n_canary: int
    n_stable: int
    canary_estimate: float
    """``histogram_quantile``-style interpolation, for reference."""
    stable_estimate: float
    reason: str = ""


def compare_quantile(
    canary: Histogram, stable: Histogram, q: float, *, alpha: float = 0.05, margin: float = 1.0
) -> QuantileComparison:
    """Fail when the canary's quantile is surely above ``margin`` × stable's (its lower bound over the stable's upper
    bound); pass when the canary's upper bound is within ``margin`` × stable's upper bound; else inconclusive.
    Each side's band is taken at alpha/2, so the pair holds at 1 − alpha."""
    nc, ns = canary.total, stable.total
    cb = quantile_bounds(canary, q, alpha / 2)
    sb = quantile_bounds(stable, q, alpha / 2)
    diff = (cb[0] - sb[1], cb[1] - sb[0])
    est = (interpolated_quantile(canary, q), interpolated_quantile(stable, q))
    problems = [f"{side}: {p}" for side, h in (("canary", canary), ("stable", stable)) if (p := h.problem())]
    problems = problems or [f"{side}: no requests" for side, n in (("canary", nc), ("stable", ns)) if n == 0]
    if problems:
        return QuantileComparison(q, cb, sb, diff, Outcome.NO_DATA, nc, ns, *est, reason="; ".join(problems))
    if cb[0] > margin * sb[1]:
        outcome, reason = Outcome.FAIL, ""
    elif math.isfinite(cb[1]) and cb[1] <= margin * sb[1]:
        outcome, reason = Outcome.PASS, ""
    else:
        outcome = Outcome.INCONCLUSIVE
        reason = f"the bands overlap: {nc} canary and {ns} stable requests cannot place the quantile closer"
    return QuantileComparison(q, cb, sb, diff, outcome, nc, ns, *est, reason=reason)
