"""Kubernetes manifests and Prometheus alerting for the services, rendered from one base and per-service values.

``canary-checks manifests render`` writes ``manifests/``; a test renders again and compares, so the committed files
never drift from this code. Alert thresholds come from :class:`canary_checks.config.Gates`, the same defaults the
gates use.

Per service (``manifests/<service>/``): ``base.yaml`` (ServiceAccount, stable and canary Deployments, three Services,
ServiceMonitors, NetworkPolicy, PodDisruptionBudgets) and one routing file per mesh: ``istio.yaml``
(VirtualService + DestinationRule), ``linkerd.yaml`` (SMI TrafficSplit), ``gateway-api.yaml`` (HTTPRoute).
Apply ``base.yaml`` and the one for your mesh.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from canary_checks.config import DEFAULT_FAILURE_CODES, Gates, Mesh, check_failure_codes, describe_failures
from canary_checks.prometheus import MESH_METRICS

__all__ = ["SERVICES", "ServiceValues", "render_alerts", "render_all", "write_all"]

Obj = dict[str, Any]

NAMESPACE = "orion"
REGISTRY = "ghcr.io/orion"
RUN_AS = 1001
INITIAL_CANARY_WEIGHT = 5
STABLE_REPLICAS = 3
CANARY_REPLICAS = 1


@dataclass(frozen=True)
class ServiceValues:
    """What differs between the services; everything else is the base."""

    name: str
    stable_tag: str
    canary_tag: str
    cpu_request: str = "100m"
    cpu_limit: str = "500m"
    memory_request: str = "128Mi"
    memory_limit: str = "256Mi"
    port: int = 8080
    env: Mapping[str, str] = field(default_factory=dict)


SERVICES: tuple[ServiceValues, ...] = (
    ServiceValues("auth", "1.8.2", "1.9.0", env={"TOKEN_TTL_SECONDS": "900"}),
    ServiceValues("gateway", "2.3.1", "2.4.0", cpu_request="250m", cpu_limit="1", memory_limit="512Mi"),
    ServiceValues("notifications", "1.2.0", "1.3.0", memory_request="96Mi", memory_limit="192Mi"),
    ServiceValues("user", "3.0.4", "3.1.0", memory_request="192Mi", memory_limit="384Mi"),
)


def _meta(name: str, labels: Mapping[str, str], **extra: Any) -> Obj:
    return {"name": name, "namespace": NAMESPACE, "labels": dict(labels), **extra}


def _labels(svc: ServiceValues, version: str | None = None) -> dict[str, str]:
    labels = {"app": svc.name, "app.kubernetes.io/name": svc.name, "app.kubernetes.io/part-of": "orion"}
    if version:
        labels["version"] = version
    return labels


_CONTAINER_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
_POD_SECURITY: Obj = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _deployment(svc: ServiceValues, version: str) -> Obj:
    tag = svc.stable_tag if version == "stable" else svc.canary_tag
    replicas = STABLE_REPLICAS if version == "stable" else CANARY_REPLICAS
    selector = {"app": svc.name, "version": version}
    probe = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 2}
    container = {
        "name": "app",
        "image": f"{REGISTRY}/{svc.name}:{tag}",
        "imagePullPolicy": "IfNotPresent",
        "ports": [
            {"name": "http", "containerPort": svc.port, "protocol": "TCP"},
            {"name": "http-metrics", "containerPort": 9090, "protocol": "TCP"},
        ],
        "env": [{"name": k, "value": v} for k, v in sorted({**svc.env, "VERSION": version}.items())],
        "resources": {
            "requests": {"cpu": svc.cpu_request, "memory": svc.memory_request},
            "limits": {"cpu": svc.cpu_limit, "memory": svc.memory_limit},
        },
        "startupProbe": {**probe, "failureThreshold": 30, "periodSeconds": 2},
        "livenessProbe": {**probe, "failureThreshold": 3},
        "readinessProbe": {**probe, "httpGet": {"path": "/readyz", "port": "http"}, "failureThreshold": 2},
        "securityContext": _CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(f"{svc.name}-{version}", _labels(svc, version)),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": _labels(svc, version),
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                },
                "spec": {
                    "serviceAccountName": svc.name,
                    "automountServiceAccountToken": False,
                    "securityContext": _POD_SECURITY,
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


def _service(svc: ServiceValues, version: str | None) -> Obj:
    name = svc.name if version is None else f"{svc.name}-{version}"
    selector = {"app": svc.name, **({"version": version} if version else {})}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, _labels(svc, version)),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "http-metrics", "port": 9090, "targetPort": "http-metrics", "protocol": "TCP"},
            ],
        },
    }


def _service_monitor(svc: ServiceValues, version: str) -> Obj:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": _meta(f"{svc.name}-{version}", _labels(svc, version)),
        "spec": {
            "selector": {"matchLabels": {"app": svc.name, "version": version}},
            "namespaceSelector": {"matchNames": [NAMESPACE]},
            "endpoints": [{"port": "http-metrics", "path": "/metrics", "interval": "15s"}],
        },
    }


def _network_policy(svc: ServiceValues) -> Obj:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(svc.name, _labels(svc)),
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


def _pdb(svc: ServiceValues, version: str) -> Obj:
    budget = {"minAvailable": STABLE_REPLICAS - 1} if version == "stable" else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(f"{svc.name}-{version}", _labels(svc, version)),
        "spec": {**budget, "selector": {"matchLabels": {"app": svc.name, "version": version}}},
    }


def render_base(svc: ServiceValues) -> list[Obj]:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(svc.name, _labels(svc)),
        "automountServiceAccountToken": False,
    }
    return [
        account,
        _deployment(svc, "stable"),
        _deployment(svc, "canary"),
        _service(svc, None),
        _service(svc, "stable"),
        _service(svc, "canary"),
        _service_monitor(svc, "stable"),
        _service_monitor(svc, "canary"),
        _network_policy(svc),
        _pdb(svc, "stable"),
        _pdb(svc, "canary"),
    ]


def render_istio(svc: ServiceValues) -> list[Obj]:
    host = svc.name
    virtual_service = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": _meta(svc.name, _labels(svc)),
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
        "metadata": _meta(svc.name, _labels(svc)),
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


def render_linkerd(svc: ServiceValues) -> list[Obj]:
    return [
        {
            "apiVersion": "split.smi-spec.io/v1alpha2",
            "kind": "TrafficSplit",
            "metadata": _meta(svc.name, _labels(svc)),
            "spec": {
                "service": svc.name,
                "backends": [
                    {"service": f"{svc.name}-stable", "weight": 100 - INITIAL_CANARY_WEIGHT},
                    {"service": f"{svc.name}-canary", "weight": INITIAL_CANARY_WEIGHT},
                ],
            },
        }
    ]


def render_gateway_api(svc: ServiceValues) -> list[Obj]:
    def backend(version: str, weight: int | None = None) -> Obj:
        ref: Obj = {"group": "", "kind": "Service", "name": f"{svc.name}-{version}", "port": 80}
        if weight is not None:
            ref["weight"] = weight
        return ref

    return [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": _meta(svc.name, _labels(svc)),
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


def render_rbac() -> list[Obj]:
    """The runner's least privilege: its namespace only, nothing cluster-wide."""
    labels = {"app.kubernetes.io/name": "canary-checks", "app.kubernetes.io/component": "runner"}
    name = "canary-checks-runner"
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
            "metadata": _meta(name, labels),
            "automountServiceAccountToken": True,
        },
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": _meta(name, labels), "rules": rules},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(name, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}],
        },
    ]


