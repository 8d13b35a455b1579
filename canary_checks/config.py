"""The configuration: one YAML file (default ``canary.yaml``), validated by pydantic.

Every threshold's default lives here and only here; gates, docs and alert rules read it from :data:`Gates`.
A mistake gives one :class:`~canary_checks.errors.ConfigError` naming the file, the key path, the bad value and
what is expected.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined, core_schema

from canary_checks.errors import ConfigError, redact_url

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_FAILURE_CODES",
    "SERVICES_KEY",
    "BasicAuth",
    "BuiltinGate",
    "CanaryConfig",
    "ComparisonSettings",
    "Correction",
    "CountGate",
    "CustomComparison",
    "CustomGate",
    "Fails",
    "GateSettings",
    "Gates",
    "KubernetesSettings",
    "Mesh",
    "MillisecondsGate",
    "NoDataPolicy",
    "NotificationSettings",
    "NotificationTarget",
    "PercentGate",
    "PrometheusSettings",
    "Range",
    "RateGate",
    "RatioGate",
    "RolloutSettings",
    "SandboxSettings",
    "Secret",
    "Severity",
    "Statistics",
    "UndecidedPolicy",
    "ValueGate",
    "check_stage_list",
    "config_from",
    "deep_merge",
    "default_of",
    "define_gate",
    "describe_failures",
    "find_config",
    "flag_overrides",
    "load_config",
    "parse_duration",
    "parse_gate_flags",
    "parse_stage",
    "range_of",
    "read_yaml",
    "reference_markdown",
    "require_config",
    "select_service",
    "service_sections",
]

DEFAULT_CONFIG_NAME = "canary.yaml"
CONFIG_ENV = "CANARY_CONFIG"

# Kubernetes name rules: a namespace is a DNS-1123 label, a Deployment name a DNS-1123 subdomain. Always used with
# fullmatch: `$` would also match before a trailing newline.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_FAILURE_CODES = "5.."
"""What a failed request is unless `failure_codes` says otherwise: a 5xx answer (Linkerd: its own classification)."""
# Prometheus regexes are RE2: no lookaround, no backreferences (Python's re would accept them).
_NOT_RE2 = re.compile(r"\(\?(?:[=!>]|<[=!])|\\[1-9]")


class Severity(StrEnum):
    CRITICAL = "critical"
    """Decides rollback: a breach fails the test."""
    WARNING = "warning"
    """Reported; fails the test only in strict mode (``--strict-gates``)."""
    INFO = "info"
    """Reported only; never fails."""


class Mesh(StrEnum):
    ISTIO = "istio"
    LINKERD = "linkerd"
    CUSTOM = "custom"


class NoDataPolicy(StrEnum):
    FAIL = "fail"
    """No data fails the gate ("the canary received no traffic in the window")."""
    SKIP = "skip"
    """No data skips the gate (it is still never a pass)."""


@dataclass(frozen=True)
class Range:
    """The values a number may take, as ``Annotated`` metadata: ``Annotated[float, Range("a percent", 0, 100)]``.

    A value outside it, NaN or infinity is one error that names the key, the value and the range:
    ``gates.error_rate.threshold: expected a percent from 0 to 100; got nan``."""

    what: str
    """What the number is, as the message names it: "a percent", "a count", "milliseconds"."""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """The low end itself is outside (``> low`` rather than ``≥ low``)."""
    high_open: bool = False
    """The high end itself is outside (``< high`` rather than ``≤ high``)."""

    def __str__(self) -> str:
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            if not (self.low_open or self.high_open):
                return f"{self.what} from {low} to {high}"
            return f"{self.what} {'>' if self.low_open else '≥'} {low} and {'<' if self.high_open else '≤'} {high}"
        if self.low is not None:
            return f"{self.what} {'>' if self.low_open else '≥'} {low}"
        if self.high is not None:
            return f"{self.what} {'<' if self.high_open else '≤'} {high}"
        return f"{self.what} (a finite number)"

    def __contains__(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def check(self, value: float) -> float:
        """``value`` if it is in range, else the ValueError that says so."""
        if value not in self:
            raise ValueError(f"expected {self}; got {value!r}")
        return value

    def _validate(self, value: Any, handler: Callable[[Any], Any]) -> Any:
        # NaN and infinity (also written "nan", "inf", "1e999") get this range's message, not the parser's own
        if isinstance(value, str | float):
            try:
                number = float(value)
            except ValueError:
                number = 0.0  # not a number at all: the parser says so
            if not math.isfinite(number):
                raise ValueError(f"expected {self}; got {value!r}")
        return self.check(handler(value))

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_wrap_validator_function(self._validate, handler(source))


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


PERCENT = Range("a percent", 0, 100)
COUNT = Range("a count", 0)
RATIO = Range("a ratio", 0, low_open=True)
MILLISECONDS = Range("milliseconds", 0)
PER_SECOND = Range("requests per second", 0)
PORT = Range("a TCP port", 1, 65535)
UNIT_RANGES = {"%": PERCENT, "ms": MILLISECONDS, "req/s": PER_SECOND, "count": COUNT, "ratio": RATIO}
"""What a custom gate's threshold may be in a built-in gate's unit."""
DURATION = Range("a duration", 0, low_open=True)
"""What :data:`Duration` takes (written ``30s``, ``5m``, ``1h``, ``250ms`` or as seconds)."""


def parse_duration(value: object) -> float:
    """``30s``, ``5m``, ``1h``, ``250ms`` or a number of seconds → seconds; more than 0 and finite."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30s, 5m or 1h; got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"expected a duration such as 30s, 5m or 1h; got {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds not in DURATION:
        raise ValueError(f"expected {DURATION}, such as 30s, 5m or 1h; got {value!r}")
    return seconds


def parse_stage(value: object) -> int:
    """A stage as written on a command line or in a webhook's metadata: ``25`` or ``25%`` → 25. Whether it is one
    of the configured stages is :meth:`CanaryConfig.check_stages`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip().removesuffix("%") if isinstance(value, str) else ""
    if not text.isdecimal():
        raise ValueError(f"expected a whole percent such as 25; got {value!r}")
    return int(text)


def check_stage_list(value: tuple[int, ...]) -> tuple[int, ...]:
    """Stages as `stages` (and ``run --traffic-steps``) take them: percents from 1 to 100, ascending, ending at 100."""
    if not value:
        raise ValueError("at least one stage is needed, e.g. [5, 25, 50, 100]")
    if any(not 0 < s <= 100 for s in value):
        raise ValueError(f"each stage is a percent from 1 to 100; got {list(value)}")
    if list(value) != sorted(set(value)):
        raise ValueError(f"stages must be strictly ascending; got {list(value)}")
    if value[-1] != 100:
        raise ValueError(f"the last stage must be 100; got {list(value)}")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds; written in YAML as ``30s``, ``5m``, ``1h`` or a plain number of seconds."""


def check_failure_codes(value: str) -> str:
    """A regex of HTTP status codes that Prometheus (RE2, matching whole label values) reads the same way."""
    example = "5.. (5xx), 5..|429 (5xx and Too Many Requests) or [45].. (4xx and 5xx)"
    try:
        pattern = re.compile(value)
    except re.error as e:
        raise ValueError(f"{value!r} is not a regular expression ({e}); write one such as {example}") from None
    if _NOT_RE2.search(value):
        raise ValueError(
            f"{value!r} uses lookaround or a backreference, which Prometheus' RE2 regexes do not support; "
            "list the codes instead, e.g. 50[0-24-9]|5[1-9]. for every 5xx but 503"
        )
    if not any(pattern.fullmatch(str(code)) for code in range(100, 600)):
        raise ValueError(
            f"{value!r} matches no HTTP status code from 100 to 599 (the regex must match the whole code); "
            f"write one such as {example}"
        )
    if pattern.fullmatch("200"):
        raise ValueError(f"{value!r} counts 200 OK as a failure; write one such as {example}")
    return value


def describe_failures(failure_codes: str) -> str:
    """How messages name failed requests: ``5xx``, or ``status <the configured regex>``."""
    return "5xx" if failure_codes == DEFAULT_FAILURE_CODES else f"status {failure_codes}"


def check_namespace(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes namespace "
            "(lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63)"
        )
    return value


def check_workload(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes name "
            "(lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253)"
        )
    return value


class _Model(BaseModel):
    # No NaN or infinity in any number (a NaN threshold compares false with everything: the gate never fails).
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, frozen=True, allow_inf_nan=False)


def range_of(model: type[BaseModel], name: str) -> Range | None:
    """The :class:`Range` a field of ``model`` must be in, if it has one."""
    return next((m for m in model.model_fields[name].metadata if isinstance(m, Range)), None)


