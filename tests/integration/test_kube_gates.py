"""The kube_* gates through the plugin, reading a Kubernetes API (kmock's emulator) with the official client."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from canary_checks.kube import api_client, canary_health
from tests.cluster import running_cluster
from tests.conftest import GATE_SUITE, PYTESTER_ARGS

REPO = Path(__file__).parents[2]
ARGS = PYTESTER_ARGS


def pod(
    name: str, labels: dict[str, str], *, ready: bool, restarts: int = 0, waiting: str | None = None
) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "orion", "labels": labels},
        "spec": {"containers": [{"name": "app", "image": "ghcr.io/orion/auth:1.9.0"}]},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [
                {"name": "app", "ready": ready, "restartCount": restarts, "image": "x", "imageID": "", "state": state}
            ],
        },
    }


def event(pod_name: str, probe: str, count: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{pod_name}.{probe.lower()}", "namespace": "orion"},
        "involvedObject": {"kind": "Pod", "name": pod_name, "namespace": "orion"},
        "reason": "Unhealthy",
        "message": f"{probe} probe failed: HTTP probe failed with statuscode: 503",
        "count": count,
        "type": "Warning",
    }


@pytest.fixture
def cluster() -> Iterator[tuple[client.ApiClient, str]]:
    with running_cluster("v1/pods", "v1/events") as (_, url):
        api = api_client(url)
        apps = client.AppsV1Api(api)
        base = list(yaml.safe_load_all((REPO / "manifests" / "auth" / "base.yaml").read_text()))
        for obj in base:
            if obj["kind"] == "Deployment":
                canary = copy.deepcopy(obj)
                if obj["metadata"]["name"] == "auth-canary":
                    canary["spec"]["replicas"] = 2
                apps.create_namespaced_deployment("orion", canary)
        core = client.CoreV1Api(api)
        # A stable pod that is failing must not count against the canary (selectors filter it out).
        core.create_namespaced_pod(
            "orion", pod("auth-stable-5f6d-aaaaa", {"app": "auth", "version": "stable"}, ready=False, restarts=9)
        )
        yield api, url


def test_canary_health_reads_only_the_canarys_pods(cluster: tuple[client.ApiClient, str]) -> None:
    api, _ = cluster
    core = client.CoreV1Api(api)
    labels = {
        "app": "auth",
        "version": "canary",
        "app.kubernetes.io/name": "auth",
        "app.kubernetes.io/part-of": "orion",
    }
    core.create_namespaced_pod("orion", pod("auth-canary-7c9d-bbbbb", labels, ready=True))
    core.create_namespaced_pod(
        "orion", pod("auth-canary-7c9d-ccccc", labels, ready=False, restarts=3, waiting="CrashLoopBackOff")
    )
    core.create_namespaced_event("orion", event("auth-canary-7c9d-ccccc", "Liveness", 3))
    core.create_namespaced_event("orion", event("auth-stable-5f6d-aaaaa", "Readiness", 7))
    health = canary_health(api, "orion", "auth-canary")
    assert [p.name for p in health.pods] == ["auth-canary-7c9d-bbbbb", "auth-canary-7c9d-ccccc"]
    assert (health.desired, health.ready, health.restarts) == (2, 1, 3)
    assert health.probe_failures == {"Liveness": 3}


def run_suite(pytester: pytest.Pytester, url: str, prom_url: str) -> pytest.RunResult:
    pytester.makepyfile(test_canary_gates=GATE_SUITE)
    pytester.makefile(
        ".yaml",
        canary=f"prometheus: {{url: '{prom_url}'}}\nkubernetes: {{api_url: '{url}'}}\n",
    )
    return pytester.runpytest(*ARGS, "--stage", "25", "-k", "kubernetes", "--junitxml", "out.xml")


def test_kube_gates_pass_for_ready_pods(pytester: pytest.Pytester, cluster: tuple[client.ApiClient, str]) -> None:
    api, url = cluster
    core = client.CoreV1Api(api)
    labels = {"app": "auth", "version": "canary"}
    for suffix in ("bbbbb", "ccccc"):
        core.create_namespaced_pod("orion", pod(f"auth-canary-7c9d-{suffix}", labels, ready=True))
    result = run_suite(pytester, url, "http://127.0.0.1:9")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines([f"canary-checks: Kubernetes API {url}"])


def test_kube_gates_fail_naming_pods_and_reasons(
    pytester: pytest.Pytester, cluster: tuple[client.ApiClient, str]
) -> None:
    api, url = cluster
    core = client.CoreV1Api(api)
    labels = {"app": "auth", "version": "canary"}
    core.create_namespaced_pod("orion", pod("auth-canary-7c9d-bbbbb", labels, ready=True))
    core.create_namespaced_pod(
        "orion", pod("auth-canary-7c9d-ccccc", labels, ready=False, restarts=5, waiting="CrashLoopBackOff")
    )
    core.create_namespaced_event("orion", event("auth-canary-7c9d-ccccc", "Readiness", 4))
    result = run_suite(pytester, url, "http://127.0.0.1:9")
    # readiness probe failures are a warning: reported, not failed
    result.assert_outcomes(passed=2, failed=3, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*kube_pods_ready: FAIL (critical)*1 of 2 desired pods of auth-canary Ready (50 %)*not ready: *-ccccc*",
            "*kube_waiting: FAIL (critical)*auth-canary-7c9d-ccccc CrashLoopBackOff*",
        ]
    )


def test_an_unreachable_api_makes_the_kube_gates_error(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, "http://127.0.0.1:9", "http://127.0.0.1:9")
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines(["*GET deployments/auth-canary got no answer*"])
