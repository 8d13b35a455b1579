"""Errors against requests, canary against stable: a fixed-sample test and an anytime-valid sequential test.

Model. In an interval, each side's errors are a Poisson process whose rate is its request count times its error
probability. Conditioned on the interval's total errors ``e`` and each side's requests (``nc``, ``ns``), the canary's
share of the errors is Binomial(e, π(θ)) with

    π(θ) = nc·e^θ / (nc·e^θ + ns),       θ = log(canary error rate / stable error rate),

so the stable's own error rate (a nuisance) drops out, and the traffic share may change from interval to interval
(stage 5 → 25 → 50). With Bernoulli requests instead of Poisson the conditional law is hypergeometric, which is
smaller in convex order (Hoeffding 1963): the tests below stay valid, slightly conservative.

Sequential test (Lindon, Sanden & Shirikian, KDD 2022; Lindon & Malek, NeurIPS 2022). Against the non-inferiority
null θ ≤ θ₀ the likelihood ratio of any θ₁ > θ₀ is a non-negative supermartingale, and so is the mixture over a
half-normal prior on θ₁ − θ₀: by Ville's inequality it exceeds 1/α with probability at most α, however often it is
looked at. ``1/max e`` is the anytime-valid p-value. The confidence sequence for the ratio is the set of ratios r
whose two-sided mixture e-value against r stays below 1/α.

Bursts (overdispersion). Real error rates come in bursts: the per-interval ratio of the two sides' rates varies
around its mean, and the canary's share of an interval's errors varies more than binomially. Each interval's
log-likelihood enters *tempered*, multiplied by η_t = 1/φ_t with

    φ_t = 1 + ê_t·π_t(1 − π_t)·τ²,

the variance inflation of a share whose logit varies between intervals with variance τ² (a random-effects model:
Var(X − eπ) ≈ ê·π(1−π)·φ), where ê_t is the interval's expected errors at the rates seen before it (not its
realised errors: a burst on the stable side raises them while lowering the canary's share, and tempering by them
would bias the test). τ² is estimated by moments from the *predictive* residuals of the intervals before t (each
interval's share against the one expected from the intervals before it, less the variance of that expectation; a
residual taken after fitting shrinks by the interval's own pull and made τ² look like 0 after a few quiet
intervals), shrunk towards a prior guess over the first intervals. The tempering uses an upper-confidence-style
multiple of it, 1 + z·√(2/(k + k₀)) after k intervals (3× at first, 1.5× after 30), and at low information per
interval (ê_t·π_t(1 − π_t) below TEMPER_FULL_FROM, where Poisson noise dominates and τ² cannot be learnt in a
canary's time) a proportionally smaller τ² — all from what was known before t, so η_t is predictable. Guarantee:
with Poisson (or Bernoulli) errors and a constant ratio — the model above — every tempered factor has conditional
expectation ≤ 1 (Jensen: E[L^η] ≤ E[L]^η = 1 for η ≤ 1), so the test keeps its exact anytime validity whatever τ²
estimate is used. Under bursts whose per-interval log-ratio varies with variance τ² around a mean at the margin,
tempering by 1/φ makes each factor's expectation ≤ 1 to second order (the "η-central condition" of Grünwald's safe
Bayes: η ≤ Var_model / Var_true), so validity is approximate and is measured (bench/decision_quality.py) rather than
proved. Assumed: bursts are independent between intervals (a burst longer than the polling interval is several
correlated intervals), and the request counts carry no information about the ratio.

Representation. The (tempered) log-likelihood is ``θ·A − Σ_t w_t·softplus(θ + c_t)`` with ``c_t = log(nc/ns)``,
``w_t = η_t·e_t`` and ``A = Σ η_t·X_t``. The c_t are grouped in bins of width 0.1 and each bin keeps the moments
``Σ w_t (c_t − c̄)^k``, k ≤ 6: a Taylor expansion exact to ~1e-14 × the errors, so the likelihood is known at *any*
θ with bounded state — no grid limits the precision, at 10 or 1e9 requests per interval.

Margin. Non-inferiority: the canary is acceptable while its rate is at most ``max(margin × stable, min(stable +
margin_delta, ABSOLUTE_CAP × stable))``. The absolute part needs stable's rate: it uses a time-uniform lower
confidence bound on it (gamma–Poisson mixture at level ``STABLE_ALPHA``), so the ratio margin tested, θ₀, is never
below the true one when that bound holds; the mixture e-value is decreasing in θ₀ (the log-likelihood is concave),
so the anytime p-value ``1/max e + STABLE_ALPHA`` stays valid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np
from numpy.polynomial import polynomial as P
from numpy.typing import NDArray
from scipy import special
from scipy import stats as sps

from canary_checks.stats.outcome import Outcome, bad_number

__all__ = [
    "Counts",
    "ErrorEvidence",
    "FixedTest",
    "SequentialTest",
    "check_alpha",
    "detectable_rate",
    "fixed_test",
    "requests_to_decide",
]

PRIOR_CENTRE = math.log(2.0 / 1.1)
"""Centre of the mixing prior on the log ratio above the margin (u = θ₁ − θ₀): a regression of about 2× stable at
the default margin — the size that matters (statistics.worse_ratio) — so that one is found soonest."""
PRIOR_SCALE = 0.4
"""Its spread: weight from just above the margin to about 4× it; larger regressions win by their own evidence."""
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
ABSOLUTE_CAP = 1.5
"""The absolute margin never allows more than this ratio to stable (a tiny stable rate does not excuse 10×)."""
STABLE_ALPHA = 0.001
"""Error spent on the lower confidence bound of stable's rate when an absolute margin is set."""
FORMAT = 2
"""Version of :meth:`SequentialTest.to_dict`'s layout."""

