"""Counts and the one-window test: each side's requests and errors in an interval, the checks of alpha and the
margin every test shares, the fixed-sample test (Fisher / exact conditional rate ratio) and the observed ratio.

Seam: one look at one window; the anytime-valid test is :mod:`canary_checks.stats.sequential`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from canary_checks.stats.outcome import Outcome, bad_number

__all__ = ["Counts", "FixedTest", "check_alpha", "check_margin", "fixed_test", "rate_ratio"]


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or a ValueError that says what is allowed."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a probability strictly between 0 and 1 (e.g. 0.05); got {alpha!r}")
    return float(alpha)


def check_margin(margin: float, name: str = "margin") -> float:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"{name} must be a positive finite ratio (e.g. 1.1); got {margin!r}")
    return float(margin)


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
        if round(self.errors) > round(self.requests):
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


_EXACT_UP_TO = 1e6
"""Above this many errors (or 2**53 requests) the exact tests give way to the normal approximation."""


def fixed_test(canary: Counts, stable: Counts, *, margin: float = 1.0, alpha: float = 0.05) -> FixedTest:
    """One window, fixed sample: Fisher's exact test when ``margin`` is 1, otherwise the exact conditional test of a
    Poisson rate ratio (binomial, Przyborowski & Wilenski 1940); with very large counts (over a million errors) the
    conditional binomial's normal approximation, which is then exact to many digits. Valid for small counts; not for
    repeated looks."""
    alpha, margin = check_alpha(alpha), check_margin(margin)
    for side, counts in (("canary", canary), ("stable", stable)):
        if problem := counts.problem():
            return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"{side}: {problem}")
    if canary.requests == 0 or stable.requests == 0:
        side = "canary" if canary.requests == 0 else "stable"
        return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"the {side} received no requests")
    ratio = rate_ratio(canary, stable)
    ce, cr, se, sr = (float(np.rint(x)) for x in (canary.errors, canary.requests, stable.errors, stable.requests))
    share = margin * cr / (margin * cr + sr)
    total = ce + se
    if total == 0:
        p, method = 1.0, "exact conditional rate-ratio test"
    elif total > _EXACT_UP_TO or cr + sr > 2.0**53:
        z = (ce - total * share - 0.5) / math.sqrt(total * share * (1 - share))
        p, method = float(special.ndtr(-z)), "conditional rate-ratio test (normal approximation, large counts)"
    elif margin == 1.0:
        table = np.array([[ce, cr - ce], [se, sr - se]], dtype=np.int64)
        from scipy import stats as sps  # scipy.stats takes a second to import: only for small counts

        p = float(sps.fisher_exact(table, alternative="greater").pvalue)
        method = "Fisher's exact test (one-sided)"
    else:
        from scipy import stats as sps

        p = float(sps.binomtest(int(ce), int(total), share, alternative="greater").pvalue)
        method = "exact conditional rate-ratio test"
    outcome = Outcome.FAIL if p <= alpha else Outcome.PASS
    return FixedTest(outcome, p, ratio, method)


def rate_ratio(canary: Counts, stable: Counts) -> float:
    if stable.errors == 0:
        return math.inf if canary.errors > 0 else 1.0
    return (canary.errors / canary.requests) / (stable.errors / stable.requests)
