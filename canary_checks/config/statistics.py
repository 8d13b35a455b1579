"""The canary-versus-stable comparisons' settings: :class:`Statistics`, one :class:`ComparisonSettings` a
built-in comparison, custom comparisons and the multiplicity correction.

Seam: the models only; the statistics are :mod:`canary_checks.stats`, the comparisons :mod:`canary_checks.compare`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from canary_checks.config.gates import _custom_entries, check_template
from canary_checks.config.units import RATIO, Duration, NoDataPolicy, Range, Severity, _Model


class Correction(StrEnum):
    FWER = "fwer"
    """Holm: the chance that any comparison of a stage fails a healthy canary stays at or under 1 − confidence."""
    FDR = "fdr"
    """Benjamini–Hochberg: the expected share of false alarms among failing comparisons stays at or under it."""
    NONE = "none"
    """Each comparison on its own."""


class ComparisonSettings(_Model):
    margin: Annotated[float, RATIO]
    """Allowed ratio canary / stable: a comparison fails only when the canary is surely worse than margin × stable
    (errors: error rate; latency: share of requests slower than stable's quantile; cpu: CPU seconds per request;
    memory: working set per pod)."""
    margin_delta: Annotated[float, Range("percentage points", 0, 100, high_open=True)] = 0.0
    """Absolute allowance in percentage points of requests (errors; latency: requests slower than stable's
    quantile), together with margin: the canary is acceptable up to max(margin × stable, stable + margin_delta),
    the absolute part never beyond 1.5 × stable. It spares services with a tiny error rate a failure over a
    difference no one would notice; sequential comparisons only."""
    severity: Severity
    """critical fails the stage (and inconclusive holds it); warning fails only in strict mode; info is reported."""
    on_no_data: NoDataPolicy = NoDataPolicy.FAIL
    """What no data means for this comparison: fail (default) or skip. Never a pass."""
    enabled: bool = True
    """False leaves the comparison out of the suite."""


class CustomComparison(ComparisonSettings):
    """A canary-vs-stable comparison of your own, written under `statistics:` next to the built-in ones: the share
    numerator / denominator of each side, judged by the sequential test of `errors` (docs/gates.md#custom-gates)."""

    numerator: Annotated[str, AfterValidator(check_template)]
    """PromQL template counting the events in $window (e.g. failed checkouts), evaluated for each side ($workload,
    $pods are the side's); a subset of the denominator's."""
    denominator: Annotated[str, AfterValidator(check_template)]
    """PromQL template counting every trial in $window (e.g. all checkouts), for each side."""
    description: str = ""
    """What the share is, in words, for messages ("checkout failure rate"); default: the comparison's name."""
    margin: Annotated[float, RATIO] = 1.0
    """Allowed ratio of the canary's share to stable's: fails only when the canary is surely worse than margin ×
    stable."""
    severity: Severity = Severity.CRITICAL
    """critical fails the stage (and the runner polls it during the stage); warning fails only in strict mode;
    info is reported only."""


def _comparison(margin: float, severity: Severity, margin_delta: float = 0.0) -> Any:
    return Field(
        default_factory=lambda: ComparisonSettings(margin=margin, margin_delta=margin_delta, severity=severity)
    )


class Statistics(_Model):
    """Canary-versus-stable comparisons (suites/gate/test_compare.py): SciPy tests that stay valid when checked at
    every interval and every stage. Any other key is a custom comparison (:class:`CustomComparison`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, CustomComparison] = Field(init=False)

    confidence: Annotated[float, Range("a confidence", 0.5, 1, low_open=True, high_open=True)] = 0.95
    """Confidence of every decision: a healthy canary fails a stage's comparisons with probability at most
    1 − confidence, however often they are checked."""
    correction: Correction = Correction.FWER
    """How the stage's comparisons share that error: fwer (Holm), fdr (Benjamini–Hochberg) or none."""
    worse_ratio: Annotated[float, Range("a ratio", 1, low_open=True)] = 2.0
    """A regression that matters, as a ratio to stable: a comparison passes only once the data could have revealed
    a canary this much worse (or worse_delta above stable, whichever is larger); before that it is inconclusive."""
    worse_delta: Annotated[float, Range("percentage points", 0, 100, low_open=True)] = 1.0
    """A regression that matters, in percentage points of requests (errors, or requests slower than stable's
    quantile)."""
    evidence_file: Path = Path(".canary-checks/evidence-{namespace}-{service}.json")
    """Where the sequential evidence accumulates from the canary's start across checks and stages (relative to the
    config file; {namespace} and {service} are replaced). The runner keeps its own per rollout."""
    sample_interval: Duration = 30.0
    """Spacing of the CPU and memory samples the Mann–Whitney comparisons take (at least twice Prometheus' scrape
    interval), over the evidence so far (at least the window, at most an hour)."""
    evidence_expires: Duration = 3600.0
    """Evidence older than this (since its last check) is taken to belong to an earlier canary and started afresh."""
    errors: ComparisonSettings = _comparison(1.1, Severity.CRITICAL, 0.05)
    """Canary error rate against stable's (anytime-valid mixture test on error counts, robust to bursts). Margin
    1.1 and 0.05 points: a canary within 10 % of stable (or 0.05 points, at most 1.5×, when stable's rate is under
    0.5 %) is not a regression at any traffic; one at 2× still fails within minutes."""
    latency_p50: ComparisonSettings = _comparison(1.5, Severity.WARNING)
    """Canary median latency against stable's (share of requests slower than stable's p50, and time-uniform
    quantile bounds from the histogram buckets)."""
    latency_p95: ComparisonSettings = _comparison(1.5, Severity.WARNING)
    """Canary p95 latency against stable's (as latency_p50)."""
    latency_p99: ComparisonSettings = _comparison(1.5, Severity.WARNING)
    """Canary p99 latency against stable's (as latency_p50). A p99 needs many requests to judge: make it critical
    (an inconclusive result then holds the stage) when the canary gets thousands of requests per step."""
    cpu: ComparisonSettings = _comparison(1.25, Severity.WARNING)
    """CPU seconds per request, canary against stable (Kayenta-style Mann–Whitney over the window's samples)."""
    memory: ComparisonSettings = _comparison(1.25, Severity.INFO)
    """Working set per pod, canary against stable (Kayenta-style Mann–Whitney over the window's samples)."""

    @model_validator(mode="before")
    @classmethod
    def _custom(cls, value: Any) -> Any:
        return _custom_entries(value, where="statistics", builtins=cls.model_fields, keys=("numerator", "denominator"))

    def custom(self) -> dict[str, CustomComparison]:
        """The custom comparisons, by name."""
        return dict(self.__pydantic_extra__ or {})

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence
