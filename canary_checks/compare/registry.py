"""The comparisons: each one's key under ``statistics:``, the test of suites/gate/test_compare.py that runs it, and
the custom ones a config adds.

Seam: names and definitions only; how a comparison is read and decided is :mod:`canary_checks.compare.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass

from canary_checks.config import ComparisonSettings, CustomComparison, Statistics

__all__ = ["COMPARISONS", "Comparison", "comparisons_in_family", "comparisons_of"]


@dataclass(frozen=True)
class Comparison:
    key: str
    """Its key under `statistics:` in the config."""
    family: str
    """Which test in suites/gate/test_compare.py runs it (test_<family>_vs_stable)."""
    variant: str
    quantile: float = 0.0
    custom: CustomComparison | None = None
    """A custom comparison's definition (under `statistics:` in the config); None for a built-in one."""

    @property
    def name(self) -> str:
        return f"compare_{self.key}"

    def settings(self, statistics: Statistics) -> ComparisonSettings:
        settings: ComparisonSettings = getattr(statistics, self.key)
        return settings


COMPARISONS: dict[str, Comparison] = {
    c.name: c
    for c in (
        Comparison("errors", "errors", "error_rate"),
        Comparison("latency_p50", "latency", "p50", 0.50),
        Comparison("latency_p95", "latency", "p95", 0.95),
        Comparison("latency_p99", "latency", "p99", 0.99),
        Comparison("cpu", "resources", "cpu"),
        Comparison("memory", "resources", "memory"),
    )
}
"""Every comparison, by its gate name (compare_<key>)."""

assert {c.key for c in COMPARISONS.values()} == {
    k for k, f in Statistics.model_fields.items() if f.annotation in (ComparisonSettings, "ComparisonSettings")
}, "every configured comparison has exactly one definition"


def comparisons_of(statistics: Statistics) -> dict[str, Comparison]:
    """Every comparison in force: the built-in ones and the custom ones under `statistics:` (family ``custom``:
    numerator and denominator per side, judged by the sequential test of ``errors``)."""
    custom = {f"compare_{key}": Comparison(key, "custom", key, custom=c) for key, c in statistics.custom().items()}
    return {**COMPARISONS, **custom}


def comparisons_in_family(family: str) -> list[Comparison]:
    found = [c for c in COMPARISONS.values() if c.family == family]
    if not found:
        raise KeyError(f"no comparison family {family!r}; families: errors, latency, resources")
    return found
