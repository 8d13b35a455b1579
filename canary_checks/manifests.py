"""Kubernetes manifests and Prometheus alerting for the services, rendered from one base and per-service values.

``canary-checks manifests render`` writes them. With no values it renders the demo's four services into
``manifests/`` of this repository (a test renders again and compares, so the committed files never drift from this
code); with a values file (:class:`ManifestValues`, ``--values``) or flags it renders a team's own namespace,
services and images. Alert thresholds come from :class:`canary_checks.config.Gates`, the same defaults the gates use.

Per service (``<out>/<service>/``): ``base.yaml`` (ServiceAccount, stable and canary Deployments, three Services,
ServiceMonitors, NetworkPolicy, PodDisruptionBudgets) and one routing file per mesh: ``istio.yaml``
(VirtualService + DestinationRule), ``linkerd.yaml`` (SMI TrafficSplit), ``gateway-api.yaml`` (HTTPRoute).
Apply ``base.yaml`` and the one for your mesh.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from canary_checks.config import (
    DEFAULT_FAILURE_CODES,
    Gates,
    Mesh,
    check_failure_codes,
    check_namespace,
    describe_failures,
)
from canary_checks.errors import ConfigError
from canary_checks.prometheus import MESH_METRICS

__all__ = [
    "DEMO",
    "SERVICES",
    "LoadValues",
    "ManifestValues",
    "ServiceValues",
    "load_values",
    "render_alerts",
    "render_all",
    "values_reference",
    "values_table",
    "write_all",
]

Obj = dict[str, Any]

RUN_AS = 1001
"""UID and GID of the checks' image (docker/checks.Dockerfile) and the default of a service's ``run_as_user``."""
INITIAL_CANARY_WEIGHT = 5
CANARY_REPLICAS = 1
RUNBOOK = "https://github.com/orion/canary-checks/blob/main/docs/deployment/canary-strategy.md"
"""Where each alert's runbook lives: a heading per alert in docs/deployment/canary-strategy.md."""
CHECKS_IMAGE = "canary-checks:0.1.0"
"""A local tag of docker/checks.Dockerfile's image: no cluster can pull it until you push the image to your registry
and set ``checks_image`` (``manifests render`` says so)."""

# ---- values: what differs between teams and services -----------------------------------------------------------------

_SUFFIX = len("-canary")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _service_name(value: str) -> str:
    if len(value) > 63 - _SUFFIX or not _DNS_1035.match(value):
        raise ValueError(
            f"{value!r} is not a usable service name (lowercase letters, digits and '-', starting with a letter, "
            f"ending with a letter or digit, at most {63 - _SUFFIX} so that '<name>-canary' is a valid Service name)"
        )
    return value


def _image(value: str) -> str:
    if not value or any(c.isspace() for c in value) or value.startswith(("-", ":", "@")):
        raise ValueError(f"{value!r} is not an image reference such as registry.example/cart:1.2")
    return value


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 250m, 1, 128Mi or 1Gi")
    return value