_BIN = 0.1
_ORDER = 6
_LIMIT = 40.0
"""|log ratio| beyond which a bound is reported open-ended (0 or ∞)."""


def _sigma_derivative_polys() -> list[NDArray[np.float64]]:
    """Coefficients (in s = expit(x)) of the k-th derivative of softplus, k = 1 … ORDER + 3."""
    s_one_minus_s = np.array([0.0, 1.0, -1.0])
    polys = [np.array([0.0, 1.0])]  # softplus' = expit
    for _ in range(_ORDER + 2):
        polys.append(P.polymul(P.polyder(polys[-1]), s_one_minus_s))
    return polys


_DPOLY = _sigma_derivative_polys()
_DEGREE = max(len(p) for p in _DPOLY) - 1
_FACT = np.array([math.factorial(k) for k in range(_ORDER + 1)], dtype=np.float64)


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float, or a ValueError that says what is allowed."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a probability strictly between 0 and 1 (e.g. 0.05); got {alpha!r}")
    return float(alpha)


def _check_margin(margin: float, name: str = "margin") -> float:
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
    alpha, margin = check_alpha(alpha), _check_margin(margin)
    for side, counts in (("canary", canary), ("stable", stable)):
        if problem := counts.problem():
            return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"{side}: {problem}")
    if canary.requests == 0 or stable.requests == 0:
        side = "canary" if canary.requests == 0 else "stable"
        return FixedTest(Outcome.NO_DATA, math.nan, math.nan, "none", f"the {side} received no requests")
    ratio = _ratio(canary, stable)
    ce, cr, se, sr = (float(np.rint(x)) for x in (canary.errors, canary.requests, stable.errors, stable.requests))
    share = margin * cr / (margin * cr + sr)
    total = ce + se
    if total == 0:
        p, method = 1.0, "exact conditional rate-ratio test"
    elif total > _EXACT_UP_TO or cr + sr > 2.0**53:
        z = (ce - total * share - 0.5) / math.sqrt(total * share * (1 - share))
        p, method = float(sps.norm.sf(z)), "conditional rate-ratio test (normal approximation, large counts)"
    elif margin == 1.0:
        table = np.array([[ce, cr - ce], [se, sr - se]], dtype=np.int64)
        p = float(sps.fisher_exact(table, alternative="greater").pvalue)
        method = "Fisher's exact test (one-sided)"
    else:
        p = float(sps.binomtest(int(ce), int(total), share, alternative="greater").pvalue)
        method = "exact conditional rate-ratio test"
    outcome = Outcome.FAIL if p <= alpha else Outcome.PASS
    return FixedTest(outcome, p, ratio, method)


def _ratio(canary: Counts, stable: Counts) -> float:
    if stable.errors == 0:
        return math.inf if canary.errors > 0 else 1.0
    return (canary.errors / canary.requests) / (stable.errors / stable.requests)


# ---- the log-likelihood of θ, exact at any θ ---------------------------------------------------------------------


