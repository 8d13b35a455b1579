"""The bursts' variance τ²: its moment estimate from each interval's predictive residual, shrunk towards a prior
guess, and the pessimistic τ² an interval is tempered by (:mod:`canary_checks.stats.counts` describes the model).

Seam: the state is a ``Spread`` (:attr:`SequentialTest.spread <canary_checks.stats.sequential.SequentialTest.spread>`);
these functions read it and make the next one, nothing else."""

from __future__ import annotations

import math

__all__ = [
    "TAU2_PRIOR",
    "TAU2_PRIOR_WEIGHT",
    "TAU2_UPPER_K0",
    "TAU2_UPPER_Z",
    "TEMPER_FULL_FROM",
    "WEIGH_AFTER",
    "Spread",
    "tau2",
    "tau2_for_weights",
    "tau2_tempering",
    "with_residual",
]

TAU2_PRIOR = 0.5
"""Prior guess of the between-interval variance of the log ratio (bursts), before the data say otherwise."""
TAU2_PRIOR_WEIGHT = 5.0
"""How many intervals (like the one being added) that guess weighs against the moments estimated from the data."""
TAU2_UPPER_Z = 2.0
"""Pessimism of the τ² tempered by: the estimate × (1 + z·√(2 / (k + TAU2_UPPER_K0))) after k intervals — the shape of
a one-sided upper confidence bound of a variance estimated from k draws (relative standard error √(2/k)): 3× the
estimate before any data, 2× after 6 intervals, 1.5× after 30, 1.25× after 120 (the moment estimates are
skewed: from a few intervals they are usually below τ², now and then far above it)."""
TAU2_UPPER_K0 = 2.0
"""Intervals' worth of data the pessimism assumes before the first (it starts finite: 1 + z)."""
TEMPER_FULL_FROM = 3.0
"""Information per interval (ê·π(1−π)) from which the tempering is at full strength; below it the τ² tempered by is
scaled by information / TEMPER_FULL_FROM. There Poisson noise dominates each interval, τ² cannot be learnt within a
canary's 20 minutes, and a misjudged τ² costs less: a factor's log-expectation grows by about
½u²·(ê·π(1−π)·η)²·Δτ², at 100 req/s to a 5 % canary (ê·π(1−π) ≈ 0.7) a third of what it does at 1000 req/s. A
measured trade-off, not a proof (bench/decision_quality.py: independent bursts at 100 req/s against a steady canary's
time to detect)."""
WEIGH_AFTER = 3
"""Intervals (with errors) after which the estimate of τ² weighs intervals by the data's own τ²."""
Spread = tuple[float, float, float]
"""Σ w·τ̂²_t, Σ w and how many intervals had an error (either side): what τ² is estimated from."""


def tau2(spread: Spread, information: float = math.inf) -> float:
    """Current estimate of the between-interval variance of the log ratio (bursts): each interval's moment
    estimate weighted by how much it says about τ² (1 / (1/(ê·π(1−π)) + τ̂²)², τ̂² from the intervals before),
    shrunk towards TAU2_PRIOR with the weight of TAU2_PRIOR_WEIGHT intervals carrying ``information``
    (ê·π(1−π), the interval about to be added)."""
    weighted, weight, _ = spread
    prior = TAU2_PRIOR_WEIGHT / (1 / information + TAU2_PRIOR) ** 2
    return max(0.0, (weighted + prior * TAU2_PRIOR) / (weight + prior))


def tau2_tempering(spread: Spread, information: float = math.inf) -> float:
    """The τ² the next interval is tempered by, given its ``information`` (ê·π(1−π)): the estimate (:func:`tau2`)
    made pessimistic as an upper confidence bound from the intervals seen so far (TAU2_UPPER_Z), and scaled down
    at low information per interval (TEMPER_FULL_FROM), where Poisson noise outweighs the bursts."""
    k = spread[2]
    upper = 1.0 + TAU2_UPPER_Z * math.sqrt(2.0 / (k + TAU2_UPPER_K0))
    strength = min(1.0, information / TEMPER_FULL_FROM)
    return strength * upper * tau2(spread, information)


def tau2_for_weights(spread: Spread, information: float) -> float:
    """The τ² an interval's weight in the estimate assumes: with the prior over the first WEIGH_AFTER intervals,
    then the data's own (so that at high volume, where one interval pins τ² down, the prior fades at once)."""
    weighted, weight, k = spread
    if k < WEIGH_AFTER or weight <= 0:
        return tau2(spread, information)
    return max(0.0, weighted / weight)


def with_residual(spread: Spread, x: float, e: float, pi: float, sigma2: float) -> Spread:
    """``spread`` with one interval's moment estimate of τ² added: from its canary errors ``x`` of ``e``, against the
    share ``pi`` expected from the intervals before it, whose log ratio has variance ``sigma2``."""
    iv = e * pi * (1 - pi)
    if iv > 0:
        estimate = ((x - e * pi) ** 2 - iv) / iv**2 - sigma2
        w = 1 / (1 / iv + tau2_for_weights(spread, iv) + sigma2) ** 2
        weighted, weight, k = spread
        spread = (weighted + w * estimate, weight + w, k + 1)
    return spread