def _env(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a valid environment variable name (letters, digits, '_', '-', '.')")
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes label value (letters, digits, '-', '_', '.', ≤ 63)")
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an HTTP path: it must start with '/'")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Quantity = Annotated[str, AfterValidator(_quantity)]


class ServiceValues(BaseModel):
    """One service: what differs between the services; everything else is the base."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: Annotated[str, AfterValidator(_service_name)]
    """The service: Deployments and Services `<name>-stable`, `<name>-canary`, Service and routing `<name>`."""
    image: Annotated[str, AfterValidator(_image)]
    """Image of the stable Deployment, e.g. `registry.example/cart:1.2`."""
    canary_image: Annotated[str, AfterValidator(_image)] | None = None
    """Image the canary Deployment starts with (default: `image`; `canary-checks run` sets the release's)."""
    port: Port = 8080
    """Container port of the service's HTTP traffic (the Services expose it as port 80)."""
    metrics_port: Port = 9090
    """Container port of the service's own /metrics (ServiceMonitors scrape it)."""
    health_path: Annotated[str, AfterValidator(_path)] = "/healthz"
    """HTTP path of the startup and liveness probes."""
    ready_path: Annotated[str, AfterValidator(_path)] = "/readyz"
    """HTTP path of the readiness probe."""
    replicas: Annotated[int, Field(ge=1)] = 3
    """Replicas of the stable Deployment (the canary has 1; its PodDisruptionBudget keeps all but one)."""
    cpu_request: Quantity = "100m"
    """CPU request of each pod."""
    cpu_limit: Quantity = "500m"
    """CPU limit of each pod (the cpu gate and alert measure usage against it)."""
    memory_request: Quantity = "128Mi"
    """Memory request of each pod."""
    memory_limit: Quantity = "256Mi"
    """Memory limit of each pod (the memory gate and alert measure the working set against it)."""
    env: Annotated[dict[str, str], AfterValidator(_env)] = Field(default_factory=dict)
    """Environment variables of both Deployments (`VERSION` is set to stable or canary)."""
    run_as_user: Annotated[int, Field(ge=1)] = RUN_AS
    """UID and GID the containers run as (non-root; read-only root file system, /tmp writable)."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceValues:
        if self.port == self.metrics_port:
            raise ValueError(f"port and metrics_port are both {self.port}; give the metrics their own port")
        return self


class LoadValues(BaseModel):
    """Distributed Locust (``load/locust.yaml``), written only when there is a locustfile."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    locustfile: Path | None = None
    """Locustfile for a distributed Locust, relative to the values file (default: ./load/locustfile.py if it
    exists; --locustfile wins)."""
    host: str | None = None
    """URL Locust sends its requests to (default: `http://<first service>.<namespace>.svc.cluster.local`)."""
    workers: Annotated[int, Field(ge=1)] = 4
    """Locust worker replicas."""


class ManifestValues(BaseModel):
    """What ``canary-checks manifests render`` renders: a namespace and its services (``--values FILE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    namespace: Annotated[str, AfterValidator(check_namespace)]
    """Namespace of the services, the runner's RBAC, the checks and the alert rules."""
    services: Annotated[list[ServiceValues], Field(min_length=1)]
    """The services, each with at least `name` and `image`."""
    part_of: Annotated[str, AfterValidator(_label_value)] | None = None
    """Value of the `app.kubernetes.io/part-of` label (default: the namespace)."""
    checks_image: Annotated[str, AfterValidator(_image)] = CHECKS_IMAGE
    """Image built from docker/checks.Dockerfile, run by checks/ (`canary-checks serve`) and argo/ (the Job)."""
    runbook_url: str | None = None
    """Your runbook page (e.g. a copy of docs/deployment/canary-strategy.md): each alert links to
    `<runbook_url>#<alert name in lower case>`; unset, the alerts carry no runbook link."""
    flagger_service: str | None = None
    """Service the Flagger Canary example (`flagger/canary-<service>.yaml`) is written for (default: the first)."""
    load: LoadValues = Field(default_factory=LoadValues)
    """Distributed Locust."""

    @model_validator(mode="after")
    def _check(self) -> ManifestValues:
        names = [s.name for s in self.services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"service {twice[0]!r} is listed twice; give each service once")
        if self.flagger_service is not None and self.flagger_service not in names:
            raise ValueError(f"flagger_service {self.flagger_service!r} is not one of the services {names}")
        return self

    @property
    def labels_part_of(self) -> str:
        return self.part_of or self.namespace

    @property
    def load_host(self) -> str:
        return self.load.host or f"http://{self.services[0].name}.{self.namespace}.svc.cluster.local"

    @property
    def flagger(self) -> ServiceValues:
        return next(s for s in self.services if s.name == (self.flagger_service or self.services[0].name))


_DEMO_REGISTRY = "ghcr.io/orion"


def _demo(name: str, stable: str, canary: str, **more: Any) -> ServiceValues:
    return ServiceValues(
        name=name, image=f"{_DEMO_REGISTRY}/{name}:{stable}", canary_image=f"{_DEMO_REGISTRY}/{name}:{canary}", **more
    )


SERVICES: tuple[ServiceValues, ...] = (
    _demo("auth", "1.8.2", "1.9.0", env={"TOKEN_TTL_SECONDS": "900"}),
    _demo("gateway", "2.3.1", "2.4.0", cpu_request="250m", cpu_limit="1", memory_limit="512Mi"),
    _demo("notifications", "1.2.0", "1.3.0", memory_request="96Mi", memory_limit="192Mi"),
    _demo("user", "3.0.4", "3.1.0", memory_request="192Mi", memory_limit="384Mi"),
)
"""The demo's four services (the original system's), what ``manifests render`` writes with no values."""

DEMO = ManifestValues(
    namespace="orion",
    services=list(SERVICES),
    checks_image=f"{_DEMO_REGISTRY}/canary-checks:0.1.0",
    runbook_url=RUNBOOK,
    load=LoadValues(host="http://gateway.orion.svc.cluster.local"),
)
"""This repository's manifests/: the demo's namespace, services and images."""


def _describe(error: ValidationError, raw: Mapping[str, Any]) -> str:
    """One line per problem, naming the key as written in the values file (``services[1] (cart).port``)."""
    lines = []
    for item in error.errors():
        parts: list[str] = []
        loc = list(item["loc"])
        for i, part in enumerate(loc):
            if isinstance(part, int) and i > 0 and loc[i - 1] == "services":
                services = raw.get("services")
                entry = services[part] if isinstance(services, list) and part < len(services) else None
                name = entry.get("name") if isinstance(entry, dict) else None
                parts[-1] += f"[{part}]" + (f" ({name})" if isinstance(name, str) else "")
            else:
                parts.append(str(part))
        key = ".".join(parts) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        bad = item.get("input")
        quiet = item["type"] in ("missing", "extra_forbidden") or isinstance(bad, dict | list) or repr(bad) in msg
        lines.append(f"{key}: {msg}" + ("" if quiet else f" (got {bad!r})"))
    return "; ".join(lines)


_VALUES_FIX = "see every key of the values file in `canary-checks manifests render --help`"


def values_reference() -> list[tuple[str, str, str]]:
    """Every key of the values file as (key, default, meaning), for ``--help`` and manifests/README.md."""
    rows = []
    for prefix, model in (("", ManifestValues), ("services[].", ServiceValues), ("load.", LoadValues)):
        for name, info in model.model_fields.items():
            if name == "load" and model is ManifestValues:
                continue
            if info.is_required():
                default = "required"
            elif info.default_factory is not None:
                default = str(info.default_factory())  # type: ignore[call-arg]
            else:
                default = "—" if info.default is None else str(info.default)
            rows.append((f"{prefix}{name}", default, " ".join((info.description or "").split())))
    return rows


def values_table() -> str:
    """:func:`values_reference` as the Markdown table in manifests/README.md."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in values_reference():
        shown = default if default in ("required", "—") else f"`{default}`"
        rows.append(f"| `{key}` | {shown} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def load_values(
    path: Path | None = None, *, namespace: str | None = None, services: Sequence[tuple[str, str]] = ()
) -> ManifestValues:
    """The values to render: ``path`` (a values file), then the flags on top of it — ``namespace`` replaces the
    file's, each ``(name, image)`` sets that service's image or adds the service. Nothing given: :data:`DEMO`.

    A values file's ``load.locustfile`` is made relative to the file's folder."""
    if path is None and namespace is None and not services:
        return DEMO
    raw: dict[str, Any] = {}
    where = "command line (--namespace, --service)"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read the values file ({e.strerror})", where=where, fix=_VALUES_FIX) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}", where=where, fix="fix the YAML syntax") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                "expected a mapping with at least `namespace:` and `services:`", where=where, fix=_VALUES_FIX
            )
        raw = loaded
        if path is not None and (namespace is not None or services):
            where += " and the command line"
    if namespace is not None:
        raw["namespace"] = namespace
    if services and isinstance(raw.get("services", []), list):  # anything else is the file's error, named below
        entries: list[Any] = list(raw.get("services", []))
        for name, image in services:
            same = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
            if same:
                same[0]["image"] = image
            else:
                entries.append({"name": name, "image": image})
        raw["services"] = entries
    missing = [k for k in ("namespace", "services") if k not in raw]
    if missing:
        flags = {"namespace": "--namespace NS", "services": "--service NAME=IMAGE"}
        raise ConfigError(
            f"{' and '.join(missing)} missing",
            where=where,
            fix=" and ".join(
                f"add `{k}:` to the values file or pass {flags[k]}" if path else f"pass {flags[k]}" for k in missing
            ),
        )
    try:
        values = ManifestValues.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw), where=where, fix=_VALUES_FIX) from None
    if path is not None and values.load.locustfile is not None and not values.load.locustfile.is_absolute():
        load = values.load.model_copy(update={"locustfile": path.parent / values.load.locustfile})
        values = values.model_copy(update={"load": load})
    return values


def _meta(v: ManifestValues, name: str, labels: Mapping[str, str], **extra: Any) -> Obj:
    return {"name": name, "namespace": v.namespace, "labels": dict(labels), **extra}


def _labels(v: ManifestValues, svc: ServiceValues, version: str | None = None) -> dict[str, str]:
    labels = {"app": svc.name, "app.kubernetes.io/name": svc.name, "app.kubernetes.io/part-of": v.labels_part_of}
    if version:
        labels["version"] = version
    return labels


def _container_security(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security(uid: int) -> Obj:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _deployment(v: ManifestValues, svc: ServiceValues, version: str) -> Obj:
    image = svc.image if version == "stable" else (svc.canary_image or svc.image)
    replicas = svc.replicas if version == "stable" else CANARY_REPLICAS
    selector = {"app": svc.name, "version": version}
    probe = {"httpGet": {"path": svc.health_path, "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    container = {
        "name": "app",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "http", "containerPort": svc.port, "protocol": "TCP"},
            {"name": "http-metrics", "containerPort": svc.metrics_port, "protocol": "TCP"},
        ],
        "env": [{"name": key, "value": value} for key, value in sorted({**svc.env, "VERSION": version}.items())],
        "resources": {
            "requests": {"cpu": svc.cpu_request, "memory": svc.memory_request},
            "limits": {"cpu": svc.cpu_limit, "memory": svc.memory_limit},
        },
        "startupProbe": {**probe, "failureThreshold": 30, "periodSeconds": 2},
        "livenessProbe": {**probe, "failureThreshold": 3},
        "readinessProbe": {**probe, "httpGet": {"path": svc.ready_path, "port": "http"}, "failureThreshold": 2},
        "securityContext": _container_security(svc.run_as_user),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(v, f"{svc.name}-{version}", _labels(v, svc, version)),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(v, svc, version),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(svc.metrics_port)},
                },
                "spec": {
                    "serviceAccountName": svc.name,
                    "automountServiceAccountToken": False,
                    "securityContext": _pod_security(svc.run_as_user),
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": {"matchLabels": {"app": svc.name}},
                                    },
                                }
                            ]
                        }
                    },
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    }


def _service(v: ManifestValues, svc: ServiceValues, version: str | None) -> Obj:
    name = svc.name if version is None else f"{svc.name}-{version}"
    selector = {"app": svc.name, **({"version": version} if version else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(v, name, _labels(v, svc, version)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "http-metrics", "port": 9090, "targetPort": "http-metrics", "protocol": "TCP"},
            ],
        },
    }


def _service_monitor(v: ManifestValues, svc: ServiceValues, version: str) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(v, f"{svc.name}-{version}", _labels(v, svc, version)),
        "spec": {
            "selector": {"matchLabels": {"app": svc.name, "version": version}},
            "namespaceSelector": {"matchNames": [v.namespace]},
            "endpoints": [{"port": "http-metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def _network_policy(v: ManifestValues, svc: ServiceValues) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(v, svc.name, _labels(v, svc)),
        "spec": {
            "podSelector": {"matchLabels": {"app": svc.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {}}], "ports": [{"port": "http", "protocol": "TCP"}]},
                {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
                        {"podSelector": {}},
                    ],
                    "ports": [{"port": "http-metrics", "protocol": "TCP"}],
                },
            ],
        },
    }


def _pdb(v: ManifestValues, svc: ServiceValues, version: str) -> Obj:
    budget = {"minAvailable": svc.replicas - 1} if version == "stable" else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(v, f"{svc.name}-{version}", _labels(v, svc, version)),
        "spec": {**budget, "selector": {"matchLabels": {"app": svc.name, "version": version}}},
    }


def render_base(v: ManifestValues, svc: ServiceValues) -> list[Obj]:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(v, svc.name, _labels(v, svc)),
        "automountServiceAccountToken": False,
    }
    return [
        account,
        _deployment(v, svc, "stable"),
        _deployment(v, svc, "canary"),
        _service(v, svc, None),
        _service(v, svc, "stable"),
        _service(v, svc, "canary"),
        _service_monitor(v, svc, "stable"),
        _service_monitor(v, svc, "canary"),
        _network_policy(v, svc),
        _pdb(v, svc, "stable"),
        _pdb(v, svc, "canary"),
    ]


def render_istio(v: ManifestValues, svc: ServiceValues) -> list[Obj]:
    host = svc.name
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _meta(v, svc.name, _labels(v, svc)),
        "spec": {
            "hosts": [host],
            "http": [
                {
                    "name": "canary-header",
                    "match": [{"headers": {"x-canary": {"exact": "true"}}}],
                    "route": [{"destination": {"host": host, "subset": "canary"}}],
                },
                {
                    "name": "primary",
                    "route": [
                        {"destination": {"host": host, "subset": "stable"}, "weight": 100 - INITIAL_CANARY_WEIGHT},
                        {"destination": {"host": host, "subset": "canary"}, "weight": INITIAL_CANARY_WEIGHT},
                    ],
                },
            ],
        },
    }
    destination_rule = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": _meta(v, svc.name, _labels(v, svc)),
        "spec": {
            "host": host,
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": {"maxConnections": 200, "connectTimeout": "2s"},
                    "http": {"http1MaxPendingRequests": 100, "http2MaxRequests": 1000, "maxRetries": 3},
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 5,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
            "subsets": [
                {"name": "stable", "labels": {"version": "stable"}},
                {"name": "canary", "labels": {"version": "canary"}},
            ],
        },
    }
    return [virtual_service, destination_rule]


def render_linkerd(v: ManifestValues, svc: ServiceValues) -> list[Obj]:
    return [
        {
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": _meta(v, svc.name, _labels(v, svc)),
            "spec": {
                "service": svc.name,
                "backends": [
                    {"service": f"{svc.name}-stable", "weight": 100 - INITIAL_CANARY_WEIGHT},
                    {"service": f"{svc.name}-canary", "weight": INITIAL_CANARY_WEIGHT},
                ],
            },
        }
    ]


def render_gateway_api(v: ManifestValues, svc: ServiceValues) -> list[Obj]:
    def backend(version: str, weight: int | None = None) -> Obj:
        ref: Obj = {"group": "", "kind": "Service", "name": f"{svc.name}-{version}", "port": 80}
        if weight is not None:
            ref["weight"] = weight
        return ref

    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": _meta(v, svc.name, _labels(v, svc)),
            "spec": {
                # GAMMA: a route attached to the Service itself, as Linkerd 2.14+ and Istio read it for mesh traffic.
                "parentRefs": [{"group": "", "kind": "Service", "name": svc.name, "port": 80}],
                "rules": [
                    {
                        "matches": [{"headers": [{"type": "Exact", "name": "x-canary", "value": "true"}]}],
                        "backendRefs": [backend("canary")],
                    },
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [
                            backend("stable", 100 - INITIAL_CANARY_WEIGHT),
                            backend("canary", INITIAL_CANARY_WEIGHT),
                        ],
                    },
                ],
            },
        }
    ]


RUNNER = "canary-checks-runner"
"""The runner's ServiceAccount (and the watchdog's: it acts as the runner does)."""


def render_rbac(v: ManifestValues) -> list[Obj]:
    """The runner's least privilege: its namespace only, nothing cluster-wide. The rollout's record and its lease
    are an annotation on the canary Deployment, written with its resourceVersion: get and patch cover it."""
    labels = {"app.kubernetes.io/name": "canary-checks", "app.kubernetes.io/component": "runner"}
    name = RUNNER
    rules = [
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["virtualservices"], "verbs": ["get", "patch"]},
        {"apiGroups": ["networking.istio.io"], "resources": ["destinationrules"], "verbs": ["get"]},
        {"apiGroups": ["split.smi-spec.io"], "resources": ["trafficsplits"], "verbs": ["get", "patch"]},
        {"apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": ["get", "patch"]},
    ]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(v, name, labels),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(v, name, labels),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(v, name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": v.namespace}],
        },
    ]


CHECKS = "canary-checks"


def checks_pod(v: ManifestValues, command: list[str], *, restart: str | None = None) -> Obj:
    """A Pod spec running the checks' image as the canary-checks ServiceAccount: the config from the
    canary-checks-config ConfigMap at /config/canary.yaml, /tmp writable, and the API token mounted explicitly
    (the kube_* gates read pods and events; nothing else is granted)."""
    container: Obj = {
        "name": "checks",
        "image": v.checks_image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [
            {"name": "CANARY_CONFIG", "value": "/config/canary.yaml"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": _container_security(RUN_AS),
        "volumeMounts": [
            {"name": "config", "mountPath": "/config", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "api", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
        ],
    }
    api_token = {
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
            ]
        }
    }
    pod: Obj = {
        "serviceAccountName": CHECKS,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(RUN_AS),
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": f"{CHECKS}-config"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "api", **api_token},
        ],
    }
    if restart:
        pod["restartPolicy"] = restart
    return pod


def render_checks(v: ManifestValues) -> list[Obj]:
    """The checks in the cluster: read-only RBAC for the kube_* gates, and ``canary-checks serve`` behind a Service
    for Flagger's webhooks (the token from the canary-checks-webhook Secret)."""
    labels = {"app.kubernetes.io/name": CHECKS, "app.kubernetes.io/component": "checks"}
    rules = [
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]
    pod = checks_pod(
        v,
        [
            "canary-checks",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "8080",
            "--reports",
            "/tmp/reports",
            "--token-file",
            "/secrets/token",
            "--suite-timeout",
            "50s",
        ],
    )
    container = pod["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    container["volumeMounts"].append({"name": "token", "mountPath": "/secrets", "readOnly": True})
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    container["readinessProbe"] = probe
    container["livenessProbe"] = {**probe, "failureThreshold": 3}
    pod["volumes"].append({"name": "token", "secret": {"secretName": f"{CHECKS}-webhook"}})
    selector = {"app.kubernetes.io/name": CHECKS, "app.kubernetes.io/component": "webhook"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta(v, CHECKS, labels),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(v, CHECKS, labels),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(v, CHECKS, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CHECKS},
            "subjects": [{"kind": "ServiceAccount", "name": CHECKS, "namespace": v.namespace}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(v, f"{CHECKS}-webhook", selector),
            "spec": {
                "replicas": 1,  # one process: "one suite at a time per service" holds across all calls
                "selector": {"matchLabels": selector},
                "strategy": {"type": "Recreate"},
                "template": {"metadata": {"labels": selector}, "spec": pod},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(v, CHECKS, selector),
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
    ]


def render_watch(v: ManifestValues) -> Obj:
    """``canary-checks watch``: rolls back a rollout whose runner went silent (its lease expired). It acts as the
    runner does, so it runs as the runner's ServiceAccount (rbac/runner.yaml): list and patch the canary
    Deployments (their rollout records), scale them, and patch the routing resource."""
    selector = {"app.kubernetes.io/name": CHECKS, "app.kubernetes.io/component": "watch"}
    pod = checks_pod(v, ["canary-checks", "watch", "--interval", "10s", "--reports", "/tmp/reports"])
    pod["serviceAccountName"] = RUNNER
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(v, f"{CHECKS}-watch", selector),
        "spec": {
            "replicas": 1,  # two watchdogs would only race to the same rollback; the record keeps that safe
            "selector": {"matchLabels": selector},
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": dict(selector)}, "spec": pod},
        },
    }


def render_argo_analysis(v: ManifestValues) -> Obj:
    """Argo Rollouts: an AnalysisTemplate whose Job runs the stage's gate suite until it decides (a first look
    that is only inconclusive holds and looks again, as the runner does)."""
    command = ["canary-checks", "gates", "--stage", "{{args.stage}}", "--service", "{{args.service}}",
               "--namespace", "{{args.namespace}}", "--hold-for", "4m", "--poll-interval", "15s",
               "--reports", "/tmp/reports", "--canary-evidence", "/tmp/evidence.json"]  # fmt: skip
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": _meta(v, f"{CHECKS}-gates", {"app.kubernetes.io/name": CHECKS}),
        "spec": {
            "args": [{"name": "service"}, {"name": "namespace"}, {"name": "stage"}],
            "metrics": [
                {
                    "name": "gates",
                    "failureLimit": 0,
                    "provider": {
                        "job": {
                            "spec": {
                                "backoffLimit": 0,
                                "activeDeadlineSeconds": 300,
                                "template": {"spec": checks_pod(v, command, restart="Never")},
                            }
                        }
                    },
                }
            ],
        },
    }


def render_flagger_canary(v: ManifestValues, svc: ServiceValues) -> Obj:
    """Flagger: a Canary for ``svc`` whose webhooks are answered by ``canary-checks serve``."""
    url = f"http://{CHECKS}.{v.namespace}/flagger"
    # Flagger sends no custom header: the shared token travels in each webhook's metadata. Anyone who can read
    # this Canary can read it: keep the token for this use only, and rotate it with the Secret.
    token = {"token": "REPLACE-WITH-THE-canary-checks-webhook-SECRET"}
    hooks = [("smoke", "pre-rollout", "60s"), ("gates", "rollout", "55s"),
             ("gates before each step", "confirm-traffic-increase", "55s"),
             ("gates before promotion", "confirm-promotion", "55s")]  # fmt: skip
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": _meta(v, svc.name, {"app": svc.name}),
        "spec": {
            "provider": "istio",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc.name},
            "service": {"port": svc.port},
            "analysis": {
                "interval": "1m",
                "threshold": 3,
                "stepWeights": [5, 25, 50],
                "webhooks": [
                    {"name": name, "type": hook, "url": f"{url}/{hook}", "timeout": timeout, "metadata": token}
                    for name, hook, timeout in hooks
                ],
            },
        },
    }


