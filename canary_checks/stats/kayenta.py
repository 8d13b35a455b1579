"""A Kayenta-compatible judge (Spinnaker's NetflixACAJudge), for teams moving from Spinnaker.

Per metric: Mann–Whitney U on the per-interval values of experiment (canary) and control (stable), with the
Hodges–Lehmann shift and its confidence interval computed as R's ``wilcox.test(experiment, control, conf.int=TRUE)``
(exact when both samples are under 50 and there are no ties; otherwise the normal approximation with continuity
correction and the interval found by root search). Classification as Kayenta's MannWhitneyClassifier:

* ``High`` when the direction allows an increase and the interval's lower end is above ``tolerance`` × |estimate|;
* ``Low`` when it allows a decrease and the upper end is below −``tolerance`` × |estimate|;
* an effect-size bound on the mean ratio (experiment mean / control mean) turns a High/Low smaller than
  ``allowed_increase`` / ``allowed_decrease`` back into ``Pass``; beyond ``critical_increase`` it is critical;
* ``Nodata`` when a side has no values (after the NaN strategy); identical samples ``Pass``.

Scoring (:func:`score`) as Kayenta's WeightedSumScorer: per group, percent of its classified metrics that pass; the
summary is the weighted sum over groups (groups without a weight share what is left of 100); a critical metric that
does not pass makes the score 0. ``Pass`` at or above ``pass_threshold``, ``Marginal`` at or above ``marginal``.

These are fixed-horizon tests: checked at every interval they inflate false alarms (bench/decision_quality.py
measures by how much). The gates' own comparisons use the anytime-valid tests of :mod:`canary_checks.stats.counts`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = ["Classification", "HodgesLehmann", "JudgeResult", "MetricResult", "classify", "score", "wilcox_test"]

Direction = Literal["increase", "decrease", "either"]
NanStrategy = Literal["remove", "replace"]
Classification = Literal["Pass", "High", "Low", "Nodata"]


@dataclass(frozen=True)
class HodgesLehmann:
    """What R's ``wilcox.test(x, y, conf.int=TRUE)`` reports for two samples."""

    statistic: float
    """W: the Mann–Whitney U of ``x``."""
    p_value: float
    estimate: float
    """Difference in location (x − y)."""
    interval: tuple[float, float]
    exact: bool


@functools.lru_cache(maxsize=256)
def _qwilcox_table(m: int, n: int) -> NDArray[np.float64]:
    """P(W ≤ w) for w = 0 … m·n under the null, exactly: the coefficients of the Gaussian binomial [m+n choose n]_q,
    built as ∏ (1 − q^(m+i)) / (1 − q^i) in integers."""
    poly = [1]
    for i in range(1, n + 1):
        grown = poly + [0] * m  # degree m·i
        out = grown.copy()
        for k in range(m + i, len(out)):
            out[k] -= grown[k - m - i]
        for k in range(i, len(out)):
            out[k] += out[k - i]
        poly = out
    total = sum(poly)
    running, cdf = 0, []
    for c in poly:
        running += c
        cdf.append(running / total)
    return np.asarray(cdf, dtype=np.float64)


def _qwilcox(p: float, cdf: NDArray[np.float64]) -> int:
    """R's qwilcox: the smallest w with P(W ≤ w) ≥ p."""
    return int(np.searchsorted(cdf, p * (1 - 64 * np.finfo(float).eps)))


def _ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks, ties given their average (``scipy.stats.rankdata``'s default, without importing scipy.stats:
    a second of a gate run's start)."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    new = np.concatenate(([True], ordered[1:] != ordered[:-1]))  # where a run of equal values starts
    bounds = np.append(np.flatnonzero(new), len(values))
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((bounds[:-1] + 1 + bounds[1:]) / 2)[np.cumsum(new) - 1]
    return ranks


def _continuity(z: float, alternative: str) -> float:
    """R's continuity correction of the normal approximation, towards zero for a two-sided test."""
    return {"two.sided": math.copysign(0.5, z) if z else 0.0, "greater": 0.5, "less": -0.5}[alternative]


def wilcox_test(
    x: ArrayLike, y: ArrayLike, *, confidence: float = 0.95, alternative: str = "two.sided", correct: bool = True
) -> HodgesLehmann:
    """Two-sample Wilcoxon rank-sum test with the Hodges–Lehmann estimate and interval, as R computes them."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    nx, ny = len(xs), len(ys)
    if nx == 0 or ny == 0:
        raise ValueError("both samples need at least one value")
    ranks = _ranks(np.concatenate([xs, ys]))
    w = float(ranks[:nx].sum() - nx * (nx + 1) / 2)
    ties = len(np.unique(ranks)) < len(ranks)
    alpha = 1 - confidence
    if nx < 50 and ny < 50 and not ties:
        cdf = _qwilcox_table(nx, ny)

        def p_le(k: float) -> float:
            return 0.0 if k < 0 else float(cdf[min(int(k), len(cdf) - 1)])

        upper = 1 - p_le(w - 1)
        if alternative == "two.sided":
            p = min(1.0, 2 * (upper if w > nx * ny / 2 else p_le(w)))
        else:
            p = upper if alternative == "greater" else p_le(w)
        diffs = np.sort(np.subtract.outer(xs, ys).ravel())
        if alternative == "two.sided":
            qu = _qwilcox(alpha / 2, cdf) or 1
            ql = nx * ny - qu
            interval = (float(diffs[qu - 1]), float(diffs[ql]))
        elif alternative == "greater":
            qu = _qwilcox(alpha, cdf) or 1
            interval = (float(diffs[qu - 1]), math.inf)
        else:
            qu = _qwilcox(alpha, cdf) or 1
            interval = (-math.inf, float(diffs[nx * ny - qu]))
        return HodgesLehmann(w, p, float(np.median(diffs)), interval, exact=True)

    def sigma(r: NDArray[np.float64]) -> float:
        _, t = np.unique(r, return_counts=True)
        n = nx + ny
        return math.sqrt(nx * ny / 12 * ((n + 1) - float((t**3 - t).sum()) / (n * (n - 1))))

    z = w - nx * ny / 2
    s = sigma(ranks)
    corr = _continuity(z, alternative) if correct else 0.0
    zs = (z - corr) / s if s > 0 else 0.0
    p = {
        "less": float(special.ndtr(zs)),
        "greater": float(special.ndtr(-zs)),
        "two.sided": float(2 * min(special.ndtr(zs), special.ndtr(-zs))),
    }[alternative]

    def wdiff(d: float, zq: float) -> float:
        r = _ranks(np.concatenate([xs - d, ys]))
        dz = float(r[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2)
        c = _continuity(dz, alternative)
        sd = sigma(r)
        if sd == 0:
            raise ValueError("cannot compute a confidence interval when all observations are tied")
        return (dz - (c if correct else 0.0)) / sd - zq

    lo_d, hi_d = float(xs.min() - ys.max()), float(xs.max() - ys.min())

    def root(zq: float) -> float:
        f_lo, f_hi = wdiff(lo_d, zq), wdiff(hi_d, zq)
        if f_lo <= 0:
            return lo_d
        if f_hi >= 0:
            return hi_d
        from scipy import optimize  # half a second to import: only when an interval needs a root

        return float(optimize.brentq(wdiff, lo_d, hi_d, args=(zq,), xtol=1e-4))

    if alternative == "two.sided":
        interval = (root(-float(special.ndtri(alpha / 2))), root(float(special.ndtri(alpha / 2))))
    elif alternative == "greater":
        interval = (root(-float(special.ndtri(alpha))), math.inf)
    else:
        interval = (-math.inf, root(float(special.ndtri(alpha))))
    estimate = root(0.0) if lo_d < hi_d else lo_d
    return HodgesLehmann(w, p, estimate, interval, exact=False)


@dataclass(frozen=True)
class MetricResult:
    classification: Classification
    estimate: float = math.nan
    """Hodges–Lehmann shift, experiment − control, in the metric's unit."""
    interval: tuple[float, float] = (math.nan, math.nan)
    p_value: float = math.nan
    ratio: float = math.nan
    """Effect size: experiment mean / control mean."""
    critical: bool = False
    """A High/Low beyond the critical effect size: fails the whole judgement."""
    reason: str = ""
    name: str = ""
    groups: tuple[str, ...] = ()


def classify(
    control: ArrayLike,
    experiment: ArrayLike,
    direction: Direction = "either",
    confidence: float = 0.95,
    tolerance: float = 0.10,
    *,
    nan_strategy: NanStrategy = "remove",
    allowed_increase: float = 1.0,
    allowed_decrease: float = 1.0,
    critical_increase: float | None = None,
    critical_decrease: float | None = None,
) -> MetricResult:
    """Classify one metric: ``Pass``, ``High``, ``Low`` or ``Nodata`` (see the module docstring)."""
    if direction not in ("increase", "decrease", "either"):
        raise ValueError(f"direction must be increase, decrease or either; got {direction!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1; got {confidence!r}")
    c, e = _clean(control, nan_strategy), _clean(experiment, nan_strategy)
    if c.size == 0 or e.size == 0:
        side = "control" if c.size == 0 else "experiment"
        return MetricResult("Nodata", reason=f"the {side} has no values")
    ratio = _mean_ratio(e, c)
    if c.size == e.size and np.array_equal(np.sort(c), np.sort(e)):
        return MetricResult("Pass", estimate=0.0, interval=(0.0, 0.0), p_value=1.0, ratio=ratio)
    try:
        hl = wilcox_test(e, c, confidence=confidence)
    except ValueError as err:  # every value tied: no shift can be estimated, none is seen
        return MetricResult("Pass", estimate=0.0, p_value=1.0, ratio=ratio, reason=str(err))
    bound = tolerance * abs(hl.estimate)

    def result(classification: Classification, critical: bool = False, reason: str = "") -> MetricResult:
        return MetricResult(classification, hl.estimate, hl.interval, hl.p_value, ratio, critical, reason)

    if direction in ("increase", "either") and hl.interval[0] > bound:
        if ratio < allowed_increase:
            return result("Pass", reason=f"higher, but by less than the allowed ratio {allowed_increase:g}")
        return result("High", critical=critical_increase is not None and ratio >= critical_increase)
    if direction in ("decrease", "either") and hl.interval[1] < -bound:
        if ratio > allowed_decrease:
            return result("Pass", reason=f"lower, but not below the allowed ratio {allowed_decrease:g}")
        return result("Low", critical=critical_decrease is not None and ratio <= critical_decrease)
    return result("Pass")


def _clean(values: ArrayLike, strategy: NanStrategy) -> NDArray[np.float64]:
    a = np.asarray(values, dtype=float).ravel()
    if strategy == "remove":
        return np.asarray(a[~np.isnan(a)], dtype=np.float64)
    if strategy == "replace":
        return np.asarray(np.nan_to_num(a, nan=0.0), dtype=np.float64)
    raise ValueError(f"nan_strategy must be remove or replace; got {strategy!r}")


def _mean_ratio(e: NDArray[np.float64], c: NDArray[np.float64]) -> float:
    mc = float(c.mean())
    if mc == 0:
        return 1.0 if float(e.mean()) == 0 else math.inf
    return float(e.mean()) / mc


@dataclass(frozen=True)
class GroupScore:
    name: str
    score: float
    """Percent of the group's classified metrics that pass."""
    no_data: bool
    counts: Mapping[str, int]


@dataclass(frozen=True)
class JudgeResult:
    score: float
    """0–100."""
    classification: Literal["Pass", "Marginal", "Fail"]
    groups: tuple[GroupScore, ...]
    critical_failures: tuple[str, ...] = field(default_factory=tuple)


def score(
    results: Sequence[MetricResult],
    *,
    group_weights: Mapping[str, float] | None = None,
    marginal: float = 75.0,
    pass_threshold: float = 95.0,
    critical_metrics: Sequence[str] = (),
) -> JudgeResult:
    """Weighted score over metric groups, as Kayenta's WeightedSumScorer (see the module docstring).

    ``critical_metrics`` names metrics that fail the judgement unless they pass; a result's own ``critical`` (its
    effect beyond the critical size) does the same."""
    if not 0 <= marginal <= pass_threshold <= 100:
        raise ValueError(f"need 0 ≤ marginal ≤ pass ≤ 100; got marginal {marginal}, pass {pass_threshold}")
    weights = dict(group_weights or {})
    by_group: dict[str, list[str]] = {}
    for r in results:
        for g in r.groups or ("default",):
            by_group.setdefault(g, []).append(r.classification)
    groups = []
    for name, labels in by_group.items():
        counts = {label: labels.count(label) for label in ("Pass", "High", "Low", "Nodata")}
        classified = counts["Pass"] + counts["High"] + counts["Low"]
        groups.append(
            GroupScore(name, 100.0 * counts["Pass"] / classified if classified else 0.0, classified == 0, counts)
        )
    unweighted = [g.name for g in groups if g.name not in weights]
    share = (100.0 - sum(weights.values())) / len(unweighted) if unweighted else 0.0
    total = sum(g.score * weights.get(g.name, share) / 100.0 for g in groups if not g.no_data)
    critical = tuple(
        r.name or "?" for r in results if (r.critical or r.name in critical_metrics) and r.classification != "Pass"
    )
    if critical:
        total = 0.0
    verdict: Literal["Pass", "Marginal", "Fail"] = (
        "Pass" if total >= pass_threshold else "Marginal" if total >= marginal else "Fail"
    )
    return JudgeResult(total, verdict, tuple(groups), critical)
