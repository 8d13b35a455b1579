"""The tempered log-likelihood of θ (the log ratio), exact at any θ, and what is integrated over it: the one-sided
mixture e-value against the margin and the confidence sequence for the ratio.

Seam: the likelihood's moments and the mixtures over their priors; which intervals enter it, with what weight, is
:mod:`canary_checks.stats.sequential` and :mod:`canary_checks.stats.tempering`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import polynomial as P
from numpy.typing import NDArray
from scipy import special

__all__ = ["ORDER", "PRIOR_CENTRE", "PRIOR_SCALE", "Likelihood"]

PRIOR_CENTRE = math.log(2.0 / 1.1)
"""Centre of the mixing prior on the log ratio above the margin (u = θ₁ − θ₀): a regression of about 2× stable at
the default margin — the size that matters (statistics.worse_ratio) — so that one is found soonest."""
PRIOR_SCALE = 0.4
"""Its spread: weight from just above the margin to about 4× it; larger regressions win by their own evidence."""

_BIN = 0.1
ORDER = 6
_LIMIT = 40.0
"""|log ratio| beyond which a bound is reported open-ended (0 or ∞)."""


def _sigma_derivative_polys() -> list[NDArray[np.float64]]:
    """Coefficients (in s = expit(x)) of the k-th derivative of softplus, k = 1 … ORDER + 3."""
    s_one_minus_s = np.array([0.0, 1.0, -1.0])
    polys = [np.array([0.0, 1.0])]  # softplus' = expit
    for _ in range(ORDER + 2):
        polys.append(P.polymul(P.polyder(polys[-1]), s_one_minus_s))
    return polys


_DPOLY = _sigma_derivative_polys()
_DEGREE = max(len(p) for p in _DPOLY) - 1
_FACT = np.array([math.factorial(k) for k in range(ORDER + 1)], dtype=np.float64)


@dataclass(eq=False)
class Likelihood:
    """``l(θ) = θ·a − Σ_bins Σ_k m_k/k! · softplus⁽ᵏ⁾(θ + c̄)``: the tempered conditional log-likelihood."""

    a: float = 0.0
    bins: dict[int, NDArray[np.float64]] = field(default_factory=dict)
    _arrays_kept: tuple[NDArray[np.float64], NDArray[np.float64]] | None = field(default=None, init=False, repr=False)
    _coefs: dict[int, NDArray[np.float64]] = field(default_factory=dict, init=False, repr=False)
    """The bins as arrays and each derivative order's coefficients in expit's powers: they depend on the bins alone
    (not on θ), so they are kept until the next :meth:`add` (a mode's Newton steps and a bisection ask again)."""

    def add(self, x: float, e: float, c: float, eta: float) -> None:
        b = round(c / _BIN)
        d = c - b * _BIN
        moments = self.bins.setdefault(b, np.zeros(ORDER + 1))
        moments += eta * e * d ** np.arange(ORDER + 1)
        self.a += eta * x
        self._arrays_kept = None
        self._coefs.clear()

    @property
    def empty(self) -> bool:
        return not self.bins or all(m[0] <= 0 for m in self.bins.values())

    def _arrays(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The bins' centres and their moments (a row each), in order."""
        if self._arrays_kept is None:
            keys = sorted(self.bins)
            moments = np.array([self.bins[k] for k in keys]).reshape(len(keys), -1)
            self._arrays_kept = np.array([k * _BIN for k in keys]), moments
        return self._arrays_kept

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
            f = np.einsum("gbj,bj->g", powers, self._coefficients(d, m))
            if d == 0:
                f = f + (np.logaddexp(0.0, x) * m[None, :, 0]).sum(axis=1)
                out.append(np.asarray(th * self.a - f, dtype=np.float64))
            else:
                out.append(np.asarray((self.a if d == 1 else 0.0) - f, dtype=np.float64))
        return out

    def _coefficients(self, d: int, m: NDArray[np.float64]) -> NDArray[np.float64]:
        """The ``d``-th derivative's coefficients in expit's powers, per bin (``m``: the bins' moments, in order)."""
        coef = self._coefs.get(d)
        if coef is None:
            coef = np.zeros((len(m), _DEGREE + 1))
            for k in range(ORDER + 1):
                if k + d >= 1:
                    poly = _DPOLY[k + d - 1]
                    coef[:, : len(poly)] += (m[:, k] / _FACT[k])[:, None] * poly[None, :]
            self._coefs[d] = coef
        return coef

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
        u = _U_GRID
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


_U_GRID = _u_grid()
_U_GRID.setflags(write=False)  # made once, shared by every look


def _log_prior(u: NDArray[np.float64]) -> NDArray[np.float64]:
    """log density of the mixing prior on u = θ₁ − θ₀ > 0: N(PRIOR_CENTRE, PRIOR_SCALE²) truncated to u > 0."""
    z = (u - PRIOR_CENTRE) / PRIOR_SCALE
    return np.asarray(-0.5 * z * z - _LOG_PRIOR_NORM, dtype=np.float64)


_LOG_PRIOR_NORM = math.log(PRIOR_SCALE * math.sqrt(2 * math.pi)) + float(special.log_ndtr(PRIOR_CENTRE / PRIOR_SCALE))
"""log of the truncated prior's normalisation, computed once (not at every look)."""


def _log_trapezoid(x: NDArray[np.float64], log_y: NDArray[np.float64]) -> float:
    if x.size < 2:
        return -math.inf
    dx = np.diff(x)
    pair = np.logaddexp(log_y[:-1], log_y[1:]) - math.log(2)
    return float(np.logaddexp.reduce(pair + np.log(dx)))