class GateSettings(_Model):
    """One gate's settings: a built-in gate's (:class:`BuiltinGate`) or a custom gate's (:class:`CustomGate`)."""

    threshold: float
    """The limit, in the gate's unit (see each gate below); which side of it fails is the gate's own."""
    severity: Severity
    """critical fails the stage; warning fails only in strict mode; info is reported only."""
    on_no_data: NoDataPolicy = NoDataPolicy.FAIL
    """What no data means for this gate: fail (default) or skip. Never a pass."""
    enabled: bool = True
    """False leaves the gate out of the suite."""


class BuiltinGate(GateSettings):
    """A built-in gate's settings. Its unit, and so its threshold's range, is the type of its field in
    :class:`Gates`: :class:`PercentGate`, :class:`MillisecondsGate`, :class:`RateGate`, :class:`CountGate` or
    :class:`RatioGate`."""

    unit: ClassVar[str] = ""
    """The unit of the threshold, as results and reports show it."""


class PercentGate(BuiltinGate):
    unit: ClassVar[str] = "%"
    threshold: Annotated[float, PERCENT]
    """The limit, percent (or percentage points), from 0 to 100."""


class MillisecondsGate(BuiltinGate):
    unit: ClassVar[str] = "ms"
    threshold: Annotated[float, MILLISECONDS]
    """The limit, milliseconds, at least 0."""


class RateGate(BuiltinGate):
    unit: ClassVar[str] = "req/s"
    threshold: Annotated[float, PER_SECOND]
    """The limit, requests per second, at least 0."""


class CountGate(BuiltinGate):
    unit: ClassVar[str] = "count"
    threshold: Annotated[float, COUNT]
    """The limit, a count, at least 0."""


class RatioGate(BuiltinGate):
    unit: ClassVar[str] = "ratio"
    threshold: Annotated[float, RATIO]
    """The limit, a ratio canary / stable, more than 0."""


CUSTOM_PLACEHOLDERS = ("namespace", "service", "workload", "pods", "window")
"""What a custom query template may use: the values the built-in gates' queries take, escaped the same way."""
_CUSTOM_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def check_template(value: str) -> str:
    """A custom PromQL template: only the known placeholders, and one that tells canary from stable."""
    allowed = ", ".join(f"${p}" for p in CUSTOM_PLACEHOLDERS)
    template = string.Template(value)
    if not value.strip():
        raise ValueError("the query is empty; write a PromQL template such as "
                         'sum(rate(checkout_failed_total{namespace="$namespace", pod=~"$pods"}[$window]))')  # fmt: skip
    if not template.is_valid():
        raise ValueError(f"a '$' starts no placeholder; use {allowed}, and write $$ for a literal $")
    unknown = [i for i in template.get_identifiers() if i not in CUSTOM_PLACEHOLDERS]
    if unknown:
        raise ValueError(f"unknown placeholder ${unknown[0]}; use {allowed} (and $$ for a literal $)")
    if not {"workload", "pods"} & set(template.get_identifiers()):
        raise ValueError(
            "the query does not tell canary from stable: select the canary with $workload (its Deployment name) "
            'or $pods (a regex of its pods, for pod=~"$pods")'
        )
    return value


def check_custom_name(
    name: str, *, where: str, builtins: Mapping[str, Any], keys: tuple[str, ...] = ("query",)
) -> None:
    """A custom gate's or comparison's name: a new name (not a built-in one) that test ids, ``--threshold NAME=``
    and CSV columns can carry."""
    if name in builtins:
        raise ValueError(
            f"{name} is a built-in {'gate' if where == 'gates' else 'comparison'}, which takes no "
            f"{' or '.join(keys)}; give yours another name, e.g. {name}_custom"
        )
    if not _CUSTOM_NAME.fullmatch(name) or name.startswith("compare_"):
        raise ValueError(
            f"{name!r}: a custom name is lowercase letters, digits and '_', starting with a letter, at most 63, "
            "and not starting with compare_ (it names test ids, --threshold NAME=VALUE and CSV columns)"
        )


