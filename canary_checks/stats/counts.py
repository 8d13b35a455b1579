"""Errors against requests, canary against stable: a fixed-sample test and an anytime-valid sequential test.

Model. In an interval, each side's errors are a Poisson process whose rate is its request count times its error
probability. Conditioned on the interval's total errors ``e`` and each side's requests (``nc``, ``ns``), the canary's
share of the errors is Binomial(e, π(θ)) with

    π(θ) = nc·e^θ / (nc·e^θ + ns),       θ = log(canary error rate / stable error rate),

so the stable's own error rate (a nuisance) drops out, and the traffic share may change from interval to interval
(stage 5 → 25 → 50). With Bernoulli requests instead of Poisson the conditional law is hypergeometric, which is
smaller in convex order (Hoeffding 1963): the tests below stay valid, slightly conservative.

Sequential test (Lindon, Sanden & Shirikian, KDD 2022; Lindon & Malek, NeurIPS 2022). The log-likelihood of θ is kept
on a grid and summed over intervals. Against the non-inferiority null θ ≤ log(margin), the likelihood ratio of any
θ₁ > log(margin) is a non-negative supermartingale (its expectation is increasing in π), and so is the mixture over a
half-normal prior on θ₁ − log(margin): by Ville's inequality it exceeds 1/α with probability at most α, however often
it is looked at. ``1/max e`` is the anytime-valid p-value. The confidence sequence for the ratio is the set of ratios
r whose two-sided mixture e-value against r stays below 1/α.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from canary_checks.stats.outcome import Outcome, bad_number

__all__ = [
    "Counts",
    "ErrorEvidence",
    "FixedTest",
    "SequentialTest",
    "detectable_rate",
    "fixed_test",
    "requests_to_decide",
]

_GRID = np.linspace(-math.log(256.0), math.log(256.0), 321)
"""log ratios the likelihood is kept on: ratios 1/256 … 256, steps of 3.5 %."""
PRIOR_SCALE = 1.0
"""Standard deviation of the mixing prior on the log ratio: most weight on ratios between 1/3 and 3."""


@dataclass(frozen=True)
class Counts:
    """Requests and errors of one side in one interval (from ``increase()``; rounded to whole numbers)."""

    requests: float
    errors: float

    def problem(self) -> str | None:
        """Why these counts cannot be used, or ``None``."""
        for name, value in (("requests", self.requests), ("errors", self.errors)):
            if bad := bad_number(value, name):
                return bad
        if self.errors > self.requests:
            return f"errors ({self.errors:g}) exceed requests ({self.requests:g})"
        return None

    @property
    def rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else math.nan


@dataclass(frozen=True)
class FixedTest:
    """A one-window test of "the canary's error rate is at most ``margin`` × stable's"."""

    outcome: Outcome
    p_value: float
    ratio: float
    """Observed canary rate / stable rate (∞ when stable had no errors and the canary had some)."""
    method: str
    reason: str = ""


def fixed_test(canary: Counts, stable: Counts, *, margin: float = 1.0, alpha: float = 0.05) -> FixedTest:
    """One window, fixed sample: Fisher's exact test when ``margin`` is 1, otherwise the exact conditional test of a
    Poisson rate ratio (binomial, Przyborowski & Wilenski 1940). Valid for small counts; not for repeated looks."""
    for side, counts in (("canary", canary), ("stable", stable)):
        if problem := counts.problem():
            return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"{side}: {problem}")
    if canary.requests == 0 or stable.requests == 0:
        side = "canary" if canary.requests == 0 else "stable"
        return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"the {side} received no requests")
    ratio = _ratio(canary, stable)
    ce, cr, se, sr = (round(x) for x in (canary.errors, canary.requests, stable.errors, stable.requests))
    if margin == 1.0:
        table = np.array([[ce, cr - ce], [se, sr - se]])
        p = float(sps.fisher_exact(table, alternative="greater").pvalue)
        method = "Fisher's exact test (one-sided)"
    elif ce + se == 0:
        p, method = 1.0, "exact conditional rate-ratio test"
    else:
        share = margin * cr / (margin * cr + sr)
        p = float(sps.binomtest(ce, ce + se, share, alternative="greater").pvalue)
        method = "exact conditional rate-ratio test"
    outcome = Outcome.FAIL if p <= alpha else Outcome.PASS
    return FixedTest(outcome, p, ratio, method)


def _ratio(canary: Counts, stable: Counts) -> float:
    if stable.errors == 0:
        return math.inf if canary.errors > 0 else 1.0
    return (canary.errors / canary.requests) / (stable.errors / stable.requests)


def _log_share(theta: NDArray[np.float64], nc: float, ns: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """log π(θ) and log(1 − π(θ)) on the grid, computed without overflow."""
    a, b = math.log(nc) + theta, np.full_like(theta, math.log(ns))
    norm = np.logaddexp(a, b)
    return a - norm, b - norm


def _loglik(theta: NDArray[np.float64], canary: Counts, stable: Counts) -> NDArray[np.float64]:
    if canary.requests <= 0 or stable.requests <= 0 or canary.errors + stable.errors <= 0:
        return np.zeros_like(theta)  # this interval says nothing about the ratio
    log_pi, log_rest = _log_share(theta, canary.requests, stable.requests)
    return round(canary.errors) * log_pi + round(stable.errors) * log_rest


def _grid(margin: float) -> NDArray[np.float64]:
    return np.union1d(_GRID, [math.log(margin)])


def _one_sided_log_e(grid: NDArray[np.float64], loglik: NDArray[np.float64], margin: float) -> float:
    """log of the half-normal mixture e-value of "ratio > margin" against "ratio = margin"."""
    m = math.log(margin)
    i0 = int(np.searchsorted(grid, m))
    above = grid > m
    log_w = -0.5 * ((grid[above] - m) / PRIOR_SCALE) ** 2
    log_w -= np.logaddexp.reduce(log_w)
    return float(np.logaddexp.reduce(log_w + loglik[above]) - loglik[i0])


def _two_sided_log_e(grid: NDArray[np.float64], loglik: NDArray[np.float64]) -> NDArray[np.float64]:
    """For every grid ratio r: log of the normal-mixture e-value against "ratio = r"."""
    log_w = -0.5 * (grid / (2 * PRIOR_SCALE)) ** 2
    log_w -= np.logaddexp.reduce(log_w)
    return np.asarray(np.logaddexp.reduce(log_w + loglik) - loglik, dtype=np.float64)


@dataclass(frozen=True)
class ErrorEvidence:
    """What the sequential test says now."""

    outcome: Outcome
    e_value: float
    """Evidence that the canary's error rate exceeds ``margin`` × stable's; fails at ≥ 1/alpha."""
    p_value: float
    """Anytime-valid p-value: 1 / the largest e-value seen so far (capped at 1)."""
    ratio: float
    """Observed canary rate / stable rate, all intervals pooled."""
    interval: tuple[float, float]
    """Confidence sequence for the ratio at 1 − alpha (valid at every look)."""
    detectable_rate: float
    """Smallest canary error rate (a fraction) these requests would already reveal as worse."""
    canary: Counts
    stable: Counts
    """Totals over all intervals."""
    alpha: float
    margin: float
    reason: str = ""
    must_detect: float = math.nan
    """The canary error rate (a fraction) the counts must be able to reveal before a pass."""

    def needed_requests(self) -> float:
        """When inconclusive: about how many more canary requests (at the same traffic share and error rates) the
        decision needs; ``inf`` when no amount would do, NaN when not inconclusive. Computed on asking (a search,
        kept off the path of every update)."""
        if self.outcome is not Outcome.INCONCLUSIVE:
            return math.nan
        return requests_to_decide(self.canary, self.stable, self.must_detect, margin=self.margin, alpha=self.alpha)

    @property
    def detectable_ratio(self) -> float:
        s = self.stable.rate
        return self.detectable_rate / s if s and s > 0 else math.inf


@dataclass
class SequentialTest:
    """Anytime-valid test of the canary/stable error-rate ratio, fed one interval at a time.

    Keep it across looks (:meth:`to_dict` / :meth:`from_dict` for the run's state) and call :meth:`update` with each
    new interval's counts (never overlapping ones), then :meth:`evidence`."""

    margin: float = 1.0
    """Non-inferiority margin: fail only when the canary's rate is above margin × stable's."""
    loglik: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    max_log_e: float = 0.0
    intervals: int = 0
    rejected_inputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"margin must be a positive ratio; got {self.margin!r}")
        self.grid = _grid(self.margin)
        if self.loglik.shape != self.grid.shape:
            self.loglik = np.zeros_like(self.grid)

    def update(self, canary: Counts, stable: Counts) -> SequentialTest:
        """Add one interval. Unusable counts (NaN, negative, errors > requests) are recorded and add nothing."""
        for side, counts in (("canary", canary), ("stable", stable)):
            if problem := counts.problem():
                self.rejected_inputs = [*self.rejected_inputs[-9:], f"{side}: {problem}"]
                return self
        self.loglik = self.loglik + _loglik(self.grid, canary, stable)
        self.canary_requests += round(canary.requests)
        self.canary_errors += round(canary.errors)
        self.stable_requests += round(stable.requests)
        self.stable_errors += round(stable.errors)
        self.intervals += 1
        self.max_log_e = max(self.max_log_e, _one_sided_log_e(self.grid, self.loglik, self.margin))
        return self

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether the evidence has ever reached 1/alpha: the canary is worse than ``margin`` × stable's rate."""
        return self.max_log_e >= math.log(1 / alpha)

    def evidence(self, alpha: float = 0.05, *, worse_ratio: float = 2.0, worse_delta: float = 0.01) -> ErrorEvidence:
        """The decision now. Fail: e ≥ 1/alpha. Pass: not failing, and a canary worse by ``worse_ratio`` × stable's
        rate or by ``worse_delta`` (a fraction) above it — whichever is larger — would already have been revealed.
        Otherwise inconclusive: too few requests to tell."""
        canary = Counts(self.canary_requests, self.canary_errors)
        stable = Counts(self.stable_requests, self.stable_errors)
        log_e = _one_sided_log_e(self.grid, self.loglik, self.margin)
        e_value = math.exp(min(log_e, 700.0))
        p_value = min(1.0, math.exp(-self.max_log_e))
        inside = self.grid[_two_sided_log_e(self.grid, self.loglik) < math.log(1 / alpha)]
        interval = (math.nan, math.nan)
        if inside.size:  # a bound at the grid's edge is open-ended
            lo, hi = float(inside.min()), float(inside.max())
            interval = (0.0 if lo <= self.grid[0] else math.exp(lo), math.inf if hi >= self.grid[-1] else math.exp(hi))
        ratio = _ratio(canary, stable) if canary.requests and stable.requests else math.nan

        def result(outcome: Outcome, detect: float, reason: str = "", must: float = math.nan) -> ErrorEvidence:
            return ErrorEvidence(
                outcome, e_value, p_value, ratio, interval, detect, canary, stable, alpha, self.margin, reason, must
            )

        if canary.requests == 0 or stable.requests == 0:
            side = "canary" if canary.requests == 0 else "stable"
            return result(Outcome.NO_DATA, math.inf, f"the {side} received no requests")
        detect = detectable_rate(canary, stable, margin=self.margin, alpha=alpha)
        if self.rejects(alpha):
            return result(Outcome.FAIL, detect)
        base = stable.rate
        must_detect = max(worse_ratio * self.margin * base, base + worse_delta)
        if detect <= must_detect:
            return result(Outcome.PASS, detect)
        return result(
            Outcome.INCONCLUSIVE,
            detect,
            f"too few requests to tell: only a canary error rate of {detect:.3%} or more would show "
            f"(need to see {must_detect:.3%})",
            must_detect,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "margin": self.margin,
            "loglik": [float(x) for x in self.loglik],
            "canary": [self.canary_requests, self.canary_errors],
            "stable": [self.stable_requests, self.stable_errors],
            "max_log_e": self.max_log_e,
            "intervals": self.intervals,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequentialTest:
        test = cls(margin=float(data["margin"]))
        loglik = np.asarray(data["loglik"], dtype=np.float64)
        if loglik.shape != test.grid.shape:
            raise ValueError("the saved evidence was written with another grid; start a new comparison")
        test.loglik = loglik
        test.canary_requests, test.canary_errors = (float(x) for x in data["canary"])
        test.stable_requests, test.stable_errors = (float(x) for x in data["stable"])
        test.max_log_e = float(data["max_log_e"])
        test.intervals = int(data["intervals"])
        return test


def detectable_rate(canary: Counts, stable: Counts, *, margin: float = 1.0, alpha: float = 0.05) -> float:
    """The smallest canary error rate (a fraction) that, seen over ``canary.requests`` beside what stable showed,
    would give the sequential test e ≥ 1/alpha: what these counts can reveal. ``inf`` when no rate could."""
    if canary.requests <= 0 or stable.requests <= 0:
        return math.inf
    grid = _grid(margin)
    base = max(stable.rate, 0.0)
    threshold = math.log(1 / alpha)

    def reveals(rate: float) -> bool:
        expected = Counts(canary.requests, canary.requests * rate)
        return _one_sided_log_e(grid, _expected_loglik(grid, expected, stable), margin) >= threshold

    if not reveals(1.0):
        return math.inf
    # the evidence grows with the rate: bisect on a log scale between the stable's rate and 100 %
    lo, hi = math.log(max(base, 1e-6)), 0.0
    if reveals(math.exp(lo)):
        return math.exp(lo)
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reveals(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def requests_to_decide(
    canary: Counts, stable: Counts, must_detect: float, *, margin: float = 1.0, alpha: float = 0.05
) -> float:
    """About how many *more* canary requests, with both sides' traffic growing in the same proportion and their error
    rates as observed, until a canary error rate of ``must_detect`` (a fraction) would show: when a pass becomes
    possible. ``inf`` when no amount of traffic would do (e.g. stable's own rate is at ``must_detect``)."""
    if canary.requests <= 0 or stable.requests <= 0 or not math.isfinite(must_detect):
        return math.inf

    def enough(scale: float) -> bool:
        c = Counts(canary.requests * scale, canary.errors * scale)
        s = Counts(stable.requests * scale, stable.errors * scale)
        return detectable_rate(c, s, margin=margin, alpha=alpha) <= must_detect

    if enough(1.0):
        return 0.0
    lo, hi = 0.0, math.log(1e6)
    if not enough(math.exp(hi)):
        return math.inf
    for _ in range(20):  # within about 2 % of the scale
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if enough(math.exp(mid)) else (mid, hi)
    return math.ceil(canary.requests * (math.exp(hi) - 1.0))


def _expected_loglik(grid: NDArray[np.float64], canary: Counts, stable: Counts) -> NDArray[np.float64]:
    if canary.errors + stable.errors <= 0:
        return np.zeros_like(grid)
    log_pi, log_rest = _log_share(grid, canary.requests, stable.requests)
    return np.asarray(canary.errors * log_pi + stable.errors * log_rest, dtype=np.float64)
