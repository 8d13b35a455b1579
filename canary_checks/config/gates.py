"""The gates' settings: a built-in gate's by its unit, a value gate, a custom gate, and :class:`Gates`, the
one place every threshold's default lives.

Seam: the models only; evaluating a gate is :mod:`canary_checks.gates`."""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from canary_checks.config.units import (
    COUNT,
    MILLISECONDS,
    PER_SECOND,
    PERCENT,
    RATIO,
    UNIT_RANGES,
    NoDataPolicy,
    Range,
    Severity,
    _Model,
    range_of,
)


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
    load_per_pod: RatioGate = _gate(1.5, Severity.CRITICAL, enabled=False)
    """Requests per ready canary pod divided by what a ready stable pod serves with all the traffic (every request
    over stable's ready pods), a ratio; fails above: an overloaded canary's latency and errors are no evidence about
    the release. Off by default, on by default with rollout.scaling.mode: proportional (a fixed canary of one pod
    beside several stable ones is overloaded by design at the higher stages)."""
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
