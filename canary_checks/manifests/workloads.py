"""Per service: the Deployments, Services, monitors, policies (base.yaml) and the routing per mesh."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from canary_checks.manifests.values import CANARY_REPLICAS, INITIAL_CANARY_WEIGHT, ManifestValues, Obj, ServiceValues
from canary_checks.sticky import ANNOTATION, StickyState, annotation_value, gateway_rules, initial_state, istio_routes


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


def _baseline(v: ManifestValues, svc: ServiceValues) -> Obj:
    """Stable's Deployment as the baseline: its name, labels and selector say baseline, at 0 replicas (the runner
    scales it up with stable's current pod template when a rollout has a baseline)."""
    deployment = _deployment(v, svc, "stable")
    labels = _labels(v, svc, "baseline")
    deployment["metadata"] = _meta(v, f"{svc.name}-baseline", labels)
    spec = deployment["spec"]
    spec["replicas"] = 0
    spec["selector"]["matchLabels"]["version"] = "baseline"
    spec["template"]["metadata"]["labels"] = labels
    return deployment


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
        *(
            (_baseline(v, svc), _service(v, svc, "baseline"), _service_monitor(v, svc, "baseline"))
            if v.baseline
            else ()
        ),
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
                        *([{"destination": {"host": host, "subset": "baseline"}, "weight": 0}] if v.baseline else []),
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
                *([{"name": "baseline", "labels": {"version": "baseline"}}] if v.baseline else []),
            ],
        },
    }
    if v.sticky_cookie is not None:
        state = initial_state(f"{v.namespace}/{svc.name}", INITIAL_CANARY_WEIGHT)
        spec: Any = virtual_service["spec"]
        spec["http"] = istio_routes(spec["http"], v.sticky_cookie, state, stable="stable", canary="canary",
                                    weight=INITIAL_CANARY_WEIGHT)  # fmt: skip
        _annotate(virtual_service, v.sticky_cookie, state)
    return [virtual_service, destination_rule]


def _annotate(obj: Obj, cookie: str, state: StickyState) -> None:
    """The cookies in force, where the runner reads them (canary_checks.sticky)."""
    obj["metadata"].setdefault("annotations", {})[ANNOTATION] = annotation_value(cookie, state)


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
                    *([{"service": f"{svc.name}-baseline", "weight": 0}] if v.baseline else []),
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

    route: Obj = {
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
                        *([backend("baseline", 0)] if v.baseline else []),
                    ],
                },
            ],
        },
    }
    if v.sticky_cookie is not None:
        state = initial_state(f"{v.namespace}/{svc.name}", INITIAL_CANARY_WEIGHT)
        stable, canary = f"{svc.name}-stable", f"{svc.name}-canary"
        route["spec"]["rules"] = gateway_rules(route["spec"]["rules"], v.sticky_cookie, state, stable=stable,
                                               canary=canary, weight=INITIAL_CANARY_WEIGHT)  # fmt: skip
        _annotate(route, v.sticky_cookie, state)
    return [route]