LOCUST_IMAGE = "locustio/locust:2.47.0"


def render_load(v: ManifestValues, locustfile: str) -> list[Obj]:
    """Distributed Locust: a master (web UI and API on 8089) and workers running ``locustfile`` (its text)
    against ``load.host``."""
    labels = {"app.kubernetes.io/name": "locust", "app.kubernetes.io/part-of": "canary-checks"}

    def pod(role: str, args: list[str], ports: list[Obj]) -> Obj:
        return {
            "metadata": {"labels": {**labels, "app.kubernetes.io/component": role}},
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "locust",
                        "image": LOCUST_IMAGE,
                        "args": ["-f", "/load/locustfile.py", *args],
                        "ports": ports,
                        "resources": {
                            "requests": {"cpu": "500m", "memory": "256Mi"},
                            "limits": {"cpu": "1", "memory": "512Mi"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "load", "mountPath": "/load"}, {"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [
                    {"name": "load", "configMap": {"name": "locustfile"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        }

    def deployment(role: str, replicas: int, args: list[str], ports: list[Obj]) -> Obj:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(v, f"locust-{role}", {**labels, "app.kubernetes.io/component": role}),
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {**labels, "app.kubernetes.io/component": role}},
                "template": pod(role, args, ports),
            },
        }

    master_ports = [{"name": "web", "containerPort": 8089}, {"name": "master", "containerPort": 5557}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(v, "locustfile", labels),
            "data": {"locustfile.py": locustfile},
        },
        deployment("master", 1, ["--master", "--host", v.load_host], master_ports),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta(v, "locust-master", labels),
            "spec": {
                "selector": {**labels, "app.kubernetes.io/component": "master"},
                "ports": [
                    {"name": "web", "port": 8089, "targetPort": "web"},
                    {"name": "master", "port": 5557, "targetPort": "master"},
                ],
            },
        },
        deployment("worker", v.load.workers, ["--worker", "--master-host", "locust-master"], []),
    ]