CHECKS_IMAGE = f"{REGISTRY}/canary-checks:0.1.0"
"""The checks' own image (docker/checks.Dockerfile): the package, suites/ and pytest."""
CHECKS = "canary-checks"


def checks_pod(command: list[str], *, restart: str | None = None) -> Obj:
    """A Pod spec running the checks' image as the canary-checks ServiceAccount: the config from the
    canary-checks-config ConfigMap at /config/canary.yaml, /tmp writable, and the API token mounted explicitly
    (the kube_* gates read pods and events; nothing else is granted)."""
    container: Obj = {
        "name": "checks",
        "image": CHECKS_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "env": [
            {"name": "CANARY_CONFIG", "value": "/config/canary.yaml"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
        "securityContext": _CONTAINER_SECURITY,
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
        "securityContext": _POD_SECURITY,
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


def render_checks() -> list[Obj]:
    """The checks in the cluster: read-only RBAC for the kube_* gates, and ``canary-checks serve`` behind a Service
    for Flagger's webhooks (the token from the canary-checks-webhook Secret)."""
    labels = {"app.kubernetes.io/name": CHECKS, "app.kubernetes.io/component": "checks"}
    rules = [
        {"apiGroups": [""], "resources": ["pods", "events"], "verbs": ["get", "list"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
    ]
    pod = checks_pod(
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
        ]
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
            "metadata": _meta(CHECKS, labels),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _meta(CHECKS, labels),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _meta(CHECKS, labels),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CHECKS},
            "subjects": [{"kind": "ServiceAccount", "name": CHECKS, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta(f"{CHECKS}-webhook", selector),
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
            "metadata": _meta(CHECKS, selector),
            "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        },
    ]


def render_argo_analysis() -> Obj:
    """Argo Rollouts: an AnalysisTemplate whose Job runs the stage's gate suite until it decides (a first look
    that is only inconclusive holds and looks again, as the runner does)."""
    command = ["canary-checks", "gates", "--stage", "{{args.stage}}", "--service", "{{args.service}}",
               "--namespace", "{{args.namespace}}", "--hold-for", "4m", "--poll-interval", "15s",
               "--reports", "/tmp/reports", "--canary-evidence", "/tmp/evidence.json"]  # fmt: skip
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": _meta(f"{CHECKS}-gates", {"app.kubernetes.io/name": CHECKS}),
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
                                "template": {"spec": checks_pod(command, restart="Never")},
                            }
                        }
                    },
                }
            ],
        },
    }


