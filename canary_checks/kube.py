"""Kubernetes API access with the official client: typed errors, logged retries, and the canary's health facts.

Every call goes through :func:`call`, which turns ``ApiException`` into the :class:`~canary_checks.errors.KubeError`
tree and retries conflicts and server errors, saying so::

    PATCH virtualservices/auth attempt 2/4 failed (409 Conflict); retrying in 0.5 s
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3
from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from canary_checks.errors import CanaryError, KubeConflict, KubeError, KubeNotFound, KubeServerError, KubeUnreachable
from canary_checks.record import RecordConflict, version_of

__all__ = [
    "STATE_ANNOTATION",
    "CanaryHealth",
    "KubePlatform",
    "PodHealth",
    "api_client",
    "call",
    "canary_health",
    "label_selector",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

STATE_ANNOTATION = "canary-checks.io/rollout"
"""Annotation on the canary Deployment holding the rollout's durable record (JSON)."""
ATTEMPTS = 4
BACKOFF = 0.25
"""Seconds before the first retry; doubles each time."""


def api_client(api_url: str | None = None, *, context: str | None = None, verify_tls: bool = True) -> client.ApiClient:
    """A client for ``api_url`` (tests, proxies), else in-cluster config, else the kubeconfig (``context``)."""
    if api_url:
        configuration = client.Configuration(host=api_url.rstrip("/"))
        configuration.verify_ssl = verify_tls
        return client.ApiClient(configuration)
    try:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except kube_config.ConfigException:
        pass
    try:
        api: client.ApiClient = kube_config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
        return api
    except (kube_config.ConfigException, FileNotFoundError, TypeError) as e:
        raise KubeUnreachable(
            f"no Kubernetes credentials: {e}",
            where="kubeconfig",
            fix="run inside the cluster, or point KUBECONFIG at a kubeconfig (and --context at its context)",
        ) from e


def _reason(status: int | None) -> str:
    return {404: "Not Found", 409: "Conflict", 422: "Invalid", 403: "Forbidden", 401: "Unauthorized"}.get(
        status or 0, "server error" if (status or 0) >= 500 else str(status)
    )


def _typed(error: ApiException, what: str) -> KubeError:
    status = int(error.status) if error.status else None
    body = str(error.body or "")
    text = f"{what} answered {status} {_reason(status)}"
    if status == 404:
        return KubeNotFound(text, status=status, body=body, fix="check the name and namespace, and that its CRD exists")
    if status == 409:
        return KubeConflict(text, status=status, body=body)
    if status is not None and status >= 500:
        return KubeServerError(text, status=status, body=body, fix="check the API server's health")
    if status in (401, 403):
        return KubeError(
            text, status=status, body=body, fix="grant the runner's Role (manifests/rbac/runner.yaml) to this identity"
        )
    return KubeError(text, status=status, body=body)