# ---- Prometheus alerting -------------------------------------------------------------------------------------------

_CANARY_POD = ".+-canary-[a-z0-9]+-[a-z0-9]+"
_STABLE_POD = ".+-stable-[a-z0-9]+-[a-z0-9]+"


def _by_service(expr: str, label: str, side: str, namespace_label: str = "namespace", *, pod: bool = False) -> str:
    """``expr`` with a ``service`` label taken from the workload (or pod) name, and a ``namespace`` label."""
    pattern = f"(.+)-{side}-[a-z0-9]+-[a-z0-9]+" if pod else f"(.+)-{side}"
    with_service = f'label_replace({expr}, "service", "$1", "{label}", "{pattern}")'
    if namespace_label == "namespace":
        return with_service
    return f'label_replace({with_service}, "namespace", "$1", "{namespace_label}", "(.*)")'


def _recording_rules(mesh: Mesh, failure_codes: str) -> list[Obj]:
    m = MESH_METRICS[mesh]
    failed, succeeded = m.outcomes(failure_codes)

    def side_of(side: str) -> str:
        return f'{m.workload}=~".+-{side}"'

    def traffic(side: str, *more: str) -> str:
        selector = f"{m.requests}{{{m.matchers(*more, side_of(side))}}}"
        return f"sum by (namespace, service) ({_by_service(f'rate({selector}[5m])', m.workload, side, m.namespace)})"

    def latency(quantile: float, side: str) -> str:
        selector = f"{m.buckets}{{{m.matchers(side_of(side))}}}"
        inner = _by_service(f"rate({selector}[5m])", m.workload, side, m.namespace)
        return f"histogram_quantile({quantile}, sum by (le, namespace, service) ({inner}))"

    def resource(usage: str, resource_name: str) -> str:
        used = _by_service(usage, "pod", "canary", pod=True)
        limit = _by_service(
            f'kube_pod_container_resource_limits{{resource="{resource_name}", pod=~"{_CANARY_POD}"}}',
            "pod",
            "canary",
            pod=True,
        )
        return f"100 * sum by (namespace, service, pod) ({used}) / sum by (namespace, service, pod) ({limit})"

    rules: list[Obj] = []
    for side in ("canary", "stable"):
        rules.append({"record": f"{side}:request_rate:5m", "expr": traffic(side)})
        # No failed series yet means no errors: count them as 0 where the side has traffic.
        errors = f"({traffic(side, failed)} or {side}:request_rate:5m * 0)"
        rules.append({"record": f"{side}:error_rate:5m", "expr": f"100 * {errors} / {side}:request_rate:5m"})
    successes = f"({traffic('canary', succeeded)} or canary:request_rate:5m * 0)"
    rules.append({"record": "canary:success_rate:5m", "expr": f"100 * {successes} / canary:request_rate:5m"})
    for quantile in (0.5, 0.95, 0.99):
        rules.append({"record": f"canary:latency_p{round(quantile * 100)}:5m", "expr": latency(quantile, "canary")})
    rules.append({"record": "stable:latency_p95:5m", "expr": latency(0.95, "stable")})
    rules.append(
        {
            "record": "canary:traffic_percentage:5m",
            "expr": "100 * canary:request_rate:5m / (canary:request_rate:5m + stable:request_rate:5m)",
        }
    )
    cpu = f'rate(container_cpu_usage_seconds_total{{container!="", container!="POD", pod=~"{_CANARY_POD}"}}[5m])'
    memory = f'container_memory_working_set_bytes{{container!="", container!="POD", pod=~"{_CANARY_POD}"}}'
    rules.append({"record": "canary:cpu_usage:5m", "expr": resource(cpu, "cpu")})
    rules.append({"record": "canary:memory_usage:5m", "expr": resource(memory, "memory")})
    return rules


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> Obj:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
        },
    }


