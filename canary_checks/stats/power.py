"""What counts can reveal: the smallest canary error rate the sequential test would find worse over these
requests, and about how many more requests a decision needs.

Seam: questions asked of the likelihood of hypothetical counts; the running test is
:mod:`canary_checks.stats.sequential`."""

from __future__ import annotations

import math

from canary_checks.stats.fixed import Counts, check_alpha, check_margin
from canary_checks.stats.likelihood import Likelihood

__all__ = ["detectable_rate", "requests_to_decide"]


def _reveals(canary: Counts, stable: Counts, rate: float, *, margin: float, alpha: float, dispersion: float) -> bool:
    """Whether a canary error rate ``rate`` (a fraction), seen over ``canary.requests`` beside what stable showed,
    would give the sequential test e ≥ 1/alpha, its evidence tempered by ``dispersion``. Grows with the rate."""
    x = canary.requests * rate
    lik = Likelihood()
    lik.add(x, x + stable.errors, math.log(canary.requests) - math.log(stable.requests), 1 / max(dispersion, 1.0))
    if lik.empty:
        return False
    return lik.one_sided_log_e(math.log(margin), lik.mode()) >= math.log(1 / alpha)


def detectable_rate(
    canary: Counts, stable: Counts, *, margin: float = 1.0, alpha: float = 0.05, dispersion: float = 1.0
) -> float:
    """The smallest canary error rate (a fraction) that, seen over ``canary.requests`` beside what stable showed,
    would give the sequential test e ≥ 1/alpha (its evidence tempered by ``dispersion``, the bursts' variance
    inflation): what these counts can reveal. ``inf`` when no rate could."""
    alpha, margin = check_alpha(alpha), check_margin(margin)
    if canary.requests <= 0 or stable.requests <= 0:
        return math.inf

    def reveals(rate: float) -> bool:
        return _reveals(canary, stable, rate, margin=margin, alpha=alpha, dispersion=dispersion)

    if not reveals(1.0):
        return math.inf
    # the evidence grows with the rate: bisect on a log scale between the stable's rate and 100 %
    lo, hi = math.log(max(stable.rate, 1e-9)), 0.0
    if reveals(math.exp(lo)):
        return math.exp(lo)
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reveals(math.exp(mid)) else (mid, hi)
    return math.exp(hi)


def requests_to_decide(
    canary: Counts,
    stable: Counts,
    must_detect: float,
    *,
    margin: float = 1.0,
    alpha: float = 0.05,
    dispersion: float = 1.0,
    next_dispersion: float | None = None,
) -> float:
    """About how many *more* canary requests, with both sides' traffic growing in the same proportion and their error
    rates as observed, until a canary error rate of ``must_detect`` (a fraction) would show: when a pass becomes
    possible. ``inf`` when no amount of traffic would do (e.g. stable's own rate is at ``must_detect``). The counts so
    far carry the bursts' inflation ``dispersion``, the requests to come ``next_dispersion`` (default: the same)."""
    alpha, margin = check_alpha(alpha), check_margin(margin)
    later = dispersion if next_dispersion is None else next_dispersion
    if canary.requests <= 0 or stable.requests <= 0 or not math.isfinite(must_detect):
        return math.inf

    def enough(scale: float) -> bool:
        """detectable_rate(scaled counts) ≤ must_detect, asked directly: the evidence grows with the rate, so the
        smallest rate that shows is at most ``must_detect`` exactly when ``must_detect`` shows (and is not below
        stable's own rate, where the search for it starts)."""
        c = Counts(canary.requests * scale, canary.errors * scale)
        s = Counts(stable.requests * scale, stable.errors * scale)
        mixed = scale / (1 / max(dispersion, 1.0) + (scale - 1) / max(later, 1.0))
        if must_detect < max(stable.rate, 1e-9):
            return False
        return _reveals(c, s, min(must_detect, 1.0), margin=margin, alpha=alpha, dispersion=mixed)

    if enough(1.0):
        return 0.0
    lo, hi = 0.0, math.log(1e6)
    if not enough(math.exp(hi)):
        return math.inf
    for _ in range(20):  # within about 2 % of the scale
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if enough(math.exp(mid)) else (mid, hi)
    return math.ceil(canary.requests * (math.exp(hi) - 1.0))