def render_flagger_canary(svc: ServiceValues) -> Obj:
    """Flagger: a Canary for ``svc`` whose webhooks are answered by ``canary-checks serve``."""
    url = f"http://{CHECKS}.{NAMESPACE}/flagger"
    # Flagger sends no custom header: the shared token travels in each webhook's metadata. Anyone who can read
    # this Canary can read it: keep the token for this use only, and rotate it with the Secret.
    token = {"token": "REPLACE-WITH-THE-canary-checks-webhook-SECRET"}
    hooks = [("smoke", "pre-rollout", "60s"), ("gates", "rollout", "55s"),
             ("gates before each step", "confirm-traffic-increase", "55s"),
             ("gates before promotion", "confirm-promotion", "55s")]  # fmt: skip
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": _meta(svc.name, {"app": svc.name}),
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


def render_load(locustfile: str) -> list[Obj]:
    """Distributed Locust: a master (web UI and API on 8089) and workers running ``load/locustfile.py``."""
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
            "metadata": _meta(f"locust-{role}", {**labels, "app.kubernetes.io/component": role}),
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
            "metadata": _meta("locustfile", labels),
            "data": {"locustfile.py": locustfile},
        },
        deployment("master", 1, ["--master", "--host", "http://gateway.orion.svc.cluster.local"], master_ports),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _meta("locust-master", labels),
            "spec": {
                "selector": {**labels, "app.kubernetes.io/component": "master"},
                "ports": [
                    {"name": "web", "port": 8089, "targetPort": "web"},
                    {"name": "master", "port": 5557, "targetPort": "master"},
                ],
            },
        },
        deployment("worker", 4, ["--worker", "--master-host", "locust-master"], []),
    ]


# ---- Prometheus alerting -------------------------------------------------------------------------------------------

RUNBOOK = "https://github.com/orion/canary-checks/blob/main/docs/deployment/canary-strategy.md"
"""Where each alert's runbook lives: a heading per alert in docs/deployment/canary-strategy.md."""

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
            "runbook_url": f"{RUNBOOK}#{name.lower()}",
        },
    }


def _alerting_rules(gates: Gates, failure_codes: str) -> list[Obj]:
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
    return [
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


def render_alerts(
    mesh: Mesh = Mesh.ISTIO, gates: Gates | None = None, failure_codes: str = DEFAULT_FAILURE_CODES
) -> Obj:
    """The PrometheusRule with every alert of the original system and the recording rules they use; a request
    failed when its status matches ``failure_codes`` (the config's), as in the gates."""
    gates = gates or Gates()
    check_failure_codes(failure_codes)
    suffix = "" if mesh is Mesh.ISTIO else f"-{mesh.value}"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(
            f"canary-alerts{suffix}",
            {"app.kubernetes.io/name": "canary-checks", "prometheus": "k8s", "role": "alert-rules"},
        ),
        "spec": {
            "groups": [
                {"name": "canary.recording", "interval": "30s", "rules": _recording_rules(mesh, failure_codes)},
                {"name": "canary.alerts", "rules": _alerting_rules(gates, failure_codes)},
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
        "metadata": {**_meta("canary-checks-dashboard", {"app.kubernetes.io/name": "canary-checks",
                                                         "grafana_dashboard": "1"}), "namespace": "monitoring"},
        "data": {"canary-overview.json": json.dumps(dashboard, indent=2)},
    }  # fmt: skip


# ---- writing ---------------------------------------------------------------------------------------------------------

_HEADER = "# Written by `canary-checks manifests render` from canary_checks/manifests.py; do not edit by hand.\n"


def _dump(objects: Iterable[Obj]) -> str:
    return _HEADER + "---\n".join(yaml.safe_dump(o, sort_keys=False, width=120) for o in objects)


def render_all(locustfile: str) -> dict[str, str]:
    """Every file under manifests/, path → text."""
    files = {}
    for svc in SERVICES:
        files[f"{svc.name}/base.yaml"] = _dump(render_base(svc))
        files[f"{svc.name}/istio.yaml"] = _dump(render_istio(svc))
        files[f"{svc.name}/linkerd.yaml"] = _dump(render_linkerd(svc))
        files[f"{svc.name}/gateway-api.yaml"] = _dump(render_gateway_api(svc))
    files["rbac/runner.yaml"] = _dump(render_rbac())
    files["checks/webhook.yaml"] = _dump(render_checks())
    files["argo/analysis-template.yaml"] = _dump([render_argo_analysis()])
    files["flagger/canary-auth.yaml"] = _dump([render_flagger_canary(SERVICES[0])])
    files["load/locust.yaml"] = _dump(render_load(locustfile))
    files["monitoring/canary-alerts.yaml"] = _dump([render_alerts(Mesh.ISTIO)])
    files["monitoring/canary-alerts-linkerd.yaml"] = _dump([render_alerts(Mesh.LINKERD)])
    dashboard = render_dashboard()
    files["monitoring/grafana-dashboard.json"] = json.dumps(dashboard, indent=2) + "\n"
    files["monitoring/grafana-dashboard-configmap.yaml"] = _dump([render_dashboard_configmap(dashboard)])
    return files


def write_all(out: Path, locustfile: Path) -> list[Path]:
    written = []
    for relative, text in render_all(locustfile.read_text()).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
