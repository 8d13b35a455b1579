"""The settings of what runs around the checks: the Kubernetes API, the local sandbox and the smoke requests.

Seam: the models only; :mod:`canary_checks.kube`, :mod:`canary_checks.sandbox` and :mod:`canary_checks.smoke` act
on them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from canary_checks.config.units import PORT, Duration, Range, _Model


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
    """Canary demo instance on 127.0.0.1 (its first pod; more pods, with rollout.scaling, take ports free when the
    sandbox starts)."""
    baseline_port: Annotated[int, PORT] = 18083
    """Baseline demo instance on 127.0.0.1 (started with the sandbox when baseline.enabled)."""
    stable_replicas: Annotated[int, Range("a count of pods", 1, 16)] = 1
    """Stable's pods (the first on stable_port, more on ports free when the sandbox starts): with
    rollout.scaling.mode proportional the canary's pods follow its weight against this many."""
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