@dataclass(eq=False)
class _Likelihood:
    """``l(θ) = θ·a − Σ_bins Σ_k m_k/k! · softplus⁽ᵏ⁾(θ + c̄)``: the tempered conditional log-likelihood."""

    a: float = 0.0
    bins: dict[int, NDArray[np.float64]] = field(default_factory=dict)

    def add(self, x: float, e: float, c: float, eta: float) -> None:
        b = round(c / _BIN)
        d = c - b * _BIN
        moments = self.bins.setdefault(b, np.zeros(_ORDER + 1))
        moments += eta * e * d ** np.arange(_ORDER + 1)
        self.a += eta * x

    @property
    def empty(self) -> bool:
        return not self.bins or all(m[0] <= 0 for m in self.bins.values())

    def _arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        keys = sorted(self.bins)
        return np.array([k * _BIN for k in keys]), np.array([self.bins[k] for k in keys]).reshape(len(keys), -1)

    def at(self, theta: NDArray[np.float64] | float, derivative: int = 0) -> NDArray[np.float64]:
        """l (or its first or second derivative) at ``theta``."""
        return self.derivatives(theta, (derivative,))[0]

    def derivatives(
        self, theta: NDArray[np.float64] | float, orders: tuple[int, ...] = (0,)
    ) -> list[NDArray[np.float64]]:
        """l's derivatives of the given orders (0: l itself) at ``theta``, sharing the work."""
        th = np.atleast_1d(np.asarray(theta, dtype=np.float64))
        if not self.bins:
            return [th * self.a if d == 0 else np.full_like(th, self.a if d == 1 else 0.0) for d in orders]
        centres, m = self._arrays()
        x = th[:, None] + centres[None, :]
        powers = special.expit(x)[..., None] ** np.arange(_DEGREE + 1)
        out = []
        for d in orders:
            coef = np.zeros((len(centres), _DEGREE + 1))
            for k in range(_ORDER + 1):
                if k + d >= 1:
                    poly = _DPOLY[k + d - 1]
                    coef[:, : len(poly)] += (m[:, k] / _FACT[k])[:, None] * poly[None, :]
            f = np.einsum("gbj,bj->g", powers, coef)
            if d == 0:
                f = f + (np.logaddexp(0.0, x) * m[None, :, 0]).sum(axis=1)
                out.append(np.asarray(th * self.a - f, dtype=np.float64))
            else:
                out.append(np.asarray((self.a if d == 1 else 0.0) - f, dtype=np.float64))
        return out

    def information(self, theta: float) -> float:
        return float(-self.at(theta, 2)[0])

    def mode(self, start: float = 0.0, prior_sd: float = 2.0, steps: int = 30) -> float:
        """Posterior mode with a N(0, prior_sd²) prior (finite even when one side has no errors); ``steps`` Newton
        steps from ``start`` (a reference kept from interval to interval needs only a couple)."""
        th = start if math.isfinite(start) else 0.0
        for _ in range(steps):
            d1, d2 = self.derivatives(th, (1, 2))
            g = float(d1[0]) - th / prior_sd**2
            h = -float(d2[0]) + 1 / prior_sd**2
            step = max(-1.0, min(1.0, g / h))
            th += step
            if abs(step) < 1e-9:
                break
        return th

    def argmax(self) -> float:
        """Where l is largest (±_LIMIT when it is monotone there)."""
        lo, hi = -_LIMIT, _LIMIT
        if self.at(lo, 1)[0] <= 0:
            return lo
        if self.at(hi, 1)[0] >= 0:
            return hi
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if self.at(mid, 1)[0] > 0 else (lo, mid)
            if hi - lo < 1e-12:
                break
        return (lo + hi) / 2

    def local_grid(self, centre: float, points: int = 81) -> NDArray[np.float64]:
        sd = 1 / math.sqrt(max(self.information(centre), 1e-9))
        half = min(12 * sd, 6.0)
        return np.linspace(centre - half, centre + half, points)

    def one_sided_log_e(self, theta0: float, centre: float) -> float:
        """log of the half-normal mixture e-value of "θ > θ₀" against "θ = θ₀"."""
        if self.empty:
            return 0.0
        u = _u_grid()
        if centre > theta0:
            u = np.concatenate((u, self.local_grid(centre, 41) - theta0))
        u = np.unique(u[(u >= 0) & (u <= PRIOR_CENTRE + 8 * PRIOR_SCALE)])
        log_w = _log_prior(u)
        values = self.at(theta0 + u)
        return _log_trapezoid(u, log_w + values) - float(self.at(theta0)[0])

    def log_marginal(self, centre: float) -> float:
        """log ∫ N(θ; 0, (2·PRIOR_SCALE)²) e^{l(θ)} dθ: the two-sided mixture's numerator."""
        sd = 2 * PRIOR_SCALE
        th = np.unique(np.concatenate((np.linspace(-8 * sd, 8 * sd, 321), self.local_grid(centre))))
        log_w = -0.5 * (th / sd) ** 2 - math.log(math.sqrt(2 * math.pi) * sd)
        return _log_trapezoid(th, log_w + self.at(th))

    def confidence(self, alpha: float) -> tuple[float, float]:
        """The confidence sequence for the ratio at this look: ratios whose two-sided mixture e-value is < 1/alpha."""
        if self.empty:
            return (0.0, math.inf)
        top = self.argmax()
        level = self.log_marginal(max(-8.0, min(8.0, self.mode()))) - math.log(1 / alpha)
        if self.at(top)[0] <= level:
            return (math.nan, math.nan)

        def edge(inside: float, outside: float) -> float:
            if self.at(outside)[0] > level:
                return outside
            for _ in range(200):
                mid = (inside + outside) / 2
                inside, outside = (mid, outside) if self.at(mid)[0] > level else (inside, mid)
                if abs(outside - inside) < 1e-13 * max(1.0, abs(mid)):
                    break
            return (inside + outside) / 2

        lo, hi = edge(top, -_LIMIT), edge(top, _LIMIT)
        return (0.0 if lo <= -_LIMIT else math.exp(lo), math.inf if hi >= _LIMIT else math.exp(hi))