def _alerting_rules(gates: Gates, failure_codes: str, runbook: str | None) -> list[Obj]:
    g = gates
    svc = "{{ $labels.service }} in {{ $labels.namespace }}"
    canary_pods = f'pod=~"{_CANARY_POD}"'

    def pods(expr: str, side: str = "canary") -> str:
        return _by_service(expr, "pod", side, pod=True)

    def deployments(expr: str) -> str:
        return _by_service(expr, "deployment", "canary")

    ready_pods = f'kube_pod_status_ready{{condition="true", {canary_pods}}}'
    working_set = 'container_memory_working_set_bytes{container!="", container!="POD", pod=~"%s"}'
    crash_looping = f'kube_pod_container_status_waiting_reason{{reason="CrashLoopBackOff", {canary_pods}}} == 1'
    stable_ready = f'kube_pod_status_ready{{condition="true", pod=~"{_STABLE_POD}"}}'
    created = 'kube_deployment_created{deployment=~".+-canary"}'
    desired = 'kube_deployment_spec_replicas{deployment=~".+-canary"}'
    available = 'kube_deployment_status_replicas_available{deployment=~".+-canary"}'
    gate_severity = {name: getattr(g, name).severity.value for name in Gates.model_fields}
    alerts = [
        _alert(
            "CanaryHighErrorRate",
            f"canary:error_rate:5m > {g.error_rate.threshold:g}",
            "2m",
            gate_severity["error_rate"],
            f"Canary of {svc} answers more than {g.error_rate.threshold:g} % of requests with "
            f"{describe_failures(failure_codes)}",
            'Canary error rate is {{ $value | printf "%.2f" }} % over 5 minutes '
            f"(threshold {g.error_rate.threshold:g} %).",
        ),
        _alert(
            "CanaryErrorRateHigherThanStable",
            f"canary:error_rate:5m > {g.error_rate_vs_stable.threshold:g} * stable:error_rate:5m",
            "5m",
            gate_severity["error_rate_vs_stable"],
            f"Canary of {svc} fails more than {g.error_rate_vs_stable.threshold:g}x as often as stable",
            'Canary error rate is {{ $value | printf "%.2f" }} %, more than '
            f"{g.error_rate_vs_stable.threshold:g} times stable's.",
        ),
        _alert(
            "CanaryHighLatencyP95",
            f"canary:latency_p95:5m > {g.latency_p95.threshold:g}",
            "5m",
            gate_severity["latency_p95"],
            f"Canary of {svc} p95 latency above {g.latency_p95.threshold:g} ms",
            f'Canary p95 latency is {{{{ $value | printf "%.0f" }}}} ms (threshold {g.latency_p95.threshold:g} ms).',
        ),
        _alert(
            "CanaryHighLatencyP99",
            f"canary:latency_p99:5m > {g.latency_p99.threshold:g}",
            "5m",
            gate_severity["latency_p99"],
            f"Canary of {svc} p99 latency above {g.latency_p99.threshold:g} ms",
            f'Canary p99 latency is {{{{ $value | printf "%.0f" }}}} ms (threshold {g.latency_p99.threshold:g} ms).',
        ),
        _alert(
            "CanaryLatencyHigherThanStable",
            f"canary:latency_p95:5m > {g.latency_vs_stable.threshold:g} * stable:latency_p95:5m",
            "5m",
            gate_severity["latency_vs_stable"],
            f"Canary of {svc} is more than {g.latency_vs_stable.threshold:g}x slower than stable at p95",
            'Canary p95 latency is {{ $value | printf "%.0f" }} ms, more than '
            f"{g.latency_vs_stable.threshold:g} times stable's.",
        ),
        _alert(
            "CanaryLowSuccessRate",
            f"canary:success_rate:5m < {g.success_rate.threshold:g}",
            "2m",
            gate_severity["success_rate"],
            f"Canary of {svc} succeeds on fewer than {g.success_rate.threshold:g} % of requests",
            f'Canary success rate is {{{{ $value | printf "%.2f" }}}} % (threshold {g.success_rate.threshold:g} %).',
        ),
        _alert(
            "CanaryPodsNotReady",
            f"max by (namespace, service, pod) ({pods(ready_pods)}) == 0",
            "5m",
            "warning",
            f"A canary pod of {svc} is not ready",
            "Pod {{ $labels.pod }} has not been ready for 5 minutes.",
        ),
        _alert(
            "CanaryHighCPUUsage",
            f"canary:cpu_usage:5m > {g.cpu.threshold:g}",
            "5m",
            gate_severity["cpu"],
            f"Canary pod of {svc} uses more than {g.cpu.threshold:g} % of its CPU limit",
            'Pod {{ $labels.pod }} uses {{ $value | printf "%.0f" }} % of its CPU limit.',
        ),
        _alert(
            "CanaryHighMemoryUsage",
            f"canary:memory_usage:5m > {g.memory.threshold:g}",
            "5m",
            gate_severity["memory"],
            f"Canary pod of {svc} uses more than {g.memory.threshold:g} % of its memory limit",
            'Pod {{ $labels.pod }} uses {{ $value | printf "%.0f" }} % of its memory limit.',
        ),
        _alert(
            "CanaryMemoryUsageHigherThanStable",
            f"avg by (namespace, service) ({pods(working_set % _CANARY_POD)}) > {g.memory_vs_stable.threshold:g} "
            f"* avg by (namespace, service) ({pods(working_set % _STABLE_POD, 'stable')})",
            "10m",
            gate_severity["memory_vs_stable"],
            f"Canary of {svc} uses more than {g.memory_vs_stable.threshold:g}x stable's memory per pod",
            "Canary working set per pod is {{ $value | humanize1024 }}B.",
        ),
        _alert(
            "CanaryReceivingNoTraffic",
            f"canary:request_rate:5m <= {g.traffic_received.threshold:g} or (sum by (namespace, service) "
            f"({pods(ready_pods)}) > 0 unless canary:request_rate:5m)",
            "5m",
            gate_severity["traffic_received"],
            f"Canary of {svc} receives no traffic",
            "The canary has ready pods but has received no request for 5 minutes; check the routing weights.",
        ),
        _alert(
            "CanaryTrafficSplitMisconfigured",
            "canary:traffic_percentage:5m > 50",
            "5m",
            gate_severity["traffic_split"],
            f"Canary of {svc} receives more than half of the traffic",
            'The canary receives {{ $value | printf "%.0f" }} % of requests; before promotion it should not '
            "carry the majority.",
        ),
        _alert(
            "CanaryVersionDivergence",
            f"count by (namespace, service) ({pods(ready_pods)}) unless count by (namespace, service) "
            f"({pods(stable_ready, 'stable')})",
            "10m",
            "info",
            f"Canary of {svc} runs with no stable baseline",
            "There are canary pods but no stable pods: nothing to compare the canary with.",
        ),
        _alert(
            "CanaryStagnant",
            f"time() - max by (namespace, service) ({deployments(created)}) > 86400 "
            f"and on (namespace, service) ({deployments(desired)} > 0)",
            "1h",
            "info",
            f"Canary of {svc} has been running for more than 24 hours",
            "The canary Deployment was created {{ $value | humanizeDuration }} ago; promote it or roll it back.",
        ),
        _alert(
            "CanaryPodCrashLooping",
            f"max by (namespace, service, pod, container) ({pods(crash_looping)}) == 1",
            "1m",
            gate_severity["crash_loop"],
            f"Canary pod of {svc} is crash looping",
            "Container {{ $labels.container }} of {{ $labels.pod }} is in CrashLoopBackOff.",
        ),
        _alert(
            "CanaryReadinessProbesFailing",
            "sum by (namespace, service, pod) ("
            + pods(f'increase(prober_probe_total{{probe_type="Readiness", result="failed", {canary_pods}}}[5m])')
            + ") > 0",
            "5m",
            "warning",
            f"Readiness probes of a canary pod of {svc} fail",
            '{{ $labels.pod }} failed {{ $value | printf "%.0f" }} readiness probes in 5 minutes.',
        ),
        _alert(
            "CanaryLivenessProbesFailing",
            "sum by (namespace, service, pod) ("
            + pods(f'increase(prober_probe_total{{probe_type="Liveness", result="failed", {canary_pods}}}[5m])')
            + ") > 0",
            "2m",
            "critical",
            f"Liveness probes of a canary pod of {svc} fail",
            '{{ $labels.pod }} failed {{ $value | printf "%.0f" }} liveness probes in 5 minutes.',
        ),
        _alert(
            "CanaryRolloutStalled",
            f"{deployments(desired)} > {deployments(available)}",
            "15m",
            "warning",
            f"Canary rollout of {svc} is stalled",
            "The canary Deployment has had fewer available replicas than desired for 15 minutes.",
        ),
        _alert(
            "CanaryAutomatedRollbackRecommended",
            f"canary:error_rate:5m > {g.error_rate.threshold:g}"
            f" or canary:success_rate:5m < {g.success_rate.threshold:g}"
            f" or canary:latency_p99:5m > {g.latency_p99.threshold:g}"
            f" or count by (namespace, service) ({pods(crash_looping)}) > 0",
            "2m",
            "critical",
            f"Roll back the canary of {svc}",
            "A critical canary gate has been breached for 2 minutes: set the canary weight to 0 and scale the "
            "canary down (see the runbook).",
        ),
    ]
    for alert in alerts if runbook else ():
        alert["annotations"]["runbook_url"] = f"{runbook}#{alert['alert'].lower()}"
    return alerts


