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

Where it lives (this module re-exports it all, as before): :mod:`~canary_checks.stats.fixed` the counts and the
one-window test; :mod:`~canary_checks.stats.margin` stable's rate bound and the margin it allows;
:mod:`~canary_checks.stats.likelihood` the log-likelihood, the mixture e-value and the confidence sequence;
:mod:`~canary_checks.stats.tempering` the bursts' τ²; :mod:`~canary_checks.stats.sequential` the test fed interval
by interval, its decision and its saved state; :mod:`~canary_checks.stats.power` what counts can reveal and how many
more requests a decision needs.
"""

from canary_checks.stats.fixed import Counts, FixedTest, check_alpha, check_margin, fixed_test, rate_ratio
from canary_checks.stats.likelihood import ORDER, PRIOR_CENTRE, PRIOR_SCALE, Likelihood
from canary_checks.stats.margin import ABSOLUTE_CAP, STABLE_ALPHA, effective_margin, stable_rate_lower
from canary_checks.stats.power import detectable_rate, requests_to_decide
from canary_checks.stats.sequential import FORMAT, ErrorEvidence, SequentialTest
from canary_checks.stats.tempering import (
    TAU2_PRIOR,
    TAU2_PRIOR_WEIGHT,
    TAU2_UPPER_K0,
    TAU2_UPPER_Z,
    TEMPER_FULL_FROM,
    WEIGH_AFTER,
)

__all__ = [
    "ABSOLUTE_CAP",
    "FORMAT",
    "ORDER",
    "PRIOR_CENTRE",
    "PRIOR_SCALE",
    "STABLE_ALPHA",
    "TAU2_PRIOR",
    "TAU2_PRIOR_WEIGHT",
    "TAU2_UPPER_K0",
    "TAU2_UPPER_Z",
    "TEMPER_FULL_FROM",
    "WEIGH_AFTER",
    "Counts",
    "ErrorEvidence",
    "FixedTest",
    "Likelihood",
    "SequentialTest",
    "check_alpha",
    "check_margin",
    "detectable_rate",
    "effective_margin",
    "fixed_test",
    "rate_ratio",
    "requests_to_decide",
    "stable_rate_lower",
]