def _u_grid() -> NDArray[np.float64]:
    """Distances above θ₀ the one-sided mixture is integrated over (dense near 0, where a strong null decays fast)."""
    top = PRIOR_CENTRE + 8 * PRIOR_SCALE
    return np.concatenate(([0.0], np.geomspace(1e-9, top, 60), np.linspace(0.0, top, 61)[1:]))


def _log_prior(u: NDArray[np.float64]) -> NDArray[np.float64]:
    """log density of the mixing prior on u = θ₁ − θ₀ > 0: N(PRIOR_CENTRE, PRIOR_SCALE²) truncated to u > 0."""
    z = (u - PRIOR_CENTRE) / PRIOR_SCALE
    norm = math.log(PRIOR_SCALE * math.sqrt(2 * math.pi)) + float(sps.norm.logsf(-PRIOR_CENTRE / PRIOR_SCALE))
    return np.asarray(-0.5 * z * z - norm, dtype=np.float64)


def _log_trapezoid(x: NDArray[np.float64], log_y: NDArray[np.float64]) -> float:
    if x.size < 2:
        return -math.inf
    dx = np.diff(x)
    pair = np.logaddexp(log_y[:-1], log_y[1:]) - math.log(2)
    return float(np.logaddexp.reduce(pair + np.log(dx)))


# ---- the stable's rate: a time-uniform lower bound (for the absolute margin) --------------------------------------


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
    """The ratio margin tested now (the relative margin, widened by the absolute one at a small stable rate)."""
    reason: str = ""
    must_detect: float = math.nan
    """The canary error rate (a fraction) the counts must be able to reveal before a pass."""
    dispersion: float = 1.0
    """Average variance inflation the bursts were found to cause (1: Poisson, no bursts)."""
    rejected: tuple[str, ...] = ()
    """Intervals that could not be used, each with its reason (the latest ten)."""
    next_dispersion: float = 1.0
    """The inflation the next intervals would get, from the bursts' variance estimated now."""

    def needed_requests(self) -> float:
        """When inconclusive: about how many more canary requests (at the same traffic share and error rates) the
        decision needs; ``inf`` when no amount would do, NaN when not inconclusive. Computed on asking (a search,
        kept off the path of every update)."""
        if self.outcome is not Outcome.INCONCLUSIVE:
            return math.nan
        return requests_to_decide(
            self.canary,
            self.stable,
            self.must_detect,
            margin=self.margin,
            alpha=self.alpha,
            dispersion=self.dispersion,
            next_dispersion=self.next_dispersion,
        )

    @property
    def detectable_ratio(self) -> float:
        s = self.stable.rate
        return self.detectable_rate / s if s and s > 0 else math.inf


