"""The whole file's model, :class:`CanaryConfig`; the custom gates' definition and the stages' gate overrides
merged into it; and pydantic's errors in the words of a YAML file (a misspelt key's close match is looked up in
this model).

Seam: this is where the sections meet; loading a file into it is :mod:`canary_checks.config.loading`."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Annotated, Any, get_args

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from canary_checks.config.environment import KubernetesSettings, SandboxSettings, SmokeSettings
from canary_checks.config.gates import Gates
from canary_checks.config.notifications import NotificationSettings
from canary_checks.config.prometheus import CustomQueries, PrometheusSettings, Workloads
from canary_checks.config.rollout import Baseline, RolloutSettings
from canary_checks.config.routing import RoutingSettings
from canary_checks.config.statistics import Statistics
from canary_checks.config.units import (
    COUNT,
    DEFAULT_FAILURE_CODES,
    Duration,
    Mesh,
    _Model,
    check_failure_codes,
    check_namespace,
    check_stage_list,
    check_workload,
)
from canary_checks.errors import ConfigError, redact_url


class CanaryConfig(_Model):
    service: str = "auth"
    """The service under release; a Kubernetes name."""
    namespace: str = "orion"
    """Its namespace."""
    workloads: Workloads = Field(default_factory=Workloads)
    """How stable, canary and baseline are told apart in the metrics."""
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
    baseline: Baseline = Field(default_factory=Baseline)
    """A fresh copy of stable the canary is compared with, instead of stable's long-running pods."""
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    """What the router does besides the weights: sticky canary sessions."""
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    """The local sandbox (canary-checks sandbox up)."""
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    """The smoke suite (suites/smoke): requests to the canary (or stable) before any traffic moves."""

    @model_validator(mode="before")
    @classmethod
    def _load_gate_follows_scaling(cls, value: Any) -> Any:
        """gates.load_per_pod is on by default when the canary's replicas follow its weight (unless the file says
        whether it is enabled)."""
        if not isinstance(value, Mapping) or not _proportional(value.get("rollout")):
            return value
        gates = value.get("gates") or {}
        gate = gates.get("load_per_pod") or {} if isinstance(gates, Mapping) else None
        if not isinstance(gate, Mapping) or "enabled" in gate:
            return value
        return {**value, "gates": {**gates, "load_per_pod": {**gate, "enabled": True}}}

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
        for side in ("stable", "canary", "baseline"):
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
        if self.baseline.enabled and self.routing.sticky.enabled:
            raise ValueError(
                "baseline.enabled and routing.sticky.enabled are both true: a sticky client's cookie names canary or "
                "stable, and a baseline would take clients of neither; turn one of them off"
            )
        if len({self.workload(side) for side in ("stable", "canary", "baseline")}) < 3:
            raise ValueError("workloads: stable, canary and baseline must name three different Deployments")
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

    @property
    def reference(self) -> str:
        """The side the canary is compared with: ``baseline`` when baseline.enabled, else ``stable``."""
        return "baseline" if self.baseline.enabled else "stable"

    @property
    def arms(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """A comparison's two arms as (key, side): ``canary``, and ``stable`` reading the reference's series (the
        baseline's when baseline.enabled). Comparisons keep the key ``stable`` for the arm they judge against."""
        return ("canary", "canary"), ("stable", self.reference)

    def with_baseline(self, enabled: bool = True) -> CanaryConfig:
        """This config with baseline.enabled set (run --baseline, a resumed rollout's record); refused, as in the
        file, with sticky sessions on."""
        if enabled and self.routing.sticky.enabled:
            raise ValueError(
                "a baseline was asked for, but routing.sticky.enabled is true: a sticky client's cookie names canary "
                "or stable, and a baseline would take clients of neither; turn one of them off"
            )
        return self.model_copy(update={"baseline": self.baseline.model_copy(update={"enabled": enabled})})

    def workload(self, side: str) -> str:
        """The Deployment name of ``stable``, ``canary`` or ``baseline``."""
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


def _proportional(rollout: Any) -> bool:
    """Whether a `rollout:` section, as written or as a model, asks for proportional scaling."""
    scaling = rollout.get("scaling") if isinstance(rollout, Mapping) else getattr(rollout, "scaling", None)
    mode = scaling.get("mode") if isinstance(scaling, Mapping) else getattr(scaling, "mode", None)
    return str(mode) == "proportional"


def nearest_stage(config: CanaryConfig, share: float | None) -> int | None:
    """The stage of ``config`` nearest to a traffic share in percent (a live split read from the metrics); none
    without a share."""
    if share is None or not math.isfinite(share):
        return None
    return min(config.stages, key=lambda s: abs(s - share))


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
