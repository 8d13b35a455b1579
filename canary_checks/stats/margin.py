"""The margin at stable's rate: a time-uniform lower bound on stable's error rate, and the ratio margin the
relative and absolute margins allow together at it.

Seam: which θ₀ the sequential test tests; the test is :mod:`canary_checks.stats.sequential`."""

from __future__ import annotations

import math
from typing import overload

__all__ = ["ABSOLUTE_CAP", "STABLE_ALPHA", "effective_margin", "stable_rate_lower"]

ABSOLUTE_CAP = 1.5
"""The absolute margin never allows more than this ratio to stable (a tiny stable rate does not excuse 10×)."""
STABLE_ALPHA = 0.001
"""Error spent on the lower confidence bound of stable's rate when an absolute margin is set."""


@overload
def stable_rate_lower(requests: float, errors: float, alpha: float = ..., *, at: None = None) -> float: ...
@overload
def stable_rate_lower(requests: float, errors: float, alpha: float = ..., *, at: float) -> bool: ...
def stable_rate_lower(
    requests: float, errors: float, alpha: float = STABLE_ALPHA, *, at: float | None = None
) -> float | bool:
    """A lower bound on stable's error rate valid at every look with probability 1 − alpha: the gamma–Poisson
    mixture martingale (prior Gamma(1, 100), mean 1 %) inverted. 0 when nothing bounds it away from 0. With ``at``:
    only whether the bound is above ``at`` (one evaluation instead of a search)."""
    if requests <= 0 or errors <= 0:
        return False if at is not None else 0.0
    a, b = 1.0, 100.0
    const = a * math.log(b) - math.lgamma(a) + math.lgamma(a + errors) - (a + errors) * math.log(b + requests)

    def log_m(p: float) -> float:
        return const - errors * math.log(p) + p * requests

    top = errors / requests
    threshold = math.log(1 / alpha)
    if at is not None:
        return at < top and log_m(at) >= threshold
    if log_m(top) >= threshold:
        return top
    lo, hi = math.log(1e-300), math.log(top)
    if log_m(math.exp(lo)) < threshold:
        return 0.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if log_m(math.exp(mid)) >= threshold else (lo, mid)
    return math.exp(hi)


def effective_margin(margin: float, margin_delta: float, stable_rate: float) -> float:
    """The ratio margin that ``margin`` (relative) and ``margin_delta`` (absolute, a fraction) allow together at a
    stable error rate of ``stable_rate``: max(margin, min(1 + delta / rate, ABSOLUTE_CAP))."""
    if margin_delta <= 0:
        return margin
    absolute = ABSOLUTE_CAP if stable_rate <= 0 else min(1 + margin_delta / stable_rate, ABSOLUTE_CAP)
    return max(margin, absolute)
