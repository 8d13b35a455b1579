"""The reads from Prometheus of the sequential comparisons: each comparison's queries, the earlier read that fixes a
latency comparison's bucket bound, and the samples turned into counts and histograms.

Seam: queries and samples in, numbers out; the resource comparisons read their own series
(:mod:`canary_checks.compare.resources`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from canary_checks.compare.evidence import Evidence
from canary_checks.compare.registry import Comparison
from canary_checks.errors import PrometheusError
from canary_checks.prometheus import MetricsSource, Sample
from canary_checks.stats import Histogram

__all__ = ["Plan", "bound_at", "buckets", "plan_of", "read_before", "total"]


@dataclass
class Plan:
    comparison: Comparison
    queries: dict[str, str]


def buckets(samples: list[Sample]) -> Histogram:
    by_le: dict[float, float] = {}
    for s in samples:
        try:
            le = float(s.labels.get("le", "nan"))
        except ValueError:
            continue
        if not math.isnan(le):
            by_le[le] = by_le.get(le, 0.0) + s.value
    return Histogram.from_buckets(by_le)


def total(samples: list[Sample]) -> float | None:
    return sum(s.value for s in samples) if samples else None


def bound_at(h: Histogram, q: float) -> float | None:
    """The stable's q-quantile bucket bound: the first bound with at least a share q of requests at or under it."""
    if h.problem() or h.total == 0:
        return None
    for bound, share in zip(h.bounds, h.cdf(), strict=True):
        if share >= q:
            return bound
    return None


def plan_of(source: MetricsSource, c: Comparison, *, interval: float, since: float) -> Plan:
    """The queries of one comparison: each side's counts over the interval (latency: its buckets over the interval
    and since the evidence started)."""
    q: dict[str, str] = {}
    for arm, side in source.config.arms:  # stable's arm reads the baseline when there is one
        if c.family == "errors":
            q[f"{arm}_requests"] = source.render("requests", side=side, window=interval)
            q[f"{arm}_errors"] = source.render("errors", side=side, window=interval)
        elif c.custom is not None:  # the same counts from the team's own templates
            where = f"statistics.{c.key}"
            q[f"{arm}_requests"] = source.render_template(
                c.custom.denominator, side=side, window=interval, where=f"{where}.denominator"
            )
            q[f"{arm}_errors"] = source.render_template(
                c.custom.numerator, side=side, window=interval, where=f"{where}.numerator"
            )
        elif c.family == "latency" and source.render("buckets", side=side):
            q[f"{arm}_step"] = source.render("buckets", side=side, window=interval)
            q[f"{arm}_since"] = source.render("buckets", side=side, window=since)
    return Plan(c, q)


def read_before(
    source: MetricsSource, plans: Iterable[Plan], evidence: Evidence, *, before: float
) -> dict[str, list[Sample] | PrometheusError]:
    """Latency comparisons fix their bucket bound from stable's data before the evidence: one earlier read (none when
    every bound is fixed already)."""
    need_bound = [p for p in plans if p.comparison.family == "latency" and p.comparison.key not in evidence.bounds]
    earlier: dict[str, list[Sample] | PrometheusError] = {}
    if need_bound and any(p.queries for p in need_bound):
        earlier_q = source.render("buckets", side=source.config.reference)
        earlier = source.query_many([earlier_q], at=before)
    return earlier