def render_alerts(
    mesh: Mesh = Mesh.ISTIO,
    gates: Gates | None = None,
    failure_codes: str = DEFAULT_FAILURE_CODES,
    values: ManifestValues | None = None,
) -> Obj:
    """The PrometheusRule with every alert of the original system and the recording rules they use, in the
    namespace of ``values`` (default: the demo's) with its ``runbook_url``; a request failed when its status matches
    ``failure_codes`` (the config's), as in the gates."""
    gates = gates or Gates()
    check_failure_codes(failure_codes)
    v = values or DEMO
    suffix = "" if mesh is Mesh.ISTIO else f"-{mesh.value}"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(
            v,
            f"canary-alerts{suffix}",
            {"app.kubernetes.io/name": "canary-checks", "prometheus": "k8s", "role": "alert-rules"},
        ),
        "spec": {
            "groups": [
                {"name": "canary.recording", "interval": "30s", "rules": _recording_rules(mesh, failure_codes)},
                {"name": "canary.alerts", "rules": _alerting_rules(gates, failure_codes, v.runbook_url)},
            ]
        },
    }


# ---- Grafana dashboard -----------------------------------------------------------------------------------------------

DASHBOARD_UID = "canary-checks"
_SEL = 'namespace="$namespace", service="$service"'