@dataclass
class SequentialTest:
    """Anytime-valid test of the canary/stable error-rate ratio, fed one interval at a time, robust to bursts.

    Keep it across looks (:meth:`to_dict` / :meth:`from_dict` for the run's state) and call :meth:`update` with each
    new interval's counts (never overlapping ones), then :meth:`evidence`."""

    margin: float = 1.0
    """Non-inferiority margin: fail only when the canary's rate is above margin × stable's."""
    margin_delta: float = 0.0
    """Absolute margin (a fraction): also allow stable's rate + this, up to ABSOLUTE_CAP × stable's."""
    canary_requests: float = 0.0
    canary_errors: float = 0.0
    stable_requests: float = 0.0
    stable_errors: float = 0.0
    max_log_e: float = 0.0
    intervals: int = 0
    rejected_inputs: list[str] = field(default_factory=list)
    stable_only: tuple[float, float] = (0.0, 0.0)
    """Stable's requests and errors from intervals whose canary side was unusable (they count for stable's rate)."""
    lik: _Likelihood = field(default_factory=_Likelihood)
    spread: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Moments for the bursts' variance τ²: Σ w·τ̂²_t, Σ w (weights and per-interval estimates, see :meth:`tau2`),
    and how many intervals had two or more errors."""
    theta_ref: float = 0.0
    """Current estimate of the log ratio (posterior mode), used for the next interval's tempering."""
    tempered_errors: float = 0.0
    """Σ η·e: the errors' weight after tempering (over Σ e: the average information kept)."""

    def __post_init__(self) -> None:
        self.margin = _check_margin(self.margin)
        if not (math.isfinite(self.margin_delta) and 0 <= self.margin_delta < 1):
            raise ValueError(f"margin_delta must be a fraction in [0, 1) (e.g. 0.0005); got {self.margin_delta!r}")

    # --- feeding ---

    def tau2(self, information: float = math.inf) -> float:
        """Current estimate of the between-interval variance of the log ratio (bursts): each interval's moment
        estimate weighted by how much it says about τ² (1 / (1/(ê·π(1−π)) + τ̂²)², τ̂² from the intervals before),
        shrunk towards TAU2_PRIOR with the weight of TAU2_PRIOR_WEIGHT intervals carrying ``information``
        (ê·π(1−π), the interval about to be added)."""
        weighted, weight, _ = self.spread
        prior = TAU2_PRIOR_WEIGHT / (1 / information + TAU2_PRIOR) ** 2
        return max(0.0, (weighted + prior * TAU2_PRIOR) / (weight + prior))

    def tau2_tempering(self, information: float = math.inf) -> float:
        """The τ² the next interval is tempered by, given its ``information`` (ê·π(1−π)): the estimate (:meth:`tau2`)
        made pessimistic as an upper confidence bound from the intervals seen so far (TAU2_UPPER_Z), and scaled down
        at low information per interval (TEMPER_FULL_FROM), where Poisson noise outweighs the bursts."""
        k = self.spread[2]
        upper = 1.0 + TAU2_UPPER_Z * math.sqrt(2.0 / (k + TAU2_UPPER_K0))
        strength = min(1.0, information / TEMPER_FULL_FROM)
        return strength * upper * self.tau2(information)

    def _tau2_for_weights(self, information: float) -> float:
        """The τ² an interval's weight in the estimate assumes: with the prior over the first WEIGH_AFTER intervals,
        then the data's own (so that at high volume, where one interval pins τ² down, the prior fades at once)."""
        weighted, weight, k = self.spread
        if k < WEIGH_AFTER or weight <= 0:
            return self.tau2(information)
        return max(0.0, weighted / weight)

    def update(self, canary: Counts, stable: Counts) -> SequentialTest:
        """Add one interval. Unusable counts (NaN, negative, errors > requests) add nothing to the ratio and are
        recorded with their reason; a usable stable side of such an interval still counts for stable's rate."""
        problems = {side: p for side, c in (("canary", canary), ("stable", stable)) if (p := c.problem())}
        if problems:
            what = "; ".join(f"{side}: {p}" for side, p in problems.items())
            kept = ""
            if "stable" not in problems:
                req, err = self.stable_only
                self.stable_only = (req + float(np.rint(stable.requests)), err + float(np.rint(stable.errors)))
                kept = " (stable's side kept for its error rate)"
            self.rejected_inputs = [*self.rejected_inputs[-9:], f"{what}{kept}"]
            return self
        nc, xc, ns, xs = (float(np.rint(v)) for v in (canary.requests, canary.errors, stable.requests, stable.errors))
        e = xc + xs
        if nc > 0 and ns > 0 and e > 0:
            c = math.log(nc) - math.log(ns)
            # tempering from what was known before this interval: its expected errors at the rates so far (not its
            # realised errors, which a stable-side burst would tie to the canary's share)
            expected = self._expected_errors(nc, ns)
            pi = float(special.expit(self.theta_ref + c))
            v = pi * (1 - pi)
            eta = 1.0 / (1.0 + expected * v * self.tau2_tempering(expected * v))
            # the moment estimate of τ² from this interval's *predictive* residual: against the share expected from
            # the intervals before it (fitted after it, the residual shrinks by the interval's own pull — most of it
            # in the first intervals at high volume, where that made τ² look like 0 and the test fail on bursts), its
            # variance e·π(1−π)·(1 + e·π(1−π)·(τ² + σ²)) with σ² the variance of the reference log ratio
            sigma2 = 1.0 / (self.lik.information(self.theta_ref) + 0.25) if not self.lik.empty else 4.0
            self.lik.add(xc, e, c, eta)
            self.tempered_errors += eta * e
            self.theta_ref = self.lik.mode(self.theta_ref, steps=2)
            iv = e * pi * (1 - pi)
            if iv > 0:
                estimate = ((xc - e * pi) ** 2 - iv) / iv**2 - sigma2
                w = 1 / (1 / iv + self._tau2_for_weights(iv) + sigma2) ** 2
                weighted, weight, k = self.spread
                self.spread = (weighted + w * estimate, weight + w, k + 1)
        self.canary_requests += nc
        self.canary_errors += xc
        self.stable_requests += ns
        self.stable_errors += xs
        self.intervals += 1
        theta0 = math.log(self.tested_margin())
        # l is concave: when it falls beyond θ₀, every alternative above θ₀ is less likely than θ₀, the mixture
        # e-value is ≤ 1 and the running maximum (≥ 1) cannot change — skip the integral
        if not self.lik.empty and self.lik.at(theta0, 1)[0] > 0:
            self.max_log_e = max(self.max_log_e, self.lik.one_sided_log_e(theta0, self.theta_ref))
        return self

    def _expected_errors(self, nc: float, ns: float) -> float:
        """An interval's expected errors at the rates seen before it (prior: 1 % over 100 requests a side)."""
        canary = (self.canary_errors + 1) / (self.canary_requests + 100)
        stable = (self.stable_errors + 1) / (self.stable_requests + 100)
        return nc * canary + ns * stable

    # --- deciding ---

    def tested_margin(self) -> float:
        """The ratio margin tested now: ``margin``, widened by ``margin_delta`` at a small stable rate."""
        if self.margin_delta <= 0:
            return self.margin
        req, err = self.stable_only
        requests, errors = self.stable_requests + req, self.stable_errors + err
        if self.margin > 1 and stable_rate_lower(requests, errors, at=self.margin_delta / (self.margin - 1)):
            return self.margin  # stable's rate is surely high enough that the absolute part allows less
        return effective_margin(self.margin, self.margin_delta, stable_rate_lower(requests, errors))

    def _log_e(self) -> float:
        return self.lik.one_sided_log_e(math.log(self.tested_margin()), self.theta_ref)

    def _spent(self) -> float:
        return STABLE_ALPHA if self.margin_delta > 0 else 0.0

    def p_value(self) -> float:
        """Anytime-valid p-value: 1 / the largest e-value so far (+ the error spent on stable's rate bound)."""
        return min(1.0, math.exp(-self.max_log_e) + self._spent())

    def rejects(self, alpha: float = 0.05) -> bool:
        """Whether the evidence has ever reached 1/alpha: the canary is worse than the margin allows."""
        return self.p_value() <= check_alpha(alpha)

    def dispersion(self) -> float:
        """Average variance inflation found (Σ e / Σ η·e; 1 without bursts)."""
        total = self.canary_errors + self.stable_errors
        return total / self.tempered_errors if self.tempered_errors > 0 and total > 0 else 1.0

    def next_dispersion(self) -> float:
        """The inflation an interval like the average one so far would get now (1 without bursts)."""
        if self.intervals == 0:
            return 1.0
        nc, ns = self.canary_requests / self.intervals, self.stable_requests / self.intervals
        if nc <= 0 or ns <= 0:
            return 1.0
        expected = self._expected_errors(nc, ns)
        v = float(special.expit(self.theta_ref + math.log(nc) - math.log(ns)))
        v *= 1 - v
        return 1.0 + expected * v * self.tau2_tempering(expected * v)

    def evidence(self, alpha: float = 0.05, *, worse_ratio: float = 2.0, worse_delta: float = 0.01) -> ErrorEvidence:
        """The decision now. Fail: e ≥ 1/alpha. Pass: not failing, and a canary worse by ``worse_ratio`` × the margin
        × stable's rate or by ``worse_delta`` (a fraction) above it — whichever is larger — would already have been
        revealed. Otherwise inconclusive: too few requests to tell."""
        alpha = check_alpha(alpha)
        if not (math.isfinite(worse_ratio) and worse_ratio > 1):
            raise ValueError(f"worse_ratio must be a ratio above 1 (e.g. 2); got {worse_ratio!r}")
        if not (math.isfinite(worse_delta) and 0 <= worse_delta <= 1):
            raise ValueError(f"worse_delta must be a fraction in [0, 1] (e.g. 0.01); got {worse_delta!r}")
        canary = Counts(self.canary_requests, self.canary_errors)
        stable = Counts(self.stable_requests, self.stable_errors)
        margin = self.tested_margin()
        log_e = self.lik.one_sided_log_e(math.log(margin), self.theta_ref)
        e_value = math.exp(min(log_e, 700.0))
        interval = self.lik.confidence(alpha)
        ratio = _ratio(canary, stable) if canary.requests and stable.requests else math.nan
        phi = self.dispersion()
        rejected = tuple(self.rejected_inputs)

        def result(outcome: Outcome, detect: float, reason: str = "", must: float = math.nan) -> ErrorEvidence:
            return ErrorEvidence(
                outcome, e_value, self.p_value(), ratio, interval, detect, canary, stable, alpha, margin, reason,
                must, phi, rejected, self.next_dispersion(),
            )  # fmt: skip

        if canary.requests == 0 or stable.requests == 0:
            if self.intervals == 0 and rejected:
                why = f"no usable interval: {len(rejected)} rejected (latest: {rejected[-1]})"
            else:
                why = f"the {'canary' if canary.requests == 0 else 'stable'} received no requests"
            return result(Outcome.NO_DATA, math.inf, why)
        detect = detectable_rate(canary, stable, margin=margin, alpha=alpha, dispersion=phi)
        if self.rejects(alpha):
            return result(Outcome.FAIL, detect)
        base = stable.rate
        must_detect = max(worse_ratio * margin * base, base + worse_delta)
        if detect <= must_detect:
            return result(Outcome.PASS, detect)
        return result(
            Outcome.INCONCLUSIVE,
            detect,
            f"too few requests to tell: only a canary error rate of {detect:.3%} or more would show "
            f"(need to see {must_detect:.3%})",
            must_detect,
        )

    # --- the run's state ---

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "margin": self.margin,
            "margin_delta": self.margin_delta,
            "canary": [self.canary_requests, self.canary_errors],
            "stable": [self.stable_requests, self.stable_errors],
            "stable_only": list(self.stable_only),
            "max_log_e": self.max_log_e,
            "intervals": self.intervals,
            "a": self.lik.a,
            "bins": {str(k): [float(x) for x in m] for k, m in sorted(self.lik.bins.items())},
            "spread": list(self.spread),
            "theta_ref": self.theta_ref,
            "tempered_errors": self.tempered_errors,
            "rejected": list(self.rejected_inputs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SequentialTest:
        """The saved state, checked: anything missing, of the wrong shape, NaN, infinite or impossible (negative
        counts, errors over requests, evidence beyond what the counts allow) raises ValueError saying what — the
        caller starts afresh and says so; a damaged state never becomes a pass."""
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"the saved evidence is malformed ({type(e).__name__}: {e})") from e

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> SequentialTest:
        if not isinstance(data, Mapping):
            raise ValueError("the saved evidence is not an object")
        if data.get("format") != FORMAT:
            raise ValueError(f"the saved evidence has layout {data.get('format')!r}, this version reads {FORMAT}")

        def number(value: Any, what: str, *, low: float | None = 0.0) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{what} is not a number ({value!r})")
            x = float(value)
            if not math.isfinite(x):
                raise ValueError(f"{what} is {x}")
            if low is not None and x < low:
                raise ValueError(f"{what} is below {low:g} ({x:g})")
            return x

        def pair(value: Any, what: str) -> tuple[float, float]:
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f"{what} must be [requests, errors]")
            req, err = number(value[0], f"{what} requests"), number(value[1], f"{what} errors")
            if err > req:
                raise ValueError(f"{what} errors ({err:g}) exceed requests ({req:g})")
            return req, err

        test = cls(margin=number(data["margin"], "margin"), margin_delta=number(data["margin_delta"], "margin_delta"))
        test.canary_requests, test.canary_errors = pair(data["canary"], "canary")
        test.stable_requests, test.stable_errors = pair(data["stable"], "stable")
        test.stable_only = pair(data["stable_only"], "stable_only")
        test.max_log_e = number(data["max_log_e"], "max_log_e")
        intervals = data["intervals"]
        if isinstance(intervals, bool) or not isinstance(intervals, int) or intervals < 0:
            raise ValueError(f"intervals must be a whole number ≥ 0; got {intervals!r}")
        test.intervals = intervals
        bins: dict[int, NDArray[np.float64]] = {}
        raw_bins = data["bins"]
        if not isinstance(raw_bins, Mapping):
            raise ValueError("bins must be an object")
        for key, moments in raw_bins.items():
            if not isinstance(moments, (list, tuple)) or len(moments) != _ORDER + 1:
                raise ValueError(f"bin {key!r} must hold {_ORDER + 1} moments")
            values = [
                number(m, f"bin {key} moment {k}", low=0.0 if k % 2 == 0 else None) for k, m in enumerate(moments)
            ]
            bins[int(key)] = np.array(values)
        weight = sum(float(m[0]) for m in bins.values())
        total = test.canary_errors + test.stable_errors
        a = number(data["a"], "a")
        if a > weight * (1 + 1e-9) or weight > total * (1 + 1e-9) + 1e-9:
            raise ValueError("the likelihood's weights exceed the errors counted")
        test.lik = _Likelihood(a, bins)
        s1 = number(data["spread"][0], "spread", low=None)
        test.spread = (s1, number(data["spread"][1], "spread"), number(data["spread"][2], "spread"))
        test.theta_ref = number(data["theta_ref"], "theta_ref", low=None)
        test.tempered_errors = number(data["tempered_errors"], "tempered_errors")
        rejected = data.get("rejected", [])
        test.rejected_inputs = [str(r) for r in rejected][-10:] if isinstance(rejected, list) else []
        # the running maximum can never be below what the evidence shows now
        test.max_log_e = max(test.max_log_e, test._log_e())
        return test


def detectable_rate(
    canary: Counts, stable: Counts, *, margin: float = 1.0, alpha: float = 0.05, dispersion: float = 1.0
) -> float:
    """The smallest canary error rate (a fraction) that, seen over ``canary.requests`` beside what stable showed,
    would give the sequential test e ≥ 1/alpha (its evidence tempered by ``dispersion``, the bursts' variance
    inflation): what these counts can reveal. ``inf`` when no rate could."""
    alpha, margin = check_alpha(alpha), _check_margin(margin)
    if canary.requests <= 0 or stable.requests <= 0:
        return math.inf
    base = max(stable.rate, 0.0)
    threshold = math.log(1 / alpha)
    eta = 1 / max(dispersion, 1.0)
    c = math.log(canary.requests) - math.log(stable.requests)

    def reveals(rate: float) -> bool:
        x = canary.requests * rate
        lik = _Likelihood()
        lik.add(x, x + stable.errors, c, eta)
        if lik.empty:
            return False
        return lik.one_sided_log_e(math.log(margin), lik.mode()) >= threshold

    if not reveals(1.0):
        return math.inf
    # the evidence grows with the rate: bisect on a log scale between the stable's rate and 100 %
    lo, hi = math.log(max(base, 1e-9)), 0.0
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
    later = dispersion if next_dispersion is None else next_dispersion
    if canary.requests <= 0 or stable.requests <= 0 or not math.isfinite(must_detect):
        return math.inf

    def enough(scale: float) -> bool:
        c = Counts(canary.requests * scale, canary.errors * scale)
        s = Counts(stable.requests * scale, stable.errors * scale)
        mixed = scale / (1 / max(dispersion, 1.0) + (scale - 1) / max(later, 1.0))
        return detectable_rate(c, s, margin=margin, alpha=alpha, dispersion=mixed) <= must_detect

    if enough(1.0):
        return 0.0
    lo, hi = 0.0, math.log(1e6)
    if not enough(math.exp(hi)):
        return math.inf
    for _ in range(20):  # within about 2 % of the scale
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if enough(math.exp(mid)) else (mid, hi)
    return math.ceil(canary.requests * (math.exp(hi) - 1.0))