def call(what: str, fn: Callable[[], T], *, attempts: int = ATTEMPTS, retry_conflict: bool = True) -> T:
    """Run one API call; retry 409 (when ``retry_conflict``), 5xx and connection errors, logging each retry.

    ``fn`` must redo its own read when a conflict is retried (a closure over a fresh GET), so a retry never
    writes over a change it has not seen."""
    delay = BACKOFF
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except ApiException as e:
            error: KubeError = _typed(e, what)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            error = KubeUnreachable(f"{what} got no answer ({type(e).__name__})", fix="is the API server reachable?")
        retriable = isinstance(error, KubeServerError | KubeUnreachable) or (
            retry_conflict and isinstance(error, KubeConflict)
        )
        if not retriable or attempt == attempts:
            raise error
        reason = f"{error.status} {_reason(error.status)}" if error.status else "no answer"
        log.warning("%s attempt %d/%d failed (%s); retrying in %.2g s", what, attempt, attempts, reason, delay)
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def label_selector(match_labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


@dataclass(frozen=True)
class PodHealth:
    name: str
    ready: bool
    restarts: int
    waiting: tuple[str, ...]
    """Waiting reasons of its containers, e.g. CrashLoopBackOff."""


@dataclass(frozen=True)
class CanaryHealth:
    """What the API says about the canary Deployment's pods now."""

    deployment: str
    desired: int
    pods: tuple[PodHealth, ...]
    probe_failures: dict[str, int] = field(default_factory=dict)
    """Events reason Unhealthy by probe kind ("Readiness", "Liveness", "Startup") → count."""

    @property
    def ready(self) -> int:
        return sum(p.ready for p in self.pods)

    @property
    def restarts(self) -> int:
        return sum(p.restarts for p in self.pods)


def _matches(labels: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def canary_health(
    api: client.ApiClient, namespace: str, deployment: str, *, since: float | None = None
) -> CanaryHealth:
    """Pods of ``deployment`` (by its selector), their readiness, restarts and waiting reasons, and probe-failure
    events since ``since`` (epoch seconds). Filters server-side with selectors and again client-side."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    dep = call(f"GET deployments/{deployment}", lambda: apps.read_namespaced_deployment(deployment, namespace))
    wanted: dict[str, str] = dict(dep.spec.selector.match_labels or {})
    pods = call(
        f"LIST pods ({label_selector(wanted)})",
        lambda: core.list_namespaced_pod(namespace, label_selector=label_selector(wanted)),
    )
    found = []
    names = set()
    for pod in pods.items:
        meta = pod.metadata
        if meta is None or not meta.name or not _matches(meta.labels, wanted):
            continue
        names.add(meta.name)
        statuses: Iterable[Any] = (pod.status.container_statuses or []) if pod.status else []
        conditions = (pod.status.conditions or []) if pod.status else []
        ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
        found.append(
            PodHealth(
                name=meta.name,
                ready=ready,
                restarts=sum(int(s.restart_count or 0) for s in statuses),
                waiting=tuple(
                    s.state.waiting.reason for s in statuses if s.state and s.state.waiting and s.state.waiting.reason
                ),
            )
        )
    events = call(
        "LIST events (reason=Unhealthy)",
        lambda: core.list_namespaced_event(namespace, field_selector="reason=Unhealthy"),
    )
    failures: dict[str, int] = {}
    for event in events.items:
        involved = event.involved_object
        if event.reason != "Unhealthy" or not involved or involved.name not in names:
            continue
        stamp = event.last_timestamp or event.event_time or event.first_timestamp
        if since is not None and stamp is not None and stamp.timestamp() < since:
            continue
        kind = (event.message or "").split(" probe", 1)[0].strip() or "Unknown"
        failures[kind] = failures.get(kind, 0) + int(event.count or 1)
    return CanaryHealth(
        deployment=deployment,
        desired=int(dep.spec.replicas or 0),
        pods=tuple(sorted(found, key=lambda p: p.name)),
        probe_failures=failures,
    )


def _record_of(deployment: Any) -> dict[str, Any] | None:
    raw = (deployment.metadata.annotations or {}).get(STATE_ANNOTATION)
    if not raw:
        return None
    data = json.loads(raw)
    return data if isinstance(data, dict) else None


class KubePlatform:
    """Deployments ``<service>-stable`` and ``<service>-canary`` (names from the config) in one namespace, and the
    baseline ``<service>-baseline`` a rollout with baseline.enabled starts as a copy of stable."""

    def __init__(
        self,
        api: Any,
        namespace: str,
        stable: str,
        canary: str,
        *,
        canary_replicas: int = 1,
        baseline: str | None = None,
    ) -> None:
        self.apps = client.AppsV1Api(api)
        self.namespace, self.stable, self.canary = namespace, stable, canary
        self.canary_replicas = canary_replicas
        self.baseline = baseline
        """The baseline Deployment's name (workloads.baseline); None: this platform has none to start or stop."""

    def describe(self) -> str:
        return f"Deployments {self.stable} and {self.canary} in {self.namespace}"

    def _read(self, name: str) -> Any:
        return call(f"GET deployments/{name}", lambda: self.apps.read_namespaced_deployment(name, self.namespace))

    def _patch(self, name: str, body: Any) -> None:
        call(f"PATCH deployments/{name}", lambda: self.apps.patch_namespaced_deployment(name, self.namespace, body))

    def validate(self) -> list[str]:
        problems = []
        for name in (self.stable, self.canary):
            try:
                self._read(name)
            except KubeError as e:
                problems.append(f"Deployment {name} in {self.namespace}: {e.what}")
        return problems

    def read_record(self) -> dict[str, Any] | None:
        return _record_of(self._read(self.canary))

    def write_record(self, state: dict[str, Any], expected: int) -> int:
        """Compare-and-swap on the record's version: the annotation is patched with the Deployment's
        resourceVersion as read, so the API server refuses (409) a write over any change since; a change that left
        the record as it was (a scale, an image) is read again and the write retried."""
        what = f"PATCH deployments/{self.canary} (rollout record)"
        for _ in range(ATTEMPTS):
            dep = self._read(self.canary)
            current = _record_of(dep)
            if version_of(current) != expected:
                raise RecordConflict(
                    f"the rollout record changed (version {version_of(current)}, expected {expected})",
                    current, where=f"deployments/{self.canary} in {self.namespace}",
                )  # fmt: skip
            state["version"] = expected + 1
            body = {"metadata": {"resourceVersion": dep.metadata.resource_version,
                                 "annotations": {STATE_ANNOTATION: json.dumps(state, sort_keys=True)}}}  # fmt: skip
            try:
                call(what, functools.partial(self.apps.patch_namespaced_deployment, self.canary, self.namespace, body),
                     retry_conflict=False)  # fmt: skip
                return expected + 1
            except KubeConflict:
                log.info("%s: the Deployment changed since it was read; reading it again", what)
        raise KubeConflict(f"{what} kept conflicting with other writers", where=self.namespace, status=409)

    def stable_image(self) -> str:
        return str(self._read(self.stable).spec.template.spec.containers[0].image)

    def _set_image_and_replicas(self, name: str, image: str, replicas: int | None) -> None:
        patch: list[dict[str, Any]] = [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}
        ]
        if replicas is not None:
            patch.append({"op": "replace", "path": "/spec/replicas", "value": replicas})
        self._patch(name, patch)

    def deploy_canary(self, image: str) -> None:
        self._set_image_and_replicas(self.canary, image, self.canary_replicas)

    def _wait_rolled_out(self, name: str, image: str, timeout: float, progress: Callable[[str], None]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            dep = self._read(name)
            want = int(dep.spec.replicas or 0)
            status = dep.status
            ready = int((status.ready_replicas if status else 0) or 0)
            updated = int((status.updated_replicas if status else 0) or 0)
            generation_seen = (
                not status
                or status.observed_generation is None
                or (dep.metadata.generation is None or status.observed_generation >= dep.metadata.generation)
            )
            current = dep.spec.template.spec.containers[0].image == image
            if current and generation_seen and ready >= want and updated >= want:
                return
            if time.monotonic() > deadline:
                raise CanaryError(
                    f"{name} did not become ready with {image} within {timeout:.0f}s ({ready}/{want} ready, "
                    f"{updated}/{want} updated)",
                    where=f"Deployment {name} in {self.namespace}",
                    fix=f"kubectl -n {self.namespace} describe deployment {name}",
                )
            progress(f"{name}: {ready}/{want} ready, {updated}/{want} updated")
            time.sleep(1)

    def wait_canary_ready(self, timeout: float, progress: Callable[[str], None]) -> None:
        image = self._read(self.canary).spec.template.spec.containers[0].image
        self._wait_rolled_out(self.canary, image, timeout, progress)

    def scale_canary(self, replicas: int) -> None:
        self._patch(self.canary, [{"op": "replace", "path": "/spec/replicas", "value": replicas}])

    def start_baseline(self, replicas: int, timeout: float, progress: Callable[[str], None]) -> None:
        """The baseline Deployment as a fresh copy of stable — its pod template (image, env, resources, probes)
        with the labels that tell stable's pods from the canary's set to ``baseline`` — at ``replicas``, ready.
        Created when missing (manifests rendered with `baseline: true` have it at 0 replicas), else its template
        replaced by stable's current one."""
        if self.baseline is None:
            raise CanaryError("no baseline Deployment is named for this rollout", where=self.describe())
        baseline = self.baseline
        stable, canary = self._read(self.stable), self._read(self.canary)
        template = self.apps.api_client.sanitize_for_serialization(stable.spec.template)
        labels = template.get("metadata", {}).get("labels") or {}
        canary_labels = canary.spec.template.metadata.labels or {}
        sides = sorted(k for k, v in labels.items() if canary_labels.get(k) != v)
        if not sides:
            raise CanaryError(
                f"no pod label tells {self.stable}'s pods from {self.canary}'s, so none can tell the baseline's apart",
                where=f"Deployments {self.stable} and {self.canary} in {self.namespace}",
                fix="label each side's pods (e.g. version: stable / version: canary), as manifests/<service>/base.yaml "
                "does; the baseline gets version: baseline",
            )
        apart = {**labels, **dict.fromkeys(sides, "baseline")}
        template["metadata"]["labels"] = apart
        selector = {k: apart.get(k, v) for k, v in (stable.spec.selector.match_labels or {}).items()}
        meta = {k: ("baseline" if k in sides else v) for k, v in (stable.metadata.labels or {}).items()}
        try:
            self._read(baseline)
            self._patch(baseline, [{"op": "replace", "path": "/spec/template", "value": template},
                                   {"op": "replace", "path": "/spec/replicas", "value": replicas}])  # fmt: skip
        except KubeNotFound:
            spec = {"replicas": replicas, "selector": {"matchLabels": selector}, "template": template}
            body: Any = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": spec,
                         "metadata": {"name": baseline, "namespace": self.namespace, "labels": meta}}  # fmt: skip
            call(f"POST deployments/{baseline}",
                 lambda: self.apps.create_namespaced_deployment(self.namespace, body))  # fmt: skip
        image = str(stable.spec.template.spec.containers[0].image)
        self._wait_rolled_out(baseline, image, timeout, progress)

    def stop_baseline(self) -> None:
        """The baseline at 0 replicas (kept, so the next rollout's RBAC needs no delete); nothing when absent."""
        if self.baseline is None:
            return
        with contextlib.suppress(KubeNotFound):
            self._patch(self.baseline, [{"op": "replace", "path": "/spec/replicas", "value": 0}])

    def stable_replicas(self) -> int:
        return int(self._read(self.stable).spec.replicas or 0)

    def promote(
        self, image: str, timeout: float, progress: Callable[[str], None], *, replicas: int | None = None
    ) -> None:
        """Stable gets ``image`` (and back to ``replicas``, its size before the rollout) and is rolled out at that
        size before the caller moves the traffic back to it."""
        self._set_image_and_replicas(self.stable, image, replicas)
        self._wait_rolled_out(self.stable, image, timeout, progress)