def _custom_entries(value: Any, *, where: str, builtins: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """Check the custom entries of a `gates:` or `statistics:` mapping: every key that is not a built-in one."""
    if not isinstance(value, Mapping):
        return value
    for name, fields in value.items():
        given = isinstance(fields, Mapping) and any(k in fields for k in keys)
        if name in builtins and not given:
            continue
        if name not in builtins and not given:
            close = difflib.get_close_matches(str(name), list(builtins), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            what = "gate" if where == "gates" else "key"
            raise ValueError(
                f"{name!r} is not a built-in {what}{hint}; a custom one needs {' and '.join(keys)} "
                "(docs/gates.md#custom-gates)"
            )
        check_custom_name(str(name), where=where, builtins=builtins, keys=keys)
    return value


class Fails(StrEnum):
    ABOVE = "above"
    """The value fails above the threshold (an error ratio, a lag, a latency)."""
    BELOW = "below"
    """The value fails below the threshold (a success ratio, a throughput)."""


class ValueGate(GateSettings):
    """A threshold on one value with its own unit and failing side: a custom gate without its query (what the
    ``canary_gate`` fixture's ``record`` judges a value computed in a test by)."""

    fails: Fails
    """Which side of the threshold fails: above or below."""
    threshold: float
    """The limit, in `unit`."""
    unit: str = ""
    """The value's unit as messages, the summary and reports show it (%, s, messages). The built-in gates' units
    bound the threshold as theirs: % from 0 to 100; ms, req/s and count at least 0; ratio more than 0."""
    description: str = ""
    """What the value is, in words, for messages ("checkout failure ratio"); default: the gate's name."""
    severity: Severity = Severity.CRITICAL
    """critical fails the stage (and the runner polls it during the stage); warning fails only in strict mode;
    info is reported only."""

    @model_validator(mode="after")
    def _in_range(self) -> ValueGate:
        bounds = UNIT_RANGES.get(self.unit)
        if bounds is not None and self.threshold not in bounds:
            raise ValueError(f"threshold: expected {bounds} (unit {self.unit}); got {self.threshold:g}")
        return self


class CustomGate(ValueGate):
    """A gate of your own, written under `gates:` next to the built-in ones (docs/gates.md#custom-gates)."""

    query: Annotated[str, AfterValidator(check_template)]
    """PromQL template of the canary's value. $namespace, $service, $workload (the canary Deployment), $pods (a regex
    of its pods) and $window are replaced, checked and escaped as in the built-in gates; $$ is a literal $. Several
    series: the worst one decides."""


def _gate(threshold: float, severity: Severity, **more: Any) -> Any:
    """A gate's defaults, validated as the field's type (its unit) when a Gates is made."""
    return Field(default_factory=lambda: {"threshold": threshold, "severity": severity, **more}, validate_default=True)


class Gates(_Model):
    """Thresholds of every gate, with the original system's defaults; any other key is a custom gate
    (:class:`CustomGate`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, CustomGate] = Field(init=False)

    error_rate: PercentGate = _gate(5.0, Severity.CRITICAL)
    """Canary requests that failed (`failure_codes`: 5xx by default), percent of canary requests; fails above."""
    success_rate: PercentGate = _gate(95.0, Severity.CRITICAL)
    """Canary requests that did not fail (any answer but `failure_codes`, so 4xx succeed by default: 100 − the error
    rate), percent; fails below."""
    latency_p95: MillisecondsGate = _gate(500.0, Severity.WARNING)
    """Canary 95th percentile latency, milliseconds; fails above."""
    latency_p99: MillisecondsGate = _gate(1000.0, Severity.CRITICAL)
    """Canary 99th percentile latency, milliseconds; fails above."""
    cpu: PercentGate = _gate(80.0, Severity.WARNING)
    """Busiest canary pod's CPU use, percent of its CPU limit; fails above."""
    memory: PercentGate = _gate(80.0, Severity.WARNING)
    """Busiest canary pod's working-set memory, percent of its memory limit; fails above."""
    error_rate_vs_stable: RatioGate = _gate(2.0, Severity.WARNING)
    """Canary error rate divided by stable's (a ratio); fails above."""
    latency_vs_stable: RatioGate = _gate(1.5, Severity.WARNING)
    """Canary p95 latency divided by stable's (a ratio); fails above."""
    memory_vs_stable: RatioGate = _gate(1.5, Severity.INFO)
    """Canary working set per pod divided by stable's (a ratio); fails above."""
    traffic_received: RateGate = _gate(0.0, Severity.WARNING)
    """Canary request rate, requests per second; fails at or below."""
    traffic_split: PercentGate = _gate(10.0, Severity.WARNING)
    """Tolerance, percentage points: fails when the canary's share of requests is further than this from the
    stage, or when the canary carries the majority before the 50 % stage."""
    pods_ready: PercentGate = _gate(100.0, Severity.CRITICAL)
    """Canary pods ready, percent of the canary Deployment's desired replicas; fails below."""
    restarts: CountGate = _gate(0.0, Severity.CRITICAL)
    """Canary container restarts within the window, a count; fails above."""
    crash_loop: CountGate = _gate(0.0, Severity.CRITICAL)
    """Canary containers waiting in CrashLoopBackOff (or ImagePullBackOff, ErrImagePull,
    CreateContainerConfigError), a count; fails above."""
    firing_alerts: CountGate = _gate(0.0, Severity.CRITICAL, on_no_data=NoDataPolicy.SKIP)
    """Critical Canary* alerts of manifests/monitoring firing for this service, a count; fails above. Skipped where
    Prometheus does not have those rules loaded."""
    kube_pods_ready: PercentGate = _gate(100.0, Severity.CRITICAL)
    """Kubernetes API: canary pods Ready, percent of the Deployment's desired replicas; fails below."""
    kube_restarts: CountGate = _gate(0.0, Severity.CRITICAL)
    """Kubernetes API: restarts of the canary's containers since its pods started, a count; fails above."""
    kube_waiting: CountGate = _gate(0.0, Severity.CRITICAL)
    """Kubernetes API: canary containers waiting for a bad reason (CrashLoopBackOff, ImagePullBackOff,
    ErrImagePull, CreateContainerConfigError, ...), a count; fails above."""
    kube_readiness_probes: CountGate = _gate(0.0, Severity.WARNING)
    """Kubernetes API: readiness probe failures of the canary's pods (Unhealthy events), a count; fails above."""
    kube_liveness_probes: CountGate = _gate(0.0, Severity.CRITICAL)
    """Kubernetes API: liveness probe failures of the canary's pods (Unhealthy events), a count; fails above."""

    @model_validator(mode="before")
    @classmethod
    def _custom(cls, value: Any) -> Any:
        return _custom_entries(value, where="gates", builtins=cls.model_fields, keys=("query",))

    def custom(self) -> dict[str, CustomGate]:
        """The custom gates, by name."""
        return dict(self.__pydantic_extra__ or {})

    @classmethod
    def unit_of(cls, name: str) -> str:
        """The unit of gate ``name``'s threshold (%, ms, req/s, count or ratio): its field's type says it."""
        kind = cls.model_fields[name].annotation
        assert isinstance(kind, type) and issubclass(kind, BuiltinGate), name
        return kind.unit

    @classmethod
    def range_of(cls, name: str) -> Range:
        """The values gate ``name``'s threshold may take."""
        kind = cls.model_fields[name].annotation
        assert isinstance(kind, type) and issubclass(kind, GateSettings), name
        found = range_of(kind, "threshold")
        assert found is not None, name
        return found


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


class NotificationKind(StrEnum):
    SLACK = "slack"
    """A Slack-compatible incoming webhook (also Mattermost, Rocket.Chat)."""
    TEAMS = "teams"
    """A Microsoft Teams incoming webhook (MessageCard)."""
    WEBHOOK = "webhook"
    """Any endpoint taking a JSON POST: event, service, stage, why, failing gates."""
    ALERTMANAGER = "alertmanager"
    """Alertmanager's alert API (/api/v2/alerts): its routes reach PagerDuty, email, and the rest."""
    GRAFANA = "grafana"
    """Grafana's annotation API (/api/annotations): decisions appear on the canary dashboard (token_env)."""


DECISIONS = {
    "deployed": "canary deployed",
    "stage passed": "stage advanced",
    "held": "stage held",
    "awaiting decision": "awaiting a decision",
    "outside window": "outside the release windows",
    "rolled back": "rolled back",
    "promoted": "promoted",
}
"""Runner events that are decisions people hear about, and how a message (and `notifications.events`) names them."""
DECISION_NAMES = tuple(DECISIONS.values())


class NotificationTarget(_Model):
    kind: NotificationKind
    """slack, teams, webhook, alertmanager or grafana."""
    url_env: str | None = None
    """Environment variable holding the URL (webhook URLs are secrets: never written in the file, never logged)."""
    url_file: Path | None = None
    """A file holding the URL (a mounted Secret)."""
    token_env: str | None = None
    """Environment variable holding a bearer token sent with each request (Grafana service-account token)."""

    @model_validator(mode="after")
    def _one_source(self) -> NotificationTarget:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError("give exactly one of url_env (an environment variable) or url_file")
        return self

    def describe(self) -> str:
        return f"{self.kind.value} (${self.url_env})" if self.url_env else f"{self.kind.value} ({self.url_file})"

    def resolve_url(self) -> str:
        """The URL, read now; a ConfigError when it is missing."""
        if self.url_env:
            url = os.environ.get(self.url_env, "").strip()
            if not url:
                raise ConfigError(
                    f"environment variable {self.url_env} is empty or unset",
                    where=f"notifications ({self.describe()})",
                    fix=f"export {self.url_env}=<webhook URL>",
                )
        else:
            assert self.url_file is not None
            try:
                url = self.url_file.read_text().strip()
            except OSError as e:
                raise ConfigError(
                    f"cannot read {self.url_file}: {e.strerror}", where=f"notifications ({self.describe()})"
                ) from e
        if not re.match(r"^https?://", url):
            raise ConfigError(
                "the configured URL does not start with http:// or https://",
                where=f"notifications ({self.describe()})",
            )
        return url


class NotificationSettings(_Model):
    targets: tuple[NotificationTarget, ...] = ()
    """Where the runner sends each decision."""
    events: tuple[str, ...] = DECISION_NAMES
    """Which decisions to send (default: every one of them, as listed)."""
    timeout: Duration = 5.0
    """Per attempt, seconds."""
    retries: Annotated[int, Range("a number of retries", 0, 5)] = 2
    """Further attempts after a failure (timeouts, errors, non-2xx answers)."""
    backoff: Duration = 0.5
    """Seconds before the first retry; doubled before each next one."""

    @field_validator("events")
    @classmethod
    def _events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in value if e not in DECISION_NAMES]
        if unknown:
            raise ValueError(f"unknown decision {unknown[0]!r}; use any of: {', '.join(DECISION_NAMES)}")
        return value


class UndecidedPolicy(StrEnum):
    HOLD = "hold"
    """Keep the canary at its weight and stop (exit 3): a person decides — 'canary-checks run' again to look again,
    with --proceed to go on, or --rollback. For services where a wrong release costs more than a slow one."""
    ROLLBACK = "rollback"
    """Roll back as for a failing gate: a release must prove it is no worse than stable. For strict services with
    enough traffic that an undecided comparison is itself a warning sign."""
    PROCEED = "proceed"
    """Go on to the next stage (recorded and announced): the fixed gates passed, and the comparisons keep
    accumulating evidence at the next, larger share. For low-traffic services whose early stages cannot decide."""


class OutsideWindow(StrEnum):
    WAIT = "wait"
    """The runner stays at its stage until a window opens, polling the critical gates (a failure still rolls back),
    then goes on. For a runner that lives as long as the rollout (a Kubernetes Job, a workstation)."""
    HOLD = "hold"
    """The runner stops (exit 3) with the canary at its weight and the rollout recorded as awaiting-window;
    'canary-checks run' again inside a window goes on. For CI jobs, which cannot wait over a weekend."""


class ReleaseWindows(_Model):
    """When a rollout may move forward: deploy a canary, raise its weight, promote it. A rollback is never held."""

    timezone: str = "UTC"
    """IANA time zone the windows and blackout dates are written in (Europe/Berlin, America/New_York)."""
    allowed: tuple[str, ...] | None = None
    """Cron expressions (minute hour day-of-month month day-of-week); a minute that matches any of them is inside a
    window: '* 9-16 * * mon-thu' is Monday to Thursday 09:00-16:59. Unset: every minute not blacked out."""
    blackout: tuple[str, ...] = ()
    """Dates (2026-12-24) or inclusive ranges of dates (2026-12-20..2027-01-03) when nothing moves forward, even
    inside an allowed window."""
    outside: OutsideWindow = OutsideWindow.WAIT
    """What the runner does when the next step falls outside the windows: wait or hold."""

    @model_validator(mode="before")
    @classmethod
    def _no_empty_allowed(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and value.get("allowed") is not None and not value["allowed"]:
            raise ValueError(
                "allowed is empty, which would read as 'every minute': leave it out to allow every minute, list "
                "cron windows ('* 9-16 * * mon-thu'), or list dates under blackout to stop rollouts for a while"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from canary_checks.windows import zone

        zone(value)
        return value

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from canary_checks.windows import check_cron

        for expression in value or ():
            check_cron(expression)
        return value

    @field_validator("blackout", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        """YAML reads an unquoted 2026-12-24 as a date: take it as written; one date alone is a list of one."""
        items = value if isinstance(value, list | tuple) else [value]
        return [v.isoformat() if isinstance(v, date) else v for v in items]

    @field_validator("blackout")
    @classmethod
    def _blackout(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from canary_checks.windows import blackout_range

        for text in value:
            blackout_range(text)
        return value


class RolloutSettings(_Model):
    """What the runner (canary-checks run) does when a stage cannot decide, and when it may move forward."""

    on_undecided: UndecidedPolicy = UndecidedPolicy.HOLD
    """When every fixed gate passed but a canary-vs-stable comparison still has too few requests to decide at the
    end of the stage's extension: hold, rollback or proceed. Missing data (no traffic, Prometheus unreadable) always
    rolls back."""
    max_extension: Duration | None = None
    """How long a stage whose checks cannot decide yet may run past its step duration, looking again every poll
    interval; unset: as long again as the step."""
    release_windows: ReleaseWindows | None = None
    """When the rollout may move forward (a time zone, allowed cron windows, blackout dates); unset: at any time."""


class Workloads(_Model):
    stable: str = "{service}-stable"
    """Name of the stable Deployment (Istio destination_workload, Linkerd deployment); {service} is replaced."""
    canary: str = "{service}-canary"
    """Name of the canary Deployment; {service} is replaced."""


class CustomQueries(_Model):
    """PromQL templates for ``mesh: custom``. Placeholders: $namespace, $workload, $window, $quantile.

    Each must return one number (a single-element vector) for the named workload."""

    requests: str
    """Requests received in $window (a count, e.g. sum(increase(...[$window])))."""
    errors: str
    """Requests answered with an error in $window (a count)."""
    successes: str
    """Requests answered successfully in $window (a count)."""
    latency: str
    """Latency quantile $quantile in milliseconds over $window."""
    buckets: str | None = None
    """Latency histogram bucket counts in $window by le, milliseconds (sum by (le) (increase(..._bucket[$window])));
    without it the latency comparisons have no data."""


class Secret(_Model):
    """A secret read when a query is sent, never stored: from an environment variable or a file (one of them)."""

    env: str | None = None
    """Name of an environment variable holding the value."""
    file: Path | None = None
    """A file holding the value (e.g. a mounted Kubernetes Secret); surrounding whitespace is dropped."""

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self


class BasicAuth(_Model):
    """HTTP basic authentication: a user name and a password read from the environment or a file."""

    username: str
    """The user name (not a secret: written as is)."""
    password_env: str | None = None
    """Name of an environment variable holding the password (never logged)."""
    password_file: Path | None = None
    """A file holding the password (never logged)."""

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file are both set: choose one")
        if not (self.password_env or self.password_file):
            raise ValueError(
                "no password: set password_env (an environment variable's name) or password_file (a path); a "
                "password is never written in the config itself"
            )
        return self


HeaderValue = Annotated[
    Annotated[str, Tag("value")] | Annotated[Secret, Tag("secret")],
    Discriminator(lambda v: "value" if isinstance(v, str) else "secret"),
]
"""A header's value: written as is, or a :class:`Secret` (one error naming the key when it is neither)."""

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _read_secret(env: str | None, file: Path | None, keys: tuple[str, str]) -> str:
    """The value of a secret from the environment variable ``env`` or the file ``file``; ``keys`` name the two
    settings (env, file) in the messages. Never logged."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"environment variable {env} is empty or unset",
                where=keys[0],
                fix=f"export {env}=<value>, or change the setting",
            )
        return value.strip()
    assert file is not None
    try:
        return file.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"cannot read {file}: {e.strerror}",
            where=keys[1],
            fix="point it at a readable file (a mounted Secret?), or remove the setting",
        ) from e


class PrometheusSettings(_Model):
    url: str = "http://127.0.0.1:19090"
    """Base URL of the Prometheus HTTP API (also Thanos/Mimir query frontends). A `user:password@` in it is used as
    basic auth and shown and stored as `user:***@`; prefer basic_auth with password_env."""
    bearer_token_env: str | None = None
    """Name of an environment variable holding a bearer token (never logged)."""
    bearer_token_file: Path | None = None
    """A file holding a bearer token, e.g. a mounted ServiceAccount token (never logged)."""
    basic_auth: BasicAuth | None = None
    """HTTP basic auth: `{username: U, password_env: VAR}` or `{username: U, password_file: PATH}`."""
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    """Extra HTTP headers on every query, e.g. `{X-Scope-OrgID: team-a}` for a Mimir/Cortex/Thanos tenant; a
    secret value as `{env: VAR}` or `{file: PATH}` (never logged)."""
    verify_tls: bool = True
    """Verify the server's TLS certificate."""
    ca_file: Path | None = None
    """CA bundle to verify the server's certificate with."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS; needs key_file."""
    key_file: Path | None = None
    """Private key (PEM, unencrypted) of cert_file; may be the same file."""
    proxy_url: str | None = None
    """HTTP(S) proxy to reach Prometheus through (http://proxy:3128); when set, HTTPS_PROXY/HTTP_PROXY are
    ignored. Unset: those environment variables apply."""
    timeout: Duration = 10.0
    """Per-query timeout, seconds."""
    retries: Annotated[int, Range("a number of retries", 0, 10)] = 1
    """Retries on 502/503/504 answers and read timeouts before a gate errors (a refused connection is final)."""
    query_offset: Annotated[Duration, Range("a duration", 0.0, 600.0)] = 1.0
    """How far in the past every query is evaluated. A scrape in flight is stored under the time it started, so
    queries at "now" can see it in one query and miss it in the next, and the requests of a window stop adding up to
    its errors plus successes. Raise it where ingestion lags (remote write into Mimir, Thanos Receive, Cortex)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// URL; got {redact_url(value)!r}")
        return value.rstrip("/")

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// proxy URL; got {redact_url(value)!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str | Secret]) -> dict[str, str | Secret]:
        for name, given in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() == "authorization":
                raise ValueError(
                    "set Authorization through bearer_token_env/bearer_token_file or basic_auth, not headers"
                )
            if isinstance(given, str) and ("\n" in given or "\r" in given):
                raise ValueError(f"the value of header {name} has a line break")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("bearer_token_env and bearer_token_file are both set: choose one")
        ways = [
            name
            for name, on in (
                ("bearer_token_env/bearer_token_file", self.bearer_token_env or self.bearer_token_file),
                ("basic_auth", self.basic_auth),
                ("a user:password@ in url", urlsplit(self.url).username is not None),
            )
            if on
        ]
        if len(ways) > 1:
            raise ValueError(f"{' and '.join(ways)} are both set: choose one way to authenticate")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set without cert_file: set cert_file to the client certificate (PEM)")
        if self.cert_file and not self.key_file:
            raise ValueError(
                "cert_file is set without key_file: set key_file to its private key (the same path if the PEM "
                "file holds both)"
            )
        return self

    @property
    def base_url(self) -> str:
        """The URL queries go to: without any ``user:password@`` (that is sent as basic auth)."""
        parts = urlsplit(self.url)
        if parts.username is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))

    def open_at(self, url: str) -> PrometheusSettings:
        """These settings for an open local Prometheus at ``url`` (a replay's): no credentials, headers, client
        certificate or proxy, so none is needed or sent to it."""
        cleared: dict[str, Any] = {"url": url, "bearer_token_env": None, "bearer_token_file": None, "basic_auth": None,
                   "headers": {}, "ca_file": None, "cert_file": None, "key_file": None, "proxy_url": None}  # fmt: skip
        return self.model_copy(update=cleared)

    @property
    def shown_url(self) -> str:
        """The URL as shown and stored: a password in it replaced by ``***``."""
        return redact_url(self.url)

    def bearer_token(self) -> str | None:
        """The token, read now from the environment or the file; ``None`` when none is configured."""
        if not (self.bearer_token_env or self.bearer_token_file):
            return None
        return _read_secret(
            self.bearer_token_env,
            self.bearer_token_file,
            ("prometheus.bearer_token_env", "prometheus.bearer_token_file"),
        )

    def basic_credentials(self) -> tuple[str, str] | None:
        """(user, password) for basic auth, read now: from ``basic_auth`` or the URL; ``None`` when neither."""
        if self.basic_auth is not None:
            a = self.basic_auth
            return a.username, _read_secret(
                a.password_env,
                a.password_file,
                ("prometheus.basic_auth.password_env", "prometheus.basic_auth.password_file"),
            )
        parts = urlsplit(self.url)
        if parts.username is not None:
            return unquote(parts.username), unquote(parts.password or "")
        return None

    def header_values(self) -> dict[str, str]:
        """The extra headers with their secret values read now."""
        values = {}
        for name, value in self.headers.items():
            if isinstance(value, str):
                values[name] = value
                continue
            keys = (f"prometheus.headers.{name}.env", f"prometheus.headers.{name}.file")
            values[name] = read = _read_secret(value.env, value.file, keys)
            if "\n" in read or "\r" in read:
                raise ConfigError(
                    "the value has a line break inside (one header value is one line)",
                    where=keys[0] if value.env else keys[1],
                    fix="store the value alone on one line",
                )
        return values

    def check_secrets(self) -> None:
        """Read every configured secret and file once: a missing variable or unreadable file is a
        :class:`ConfigError` naming its key, before any query is sent."""
        self.bearer_token()
        self.basic_credentials()
        self.header_values()
        for key in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, key)
            # a CA may also be a directory of hashed certificates (c_rehash), as OpenSSL's CApath
            if path is not None and not (path.is_file() or (key == "ca_file" and path.is_dir())):
                raise ConfigError(
                    f"{path} does not exist or is not a file",
                    where=f"prometheus.{key}",
                    fix="point it at a readable PEM file, or remove the setting",
                )

    def describe_auth(self) -> str:
        """How queries authenticate, as a person reads it (never a secret): ``bearer token from $PROM_TOKEN``."""
        parts = []
        if self.bearer_token_env:
            parts.append(f"a bearer token from ${self.bearer_token_env}")
        elif self.bearer_token_file:
            parts.append(f"a bearer token from {self.bearer_token_file}")
        elif self.basic_auth is not None:
            a = self.basic_auth
            source = f"${a.password_env}" if a.password_env else str(a.password_file)
            parts.append(f"basic auth as user {a.username!r} (password from {source})")
        elif urlsplit(self.url).username is not None:
            parts.append(f"basic auth as user {unquote(urlsplit(self.url).username or '')!r} from the URL")
        else:
            parts.append("no authentication")
        if self.headers:
            parts.append("headers " + ", ".join(self.headers))
        if self.cert_file:
            parts.append(f"client certificate {self.cert_file}")
        return "; ".join(parts)


class KubernetesSettings(_Model):
    enabled: bool | None = None
    """Read the canary's pods from the Kubernetes API for the kube_* gates: true, false, or unset for
    "when credentials exist" (in-cluster, $KUBECONFIG or ~/.kube/config)."""
    api_url: str | None = None
    """API server URL that needs no credentials (kubectl proxy, tests); unset: in-cluster, then kubeconfig."""
    context: str | None = None
    """kubeconfig context to use; unset: the current one."""
    verify_tls: bool = True
    """Verify the API server's TLS certificate (with api_url)."""

    def active(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        if self.api_url or os.environ.get("KUBERNETES_SERVICE_HOST"):
            return True
        kubeconfig = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        return any(Path(p).is_file() for p in kubeconfig.split(os.pathsep) if p)


class SandboxSettings(_Model):
    state_dir: Path = Path(".sandbox")
    """Where the sandbox keeps its processes' state, logs and Prometheus data (relative to the config file)."""
    prometheus_port: Annotated[int, PORT] = 19090
    """Prometheus web/API port on 127.0.0.1."""
    router_port: Annotated[int, PORT] = 18080
    """HAProxy front end (the service's address) on 127.0.0.1."""
    router_admin_port: Annotated[int, PORT] = 18404
    """HAProxy's own Prometheus exporter and stats page on 127.0.0.1."""
    stable_port: Annotated[int, PORT] = 18081
    """Stable demo instance on 127.0.0.1."""
    canary_port: Annotated[int, PORT] = 18082
    """Canary demo instance on 127.0.0.1."""
    node_port: Annotated[int, PORT] = 18100
    """The node agent (kube-state-metrics and cAdvisor series, and the alert receiver) on 127.0.0.1."""
    alertmanager_port: Annotated[int, PORT] = 19093
    """Alertmanager (the canary alerts routed to the node agent's receiver) on 127.0.0.1."""
    rps: Annotated[float, Range("requests per second", 0, 20000, low_open=True)] = 200.0
    """Requests per second Locust sends through the router."""
    scrape_interval: Duration = 1.0
    """How often Prometheus scrapes everything, seconds."""
    cpu_limit: Annotated[float, Range("cores", 0, 64, low_open=True)] = 0.5
    """CPU limit of each demo pod, cores (what the CPU gate divides by)."""
    memory_limit_mb: Annotated[int, Range("MiB", 0, low_open=True)] = 256
    """Memory limit of each demo pod, MiB (what the memory gate divides by)."""


class SmokeRequest(_Model):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """The test id (letters, digits, '_', '.', '-'): test_request[NAME]."""
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    """HTTP method."""
    path: str = Field(pattern=r"^/")
    """Path and query, starting with '/'."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers of this request, added to the target's."""
    body: str | dict[str, Any] | list[Any] | None = None
    """Request body: a string as is, a mapping or list as JSON."""
    status: tuple[int, ...] = (200,)
    """Statuses that pass (one number or a list)."""
    contains: tuple[str, ...] = ()
    """Text the response body must contain."""
    json_fields: dict[str, Any] = Field(default_factory=dict)
    """Fields of a JSON answer that must equal a value; dotted paths for nested fields: {data.id: 1}."""
    max_latency: Duration | None = None
    """Slowest acceptable answer, seconds (e.g. 500ms is 0.5)."""

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: Any) -> Any:
        values = [value] if isinstance(value, int) else value
        if isinstance(values, list | tuple) and any(not isinstance(v, int) or not 100 <= v <= 599 for v in values):
            raise ValueError(f"statuses are HTTP codes from 100 to 599; got {value!r}")
        return values


class SmokeTarget(_Model):
    url: str | None = None
    """Base URL of this target (default: smoke.url)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Headers that route a request to this target."""


def _smoke_targets() -> dict[str, SmokeTarget]:
    return {
        "canary": SmokeTarget(headers={"x-canary": "true"}),
        "stable": SmokeTarget(headers={"x-canary": "false"}),
    }


class SmokeSettings(_Model):
    url: str | None = None
    """The service's address through the mesh, e.g. http://auth.orion.svc.cluster.local:8080 (default: the
    sandbox's router, http://127.0.0.1:<sandbox.router_port>)."""
    targets: dict[str, SmokeTarget] = Field(default_factory=_smoke_targets)
    """How a request reaches each target: the canary through the `x-canary: true` header route; stable needs a
    route of its own (`x-canary: false` in the sandbox) or its own `url`."""
    served_by_header: str | None = None
    """A response header naming the pod that answered (the sandbox's `x-served-by`); when set, every answer must
    come from the target's workload, which catches a route that sends the canary's checks to stable."""
    health: tuple[str, ...] = ("/healthz", "/readyz")
    """Paths that must answer 200."""
    requests: tuple[SmokeRequest, ...] = ()
    """More requests, each with the statuses and body it must get back."""
    timeout: Duration = 5.0
    """Seconds to wait for each answer."""

    @field_validator("targets", mode="before")
    @classmethod
    def _targets(cls, value: Any) -> Any:
        """A target written with only some fields keeps the defaults of the others."""
        if not isinstance(value, Mapping):
            return value
        unknown = sorted(str(k) for k in value if k not in ("canary", "stable"))
        if unknown:
            raise ValueError(f"targets are canary and stable; got {', '.join(unknown)}")
        defaults = {k: v.model_dump() for k, v in _smoke_targets().items()}
        value = {**defaults, **value}
        return {k: {**defaults.get(str(k), {}), **v} if isinstance(v, Mapping) else v for k, v in value.items()}

    @field_validator("health")
    @classmethod
    def _health(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [p for p in value if not p.startswith("/")]
        if bad:
            raise ValueError(f"health paths start with '/'; got {bad}")
        return value

    @model_validator(mode="after")
    def _unique(self) -> SmokeSettings:
        names = [r.name for r in self.requests]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"smoke request names must be unique; repeated: {', '.join(twice)}")
        return self

    def target_url(self, target: str, sandbox: SandboxSettings) -> str:
        url = self.targets[target].url
        return (url or self.url or f"http://127.0.0.1:{sandbox.router_port}").rstrip("/")


class CanaryConfig(_Model):
    service: str = "auth"
    """The service under release; a Kubernetes name."""
    namespace: str = "orion"
    """Its namespace."""
    workloads: Workloads = Field(default_factory=Workloads)
    """How stable and canary are told apart in the metrics."""
    mesh: Mesh = Mesh.ISTIO
    """Which metric names to read: istio, linkerd, or custom (then set `queries`)."""
    queries: CustomQueries | None = None
    """PromQL templates, required with mesh: custom."""
    failure_codes: str = DEFAULT_FAILURE_CODES
    """HTTP status codes of failed requests, a regex matching whole codes (RE2, as Prometheus reads it): 5.. is 5xx,
    5..|429 adds Too Many Requests, [45].. adds every 4xx. Every other answer is a success, so the success rate is
    100 − the error rate in every gate, recording rule, alert and dashboard. Istio: matched against response_code.
    Linkerd: the default reads Linkerd's own classification label (failure: a 5xx, a gRPC error status, a failed
    stream, or what a ServiceProfile's responseClasses say); any other value is matched against response_total's
    status_code instead (gRPC errors answered 200 then succeed, as on Istio; a response without a status fails).
    Not used with mesh: custom, whose queries.errors and queries.successes say it."""
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    """Where the metrics come from."""
    stages: tuple[int, ...] = (5, 25, 50, 100)
    """Canary traffic percent at each stage, ascending, ending at 100."""
    window: Duration = 60.0
    """Analysis window, seconds: every gate looks at the last `window` of data, canary and stable alike."""
    min_requests: Annotated[int, COUNT] = 20
    """Fewest canary requests in the window for the rate and latency gates to decide; fewer is inconclusive."""
    gates: Gates = Field(default_factory=Gates)
    """Thresholds; any field left out keeps its default."""
    statistics: Statistics = Field(default_factory=Statistics)
    """Canary-versus-stable statistical comparisons."""
    stage_gates: dict[int, dict[str, dict[str, Any]]] = Field(default_factory=dict)
    """Per-stage threshold overrides: {25: {error_rate: {threshold: 3}}}."""
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    """Where the kube_* gates read pods and events."""
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)
    """Where the runner announces its decisions."""
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    """What the runner does with a stage that cannot decide, and when it may move forward (release windows)."""
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    """The local sandbox (canary-checks sandbox up)."""
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    """The smoke suite (suites/smoke): requests to the canary (or stable) before any traffic moves."""

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return check_workload(value)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        return check_namespace(value)

    @field_validator("failure_codes", mode="before")
    @classmethod
    def _failure_codes(cls, value: Any) -> Any:
        """One code may be written as a number (`failure_codes: 503`)."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ValueError(f"expected one regex of status codes, e.g. 5.. or 500|503; got {value!r}")
        return check_failure_codes(value)

    @field_validator("gates", "statistics", mode="before")
    @classmethod
    def _gates(cls, value: Any, info: ValidationInfo) -> Any:
        """A gate (or comparison) written with only some fields keeps the defaults of the others."""
        if not isinstance(value, Mapping):
            return value
        defaults = (Gates() if info.field_name == "gates" else Statistics()).model_dump()
        return {
            name: {**defaults[name], **fields} if name in defaults and isinstance(fields, Mapping) else fields
            for name, fields in value.items()
        }

    @field_validator("stages")
    @classmethod
    def _stages(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return check_stage_list(value)

    @model_validator(mode="after")
    def _consistent(self) -> CanaryConfig:
        for side in ("stable", "canary"):
            try:
                check_workload(self.workload(side))
            except ValueError as e:
                raise ValueError(f"workloads.{side}: {e}") from None
        if self.mesh is Mesh.CUSTOM and self.queries is None:
            raise ValueError("mesh: custom needs `queries` (requests, errors, successes, latency templates)")
        if self.mesh is Mesh.CUSTOM and self.failure_codes != DEFAULT_FAILURE_CODES:
            raise ValueError(
                f"failure_codes ({self.failure_codes!r}) applies to mesh istio and linkerd; with mesh: custom, "
                "write which answers fail into queries.errors and queries.successes, and remove failure_codes"
            )
        for stage, overrides in self.stage_gates.items():
            if stage not in self.stages:
                raise ValueError(f"stage_gates names stage {stage}, which is not one of the stages {list(self.stages)}")
            _merge_gates(self.gates, overrides, where=f"stage_gates.{stage}")
        return self

    def check_stages(self, *stages: int) -> None:
        """Refuse any of ``stages`` that is not one of this service's `stages` (a stage's suite judges that stage's
        thresholds): the one check behind the command line, the pytest plugin and the webhook server, each of which
        puts the name of what was given (``--stage``, ``metadata.stage``) before the message."""
        unknown = [stage for stage in stages if stage not in self.stages]
        if len(unknown) == 1:
            raise ValueError(f"{unknown[0]} is not one of the stages {list(self.stages)} of {self.service}")
        if unknown:
            raise ValueError(
                f"{', '.join(map(str, unknown))} are not among the stages {list(self.stages)} of {self.service}"
            )

    def workload(self, side: str) -> str:
        """The Deployment name of ``stable`` or ``canary``."""
        template: str = getattr(self.workloads, side)
        return template.replace("{service}", self.service)

    def gates_for(self, stage: int | None, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Gates:
        """Thresholds in force at ``stage``: defaults ← file ← stage_gates[stage] ← command line."""
        gates = self.gates
        if stage is not None and stage in self.stage_gates:
            gates = _merge_gates(gates, self.stage_gates[stage], where=f"stage_gates.{stage}")
        if overrides:
            gates = _merge_gates(gates, overrides, where="--threshold")
        return gates


def define_gate(base: Gates, name: str, fields: Mapping[str, Any], *, where: str) -> Gates:
    """``base`` with the custom gate ``name`` defined by ``fields`` (over its configured fields, if any)."""
    data = base.model_dump()
    data[name] = {**data.get(name, {}), **fields}
    return _validate_gates(data, where=where)


def _validate_gates(data: Mapping[str, Any], *, where: str) -> Gates:
    try:
        return Gates.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_describe(e, top=""), where=where) from None


def _merge_gates(base: Gates, overrides: Mapping[str, Mapping[str, Any]], *, where: str) -> Gates:
    data = base.model_dump()
    for name, fields in overrides.items():
        if name not in data:
            raise ConfigError(
                f"unknown gate {name!r}",
                where=where,
                fix=f"use one of: {', '.join(data)}",
            )
        if not isinstance(fields, Mapping):
            raise ConfigError(
                f"expected a mapping such as {{threshold: 3}} for gate {name!r}; got {fields!r}", where=where
            )
        data[name] = {**data[name], **fields}
    return _validate_gates(data, where=where)


def _describe(error: ValidationError, *, top: str = "(top level)") -> str:
    return "; ".join(_describe_one(item, top=top) for item in error.errors())


_PLAIN = {
    "missing": "required: write it",
    "tuple_type": "expected a list ([a, b] or one '- item' per line)",
    "list_type": "expected a list ([a, b] or one '- item' per line)",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "int_parsing": "expected a whole number",
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_type": "expected a whole number",
    "string_type": "expected text",
}
"""pydantic's messages for a wrong type, in the words of a YAML file."""


def _close_keys(loc: tuple[Any, ...]) -> list[str]:
    """Keys of the settings model at ``loc[:-1]`` close to the unknown ``loc[-1]`` (a misspelt key)."""
    model: Any = CanaryConfig
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return []
        annotation = fields[part].annotation
        model = next((a for a in (annotation, *get_args(annotation)) if isinstance(a, type)), None)
    fields = getattr(model, "model_fields", None)
    return difflib.get_close_matches(str(loc[-1]), list(fields), n=1) if isinstance(fields, dict) else []


def _describe_one(item: Any, *, top: str = "(top level)") -> str:
    """One pydantic error as ``key.path: what is wrong (got the value)``; a URL's password is never shown."""
    path = ".".join(str(p) for p in item["loc"]) or top
    msg = _PLAIN.get(item["type"]) or item["msg"].removeprefix("Value error, ")
    if item["type"] == "extra_forbidden":
        close = _close_keys(tuple(item["loc"]))
        msg = f"unknown key ({f'did you mean {close[0]}?' if close else 'check its spelling'})"
    bad = item.get("input")
    given = redact_url(repr(bad))
    quiet = item["type"] in ("missing", "extra_forbidden") or isinstance(bad, dict) or given in msg
    quiet = quiet or redact_url(f"got {bad}") in msg
    shown = "" if quiet else f" (got {given})"
    return f"{path}: {msg}{shown}" if path else f"{msg}{shown}"


def find_config(explicit: str | os.PathLike[str] | None = None, *, search: tuple[Path, ...] = ()) -> Path | None:
    """The config file to use: ``explicit``, else ``$CANARY_CONFIG``, else the first ``canary.yaml`` in ``search``.

    An explicit or environment path that does not exist is an error; no file at all means built-in defaults."""
    for source, value in (("--canary-config", explicit), (CONFIG_ENV, os.environ.get(CONFIG_ENV))):
        if value:
            path = Path(value)
            if not path.is_file():
                raise ConfigError(
                    f"config file {str(path)!r} does not exist",
                    where=source,
                    fix=f"create it ('canary-checks init' writes one) or pass an existing file to {source}",
                )
            return path
    for folder in search:
        candidate = folder / DEFAULT_CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def require_config(explicit: str | os.PathLike[str] | None = None, *, search: tuple[Path, ...] = ()) -> Path:
    """As :func:`find_config`, but no file at all is an error: outside the sandbox, guessing a service, namespace
    and Prometheus would judge the wrong thing (the built-in defaults are the sandbox's)."""
    path = find_config(explicit, search=search)
    if path is None:
        places = " or ".join(dict.fromkeys(str(folder) for folder in search)) or "the current directory"
        raise ConfigError(
            f"no {DEFAULT_CONFIG_NAME} in {places}: canary-checks needs to know the service, its namespace and "
            "its Prometheus",
            fix=f"run 'canary-checks init --service NAME --namespace NS --prometheus-url URL' here to write one "
            f"(with the suites and a CI example), or pass --canary-config PATH, or set {CONFIG_ENV}",
        )
    return path


# Command-line overrides: flag name → dotted config key.
_FLAG_KEYS = {
    "service": "--service",
    "namespace": "--namespace",
    "mesh": "--mesh",
    "prometheus.url": "--prometheus-url",
    "window": "--window",
}


SERVICES_KEY = "services"
"""The top-level key of a file describing several services: ``services: {NAME: {settings of NAME}}``."""


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, as written (a ConfigError naming the file when it is not)."""
    where = str(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", where=where) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"not valid YAML{at}: {problem}", where=where, fix="fix the YAML syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"expected a mapping of settings at the top level; got {type(loaded).__name__}", where=where)
    return loaded


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, at every depth; lists and scalars replace."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = deep_merge(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


def service_sections(raw: Mapping[str, Any], *, where: str = "") -> dict[str, dict[str, Any]]:
    """The ``services:`` sections of a raw config, by service name (empty: a one-service file)."""
    if SERVICES_KEY not in raw:
        return {}
    sections = raw[SERVICES_KEY]
    example = "services: {gateway: {namespace: edge}, user: {gates: {error_rate: {threshold: 2}}}}"
    if not isinstance(sections, Mapping) or not sections:
        raise ConfigError(
            f"services: expected a mapping of service name to its settings; got {sections!r}",
            where=where,
            fix=f"write e.g. {example}, or remove `services` for a file that describes one service",
        )
    if "service" in raw:
        raise ConfigError(
            f"service: {raw['service']!r} next to `services`: with several services, each one's name is its key "
            "under services",
            where=where,
            fix="remove the top-level `service` key; choose a service with --service NAME",
        )
    found: dict[str, dict[str, Any]] = {}
    for name, section in sections.items():
        try:
            check_workload(str(name))
        except ValueError as e:
            raise ConfigError(f"services.{name}: the service name {e}", where=where) from None
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"services.{name}: expected a mapping of the settings that differ for {name}; got {section!r}",
                where=where,
                fix=f"write e.g. services: {{{name}: {{namespace: orion}}}}, or {{}} to take every shared setting",
            )
        for key in ("service", SERVICES_KEY):
            if key in section:
                raise ConfigError(
                    f"services.{name}.{key}: not allowed in a service's section (the section's key, {name}, is "
                    "the service's name)",
                    where=where,
                    fix=f"remove services.{name}.{key}",
                )
        found[str(name)] = dict(section)
    return found


def select_service(raw: Mapping[str, Any], service: str | None, *, where: str = "") -> tuple[dict[str, Any], str]:
    """The raw settings in force for ``service`` of a file with ``services:`` — the shared (top-level) settings
    with the service's section merged over them (:func:`deep_merge`) and ``service`` set to its name — and which
    service that is. One service needs no choice; several need ``service``."""
    sections = service_sections(raw, where=where)
    names = ", ".join(sections)
    if service is None:
        if len(sections) > 1:
            raise ConfigError(
                f"this file describes {len(sections)} services ({names}); which one is meant?",
                where=where,
                fix="pass --service NAME with one of them (canary-checks config show --service NAME shows "
                "what is in force for it)",
            )
        service = next(iter(sections))
    if service not in sections:
        raise ConfigError(
            f"no service {service!r} in this file; it describes {names}",
            where=where,
            fix=f"use one of: {names}; or add services.{service} (canary-checks init --service {service})",
        )
    shared = {k: v for k, v in raw.items() if k != SERVICES_KEY}
    return {**deep_merge(shared, sections[service]), "service": service}, service


def _in_section(section: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` (a pydantic error location) was written in ``section``."""
    node: Any = section
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Mapping) and str(part) in {str(k) for k in node}:
            node = next(v for k, v in node.items() if str(k) == str(part))
        elif isinstance(node, list | tuple) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return bool(loc)


def _section_error(error: ValidationError, raw: Mapping[str, Any], service: str) -> str:
    """As :func:`_describe`, with the path of each mistake made in ``services.SERVICE`` written in full."""
    section = service_sections(raw).get(service, {})
    described = []
    for item in error.errors():
        text = _describe_one(item)
        if _in_section(section, tuple(item["loc"])):
            text = f"{SERVICES_KEY}.{service}.{text}"
        described.append(text)
    return "; ".join(described)


def config_from(
    raw: Mapping[str, Any], *, where: str, service: str | None = None, every_service: bool = False
) -> CanaryConfig:
    """Validate a config as read from a file (``where``); with ``services:``, the one of ``service``
    (:func:`select_service`). A mistake in another service's section does not hold this one up (its release, or
    its rollback, is not that team's typo's hostage) unless ``every_service`` (``config show``: the file's check)."""
    config = _config_of(raw, where=where, service=service)
    for other in service_sections(raw, where=where) if every_service and SERVICES_KEY in raw else ():
        if other != config.service:
            _config_of(raw, where=where, service=other)
    return config


def _config_of(raw: Mapping[str, Any], *, where: str, service: str | None) -> CanaryConfig:
    chosen: str | None = None
    merged: Mapping[str, Any] = raw
    if SERVICES_KEY in raw:
        merged, chosen = select_service(raw, service, where=where)
    at = f"{where} (service {chosen})" if chosen is not None else where
    try:
        return CanaryConfig.model_validate(merged)
    except ValidationError as e:
        what = _section_error(e, raw, chosen) if chosen is not None else _describe(e)
        raise ConfigError(what, where=at, fix="'canary-checks config reference' lists every key") from None
    except ConfigError as e:  # a stage's overrides (stage_gates.25: ...): which file, and which section
        if chosen is None:
            raise
        inside = e.where.split(".")[0] in service_sections(raw)[chosen]
        key = f"{SERVICES_KEY}.{chosen}.{e.where}" if inside else e.where
        raise ConfigError(e.what, where=f"{at}: {key}", fix=e.fix) from None


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> CanaryConfig:
    """Read and validate ``path`` (``None``: defaults), then apply flag ``overrides`` (dotted keys).

    In a file with ``services:``, the ``service`` override chooses the section (:func:`select_service`) instead of
    renaming the service."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = read_yaml(path) if path is not None else {}
    service = given.pop("service", None) if SERVICES_KEY in raw else None
    config = config_from(raw, where=str(path) if path is not None else "built-in defaults", service=service)
    if path is not None and not config.sandbox.state_dir.is_absolute():
        sandbox = config.sandbox.model_copy(update={"state_dir": path.parent.resolve() / config.sandbox.state_dir})
        config = config.model_copy(update={"sandbox": sandbox})
    if not given:
        return config
    data = config.model_dump()
    for key, value in given.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return CanaryConfig.model_validate(data)
    except ValidationError as e:
        bad = {".".join(str(p) for p in item["loc"]) for item in e.errors()}
        named = [k for k in given if any(b == k or b.startswith(f"{k}.") for b in bad)] or list(given)
        flags = ", ".join(_FLAG_KEYS.get(k, k) for k in named)
        raise ConfigError(_describe(e), where=f"command line ({flags})") from None


def default_of(key: str) -> Any:
    """The built-in default of a dotted key (``gates.error_rate.threshold`` → 5.0; in a section unset by default,
    such as ``rollout.release_windows.outside``, that section's own default), for help texts: they read the defaults
    from here instead of repeating them."""
    value: Any = CanaryConfig()
    *sections, leaf = key.split(".")
    for part in sections:
        found = getattr(value, part)
        if found is None:
            annotation = type(value).model_fields[part].annotation
            found = next(a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel))()
        value = found
    return getattr(value, leaf)


def flag_overrides(**values: Any) -> dict[str, Any]:
    """Map keyword flag values (service=..., prometheus_url=...) to the dotted keys :func:`load_config` takes."""
    keys = {"prometheus_url": "prometheus.url"}
    return {keys.get(name, name): value for name, value in values.items() if value is not None}


def parse_gate_flags(values: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``["error_rate=3", "latency_p95.severity=critical"]`` → ``{"error_rate": {"threshold": "3"}, ...}``."""
    overrides: dict[str, dict[str, str]] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        gate, _, field = key.strip().partition(".")
        if not sep or not gate or not setting.strip():
            raise ConfigError(
                f"expected GATE=THRESHOLD or GATE.FIELD=VALUE; got {value!r}",
                where="--threshold",
                fix="e.g. --threshold error_rate=3 --threshold latency_p95.severity=critical",
            )
        overrides.setdefault(gate, {})[field or "threshold"] = setting.strip()
    return overrides


def reference_markdown() -> str:
    """docs/configuration.md, written from the models themselves so the doc and the defaults cannot drift."""

    def shown(value: Any) -> str:
        if isinstance(value, StrEnum):
            return f"`{value.value}`"
        if isinstance(value, tuple):
            return f"`{list(value)}`"
        if value is None or value is PydanticUndefined:
            return "—" if value is None else "required"
        return f"`{value}`"

    def allowed(model: type[BaseModel], name: str) -> str:
        found = range_of(model, name)
        if found is not None:
            return str(found)
        info = model.model_fields[name]
        metadata = [*info.metadata, *(m for a in get_args(info.annotation) for m in getattr(a, "__metadata__", ()))]
        return str(DURATION) if any(getattr(m, "func", None) is parse_duration for m in metadata) else ""

    def table(model: type[BaseModel], prefix: str) -> list[str]:
        rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            factory = info.default_factory
            nested = (factory is not None and not isinstance(factory(), dict)) or name in ("gates", "targets")  # type: ignore[call-arg]
            if nested:
                default = "see below"
            elif factory is not None:
                default = f"`{factory()}`"  # type: ignore[call-arg]
            else:
                default = shown(info.default)
            text = " ".join((info.description or "").split()).replace("|", "\\|")
            rows.append(f"| `{prefix}{name}` | {default} | {allowed(model, name)} | {text} |")
        return rows

    lines = [
        "# Configuration reference",
        "",
        "<!-- Written by `canary-checks config reference`; a test keeps it equal to the code. -->",
        "",
        "One YAML file: `canary.yaml` in the current directory, or `--canary-config PATH`, or `$CANARY_CONFIG`.",
        "Unknown keys are errors. Durations are written `30s`, `5m`, `1h` or as seconds.",
        "",
        "## Top level",
        "",
        *table(CanaryConfig, ""),
        "",
        "## `services` (several services in one file)",
        "",
        "The top-level keys are the settings every service shares; `services` maps each service's name to what",
        "differs for it, written with the same keys (any but `service`: the name is the key). A service's settings",
        "are the shared ones with its section merged over them: mappings key by key at every depth (`gates:",
        "{error_rate: {threshold: 2}}` keeps the shared severity), lists and single values replace (`stages`,",
        "`smoke.requests`). `--service NAME` chooses the service in the suites (`pytest suites/gate --service NAME`)",
        "and the commands (`run NAME IMAGE`, `gates --service NAME`, `monitor NAME`, `config show --service NAME`,",
        "which lists the keys the section sets); `serve` answers for each of them. One section is chosen without",
        "`--service`. A mistake in a section is named with its full path (`services.gateway.gates.error_rate.",
        "threshold`); a command acts on its service's settings only, so another team's mistake never blocks its",
        "release or rollback, while `config show` checks every section (run it in the file's CI). `canary-checks",
        "init --service NAME` adds a section to an existing file. Without `services`, the file describes one",
        "service, named by `service`.",
        "",
        "```yaml",
        "namespace: orion                      # shared by every service unless its section says otherwise",
        "prometheus: {url: http://prometheus.monitoring:9090}",
        "gates: {latency_p95: {threshold: 300}}",
        "services:",
        "  auth: {}                            # every setting shared",
        "  gateway:",
        "    namespace: edge",
        "    gates: {error_rate: {threshold: 2}}",
        "```",
        "",
        "## `prometheus`",
        "",
        *table(PrometheusSettings, "prometheus."),
        "",
        "Behind authentication (Thanos, Mimir, Cortex, a gateway): docs/integrations.md, *Prometheus behind auth*.",
        "Secrets are named, never written: an environment variable or a file, read when a run starts.",
        "",
        "### `prometheus.basic_auth`",
        "",
        *table(BasicAuth, "prometheus.basic_auth."),
        "",
        "### A secret header value: `prometheus.headers.NAME: {env: VAR}` or `{file: PATH}`",
        "",
        *table(Secret, "prometheus.headers.NAME."),
        "",
        "## `workloads`",
        "",
        *table(Workloads, "workloads."),
        "",
        "## `queries` (with `mesh: custom`)",
        "",
        *table(CustomQueries, "queries."),
        "",
        "## `gates`",
        "",
        "Each gate takes `threshold`, `severity` (critical | warning | info), `on_no_data` (fail | skip) and",
        "`enabled`. Give only what you change; `stage_gates: {25: {error_rate: {threshold: 3}}}` changes a stage,",
        "`--threshold error_rate=3` one run.",
        "",
        "| gate | threshold | allowed | severity | meaning |",
        "|---|---|---|---|---|",
    ]
    defaults = Gates()
    for name, info in Gates.model_fields.items():
        gate: GateSettings = getattr(defaults, name)
        text = " ".join((info.description or "").split())
        lines.append(f"| `{name}` | {gate.threshold:g} | {Gates.range_of(name)} | {gate.severity.value} | {text} |")
    lines += [
        "",
        "### Custom gates",
        "",
        "Any other key under `gates:` is a gate of your own (docs/gates.md#custom-gates); `stage_gates` and",
        "`--threshold NAME=VALUE` change it as they change a built-in one. Its name: lowercase letters, digits and",
        "`_`, not a built-in gate's, not starting with `compare_`.",
        "",
        *table(CustomGate, "gates.<name>."),
        "",
        "## `statistics`",
        "",
    ]
    lines += [
        "Canary-versus-stable comparisons (`suites/gate/test_compare.py`; docs/statistics.md explains the tests).",
        "",
        *[row for row in table(Statistics, "statistics.") if "see below" not in row],
        "",
        f"Each comparison takes `margin` (allowed ratio canary / stable: {range_of(ComparisonSettings, 'margin')}),"
        f" `margin_delta` (an absolute allowance with it: {range_of(ComparisonSettings, 'margin_delta')}; the canary"
        " is acceptable up to max(margin × stable, stable + margin_delta), the absolute part at most 1.5 × stable),"
        " `severity`, `on_no_data` and `enabled`.",
        "",
        "| comparison | margin | margin_delta | severity | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, info in Statistics.model_fields.items():
        if info.default_factory is None:
            continue
        comparison: ComparisonSettings = info.default_factory()  # type: ignore[call-arg]
        text = " ".join((info.description or "").split())
        lines.append(
            f"| `{name}` | {comparison.margin:g} | {comparison.margin_delta:g} | {comparison.severity.value} | {text} |"
        )
    lines += [
        "",
        "### Custom comparisons",
        "",
        "Any other key under `statistics:` is a canary-vs-stable comparison of your own (docs/gates.md#custom-gates),",
        "named `compare_<name>` in results, judged by the sequential test of `errors`.",
        "",
        *table(CustomComparison, "statistics.<name>."),
    ]
    lines += ["", "## `notifications`", "", "What the runner sends on each decision (docs/runner.md).", ""]
    lines += [*[row for row in table(NotificationSettings, "notifications.") if "`notifications.targets`" not in row]]
    lines += ["", "Each of `notifications.targets`:", "", *table(NotificationTarget, "")]
    lines += ["", "## `rollout`", "", "What `canary-checks run` does (docs/runner.md).", ""]
    lines += [*table(RolloutSettings, "rollout.")]
    lines += ["", "### `rollout.release_windows`", "", ReleaseWindows.__doc__ or "", ""]
    lines += [*table(ReleaseWindows, "rollout.release_windows.")]
    lines += ["", "## `kubernetes`", "", *table(KubernetesSettings, "kubernetes.")]
    lines += ["", "## `smoke`", "", "What `pytest suites/smoke [--target canary|stable]` requests.", ""]
    lines += [*table(SmokeSettings, "smoke.")]
    lines += ["", "Each of `smoke.targets` (`canary`, `stable`):", "", *table(SmokeTarget, "")]
    lines += ["", "Each of `smoke.requests`:", "", *table(SmokeRequest, "")]
    lines += ["", "## `sandbox`", "", *table(SandboxSettings, "sandbox."), ""]
    return "\n".join(lines)