def dashboard_panels(gates: Gates | None = None) -> list[Obj]:
    """The dashboard's panels: (title, unit, [(legend, PromQL)], threshold) as Grafana timeseries panels. The
    queries are the recording rules the alerts use (manifests/monitoring) and the gates' own series."""
    g = gates or Gates()
    canary_pods = 'pod=~"$service-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"'
    specs: list[tuple[str, str, list[tuple[str, str]], float | None]] = [
        ("Error rate, canary vs stable", "percent",
         [("canary", f"canary:error_rate:5m{{{_SEL}}}"), ("stable", f"stable:error_rate:5m{{{_SEL}}}")],
         g.error_rate.threshold),
        ("Request rate", "reqps",
         [("canary", f"canary:request_rate:5m{{{_SEL}}}"), ("stable", f"stable:request_rate:5m{{{_SEL}}}")], None),
        ("Latency", "ms",
         [("canary p50", f"canary:latency_p50:5m{{{_SEL}}}"), ("canary p95", f"canary:latency_p95:5m{{{_SEL}}}"),
          ("canary p99", f"canary:latency_p99:5m{{{_SEL}}}"), ("stable p95", f"stable:latency_p95:5m{{{_SEL}}}")],
         g.latency_p95.threshold),
        ("Success rate, canary", "percent", [("canary", f"canary:success_rate:5m{{{_SEL}}}")],
         g.success_rate.threshold),
        ("Traffic to the canary", "percent", [("canary share", f"canary:traffic_percentage:5m{{{_SEL}}}")], None),
        ("CPU, canary pods", "percent", [("{{pod}}", f"canary:cpu_usage:5m{{{_SEL}}}")], g.cpu.threshold),
        ("Memory, canary pods", "percent", [("{{pod}}", f"canary:memory_usage:5m{{{_SEL}}}")], g.memory.threshold),
        ("Restarts, canary containers", "short",
         [("{{pod}}/{{container}}", "sum by (pod, container) (increase(kube_pod_container_status_restarts_total"
           f'{{namespace="$namespace", {canary_pods}}}[5m]))')], None),
    ]  # fmt: skip
    panels = []
    for i, (title, unit, targets, threshold) in enumerate(specs):
        steps: list[Obj] = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}},
                    },
                    "overrides": [],
                },
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
                "targets": [
                    {
                        "refId": chr(ord("A") + k),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for k, (legend, expr) in enumerate(targets)
                ],
            }
        )
    return panels


