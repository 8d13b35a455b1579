"""The sequential test fed interval by interval: tempering each interval, the running e-value, the decision now
(:class:`ErrorEvidence`: fail, pass or too few requests to tell) and the run's saved state
(:meth:`SequentialTest.to_dict` / :meth:`~SequentialTest.from_dict`, checked on reading).

Seam: the state and its bookkeeping; the maths it calls is in :mod:`~canary_checks.stats.likelihood`,
:mod:`~canary_checks.stats.tempering`, :mod:`~canary_checks.stats.margin` and :mod:`~canary_checks.stats.power`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import special

from canary_checks.stats import tempering
from canary_checks.stats.fixed import Counts, check_alpha, check_margin, rate_ratio
from canary_checks.stats.likelihood import ORDER, Likelihood
from canary_checks.stats.margin import STABLE_ALPHA, effective_margin, stable_rate_lower
from canary_checks.stats.outcome import Outcome
from canary_checks.stats.power import detectable_rate, requests_to_decide

__all__ = ["FORMAT", "ErrorEvidence", "SequentialTest"]

FORMAT = 2
"""Version of :meth:`SequentialTest.to_dict`'s layout."""


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
    lik: Likelihood = field(default_factory=Likelihood)
    spread: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Moments for the bursts' variance τ²: Σ w·τ̂²_t, Σ w (weights and per-interval estimates, see :meth:`tau2`),
    and how many intervals had an error (either side)."""
    theta_ref: float = 0.0
    """Current estimate of the log ratio (posterior mode), used for the next interval's tempering."""
    tempered_errors: float = 0.0
    """Σ η·e: the errors' weight after tempering (over Σ e: the average information kept)."""

    def __post_init__(self) -> None:
        self.margin = check_margin(self.margin)
        if not (math.isfinite(self.margin_delta) and 0 <= self.margin_delta < 1):
            raise ValueError(f"margin_delta must be a fraction in [0, 1) (e.g. 0.0005); got {self.margin_delta!r}")

    # --- feeding ---

    def tau2(self, information: float = math.inf) -> float:
        """The bursts' variance estimated now (:func:`canary_checks.stats.tempering.tau2`)."""
        return tempering.tau2(self.spread, information)

    def tau2_tempering(self, information: float = math.inf) -> float:
        """The τ² the next interval is tempered by (:func:`canary_checks.stats.tempering.tau2_tempering`)."""
        return tempering.tau2_tempering(self.spread, information)

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
            self.spread = tempering.with_residual(self.spread, xc, e, pi, sigma2)
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
        ratio = rate_ratio(canary, stable) if canary.requests and stable.requests else math.nan
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
            if not isinstance(moments, (list, tuple)) or len(moments) != ORDER + 1:
                raise ValueError(f"bin {key!r} must hold {ORDER + 1} moments")
            values = [
                number(m, f"bin {key} moment {k}", low=0.0 if k % 2 == 0 else None) for k, m in enumerate(moments)
            ]
            bins[int(key)] = np.array(values)
        weight = sum(float(m[0]) for m in bins.values())
        total = test.canary_errors + test.stable_errors
        a = number(data["a"], "a")
        if a > weight * (1 + 1e-9) or weight > total * (1 + 1e-9) + 1e-9:
            raise ValueError("the likelihood's weights exceed the errors counted")
        test.lik = Likelihood(a, bins)
        s1 = number(data["spread"][0], "spread", low=None)
        test.spread = (s1, number(data["spread"][1], "spread"), number(data["spread"][2], "spread"))
        test.theta_ref = number(data["theta_ref"], "theta_ref", low=None)
        test.tempered_errors = number(data["tempered_errors"], "tempered_errors")
        rejected = data.get("rejected", [])
        test.rejected_inputs = [str(r) for r in rejected][-10:] if isinstance(rejected, list) else []
        # the running maximum can never be below what the evidence shows now
        test.max_log_e = max(test.max_log_e, test._log_e())
        return test
