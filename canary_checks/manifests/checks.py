"""The checks in the cluster: the runner's RBAC, the webhook server, the watchdog, the Argo and Flagger examples,
distributed Locust."""

from __future__ import annotations

from canary_checks.manifests.values import RUN_AS, ManifestValues, Obj, ServiceValues
from canary_checks.manifests.workloads import _container_security, _meta, _pod_security

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