def render_dashboard(gates: Gates | None = None) -> Obj:
    """Grafana dashboard (the dashboard JSON model) for one service's canary, templated by namespace and service."""
    return {
        "uid": DASHBOARD_UID,
        "title": "Canary overview",
        "description": "Stable vs canary for one service, from the canary-checks recording rules; decisions of "
        "the runner as annotations (notifications kind grafana).",
        "tags": ["canary-checks", "canary"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "namespace",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(canary:request_rate:5m, namespace)", "refId": "namespace"},
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "service",
                    "type": "query",
                    "label": "service",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(canary:request_rate:5m{namespace="$namespace"}, service)',
                        "refId": "service",
                    },
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "canary decisions",
                    "enable": True,
                    "hide": False,
                    "iconColor": "orange",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "target": {"type": "tags", "tags": ["canary-checks", "$service"], "matchAny": False, "limit": 100},
                },
                {
                    "name": "canary alerts",
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": f'ALERTS{{alertstate="firing", alertname=~"Canary.+", {_SEL}}}',
                },
            ]
        },
        "panels": dashboard_panels(gates),
    }


def render_dashboard_configmap(dashboard: Obj) -> Obj:
    """The dashboard as a ConfigMap the Grafana sidecar (kiwigrid k8s-sidecar, label grafana_dashboard) loads."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "canary-checks-dashboard", "namespace": "monitoring",
                     "labels": {"app.kubernetes.io/name": "canary-checks", "grafana_dashboard": "1"}},
        "data": {"canary-overview.json": json.dumps(dashboard, indent=2)},
    }  # fmt: skip


# ---- writing ---------------------------------------------------------------------------------------------------------

_HEADER = "# Written by `canary-checks manifests render` from canary_checks/manifests.py; do not edit by hand.\n"


def _dump(objects: Iterable[Obj]) -> str:
    return _HEADER + "---\n".join(yaml.safe_dump(o, sort_keys=False, width=120) for o in objects)


def render_all(values: ManifestValues = DEMO, locustfile: str | None = None) -> dict[str, str]:
    """Every file to write, path → text: per service base and routing, RBAC, the checks, Argo and Flagger
    examples, the alert rules and dashboard, and distributed Locust when ``locustfile`` (its text) is given."""
    v = values
    files = {}
    for svc in v.services:
        files[f"{svc.name}/base.yaml"] = _dump(render_base(v, svc))
        files[f"{svc.name}/istio.yaml"] = _dump(render_istio(v, svc))
        files[f"{svc.name}/linkerd.yaml"] = _dump(render_linkerd(v, svc))
        files[f"{svc.name}/gateway-api.yaml"] = _dump(render_gateway_api(v, svc))
    files["rbac/runner.yaml"] = _dump(render_rbac(v))
    files["checks/webhook.yaml"] = _dump(render_checks(v))
    files["checks/watch.yaml"] = _dump([render_watch(v)])
    files["argo/analysis-template.yaml"] = _dump([render_argo_analysis(v)])
    files[f"flagger/canary-{v.flagger.name}.yaml"] = _dump([render_flagger_canary(v, v.flagger)])
    if locustfile is not None:
        files["load/locust.yaml"] = _dump(render_load(v, locustfile))
    files["monitoring/canary-alerts.yaml"] = _dump([render_alerts(Mesh.ISTIO, values=v)])
    files["monitoring/canary-alerts-linkerd.yaml"] = _dump([render_alerts(Mesh.LINKERD, values=v)])
    dashboard = render_dashboard()
    files["monitoring/grafana-dashboard.json"] = json.dumps(dashboard, indent=2) + "\n"
    files["monitoring/grafana-dashboard-configmap.yaml"] = _dump([render_dashboard_configmap(dashboard)])
    return files


def write_all(out: Path, values: ManifestValues = DEMO, locustfile: Path | None = None) -> list[Path]:
    """Render and write under ``out``; ``locustfile`` (else ``values.load.locustfile``) adds distributed Locust."""
    locustfile = locustfile or values.load.locustfile
    text = None
    if locustfile is not None:
        try:
            text = locustfile.read_text()
        except OSError as e:
            raise ConfigError(
                f"cannot read the locustfile ({e.strerror})",
                where=str(locustfile),
                fix="pass an existing file to --locustfile (or load.locustfile in the values file), or leave it out",
            ) from None
    written = []
    for relative, content in render_all(values, text).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
