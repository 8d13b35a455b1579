"""The baseline on the Kubernetes path (issue 17): routers giving it a share on each kind of routing resource, and
`canary-checks run --baseline` against kmock's emulator (tests/cluster.py) with the official client — the
manifests rendered with `baseline: true`, a Prometheus stand-in answering as old stable pods and new pods do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from canary_checks.errors import RoutingError
from canary_checks.kube import api_client
from canary_checks.manifests import DEMO, render_all
from canary_checks.traffic import kube_router
from tests.cluster import running_cluster
from tests.conftest import PromStub, healthy, write_config
from tests.integration.test_runner_kube import NEW, RESOURCES, Env, add_canary_pod

ROUTING = {"istio": "istio.yaml", "linkerd": "linkerd.yaml", "gateway-api": "gateway-api.yaml"}
ALL_ROUTING = (*RESOURCES, "split.smi-spec.io/v1alpha2/trafficsplits", "gateway.networking.k8s.io/v1/httproutes")


def rendered(*, baseline: bool) -> dict[str, str]:
    return render_all(DEMO.model_copy(update={"baseline": baseline}))


def apply(api: client.ApiClient, files: dict[str, str], *names: str) -> None:
    for name in names:
        for obj in yaml.safe_load_all(files[f"auth/{name}"]):
            if obj["kind"] == "Deployment":
                client.AppsV1Api(api).create_namespaced_deployment("orion", obj)
            elif obj["apiVersion"] != "v1" and "monitoring" not in obj["apiVersion"]:
                group, version = obj["apiVersion"].split("/")
                plural = obj["kind"].lower() + ("es" if obj["kind"].endswith("s") else "s")
                client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, "orion", plural, obj)


@pytest.mark.parametrize("kind", list(ROUTING))
def test_each_router_gives_the_baseline_the_canarys_share_and_weight_0_takes_both_away(kind: str) -> None:
    with running_cluster(*ALL_ROUTING) as (_, url):
        api = api_client(url)
        apply(api, rendered(baseline=True), ROUTING[kind])
        router = kube_router(kind, api, "orion", "auth")
        assert router.problems(baseline=True) == []
        assert router.set_weight(25, 25) == 25
        assert router.weights() == {"stable": 50, "canary": 25, "baseline": 25}
        assert router.get_weight() == 25  # the canary's share of everything
        assert router.set_weight(0) == 0
        assert router.weights() == {"stable": 100, "canary": 0, "baseline": 0}


@pytest.mark.parametrize("kind", list(ROUTING))
def test_a_route_without_a_baseline_backend_is_found_before_the_rollout_and_refuses_a_share(kind: str) -> None:
    with running_cluster(*ALL_ROUTING) as (_, url):
        api = api_client(url)
        apply(api, rendered(baseline=False), ROUTING[kind])
        router = kube_router(kind, api, "orion", "auth")
        problems = router.problems(baseline=True)  # Istio's also says its DestinationRule has no baseline subset
        assert any("no backend for the baseline" in p and "baseline: true" in p for p in problems), problems
        with pytest.raises(RoutingError, match="the baseline has no backend"):
            router.set_weight(25, 25)
        assert router.weights() == {"stable": 95, "canary": 5}  # nothing half-moved
        assert router.set_weight(0) == 0  # a rollback needs no baseline backend


@pytest.fixture
def env(prom: PromStub, tmp_path: Path) -> Iterator[Env]:
    """The emulator with auth's Deployments and Istio routing rendered with a baseline, a canary pod, and a
    canary.yaml turning the baseline on."""
    healthy(prom, baseline=1000)
    with running_cluster(*RESOURCES) as (cluster, url):
        api = api_client(url)
        apply(api, rendered(baseline=True), "base.yaml", "istio.yaml")
        add_canary_pod(api)
        config = write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s",
                              prometheus={"url": prom.url}, kubernetes={"api_url": url})  # fmt: skip
        yield Env(cluster, api, config, tmp_path / "reports", prom)


def weights(env: Env) -> dict[str, int]:
    return kube_router("istio", env.api, "orion", "auth").weights()


def new_pods_err_more_than_old_stable(env: Env) -> None:
    """3 % errors on the new pods — the canary and the baseline, running stable's build — 0.1 % on stable's."""
    env.prom.answer(r'"auth-stable", response_code=~"5..', 3)
    for side in ("canary", "baseline"):
        env.prom.answer(rf'"auth-{side}", response_code=~"5..', 30)


def test_a_canary_as_good_as_a_fresh_baseline_is_promoted_where_old_stable_would_roll_it_back(env: Env) -> None:
    new_pods_err_more_than_old_stable(env)
    old = env.deployment("auth-stable").spec.template.spec.containers[0].image
    # each poll adds an interval of evidence for the comparison to pass on: a busy machine polls less often
    done = env.run("--auto-promote", "--baseline", "--step-duration", "3s", "--max-extension", "120s")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starting the baseline auth-baseline: 1 pod(s) of " + old in done.stdout
    baseline = env.deployment("auth-baseline")
    assert baseline.spec.replicas == 0  # stopped on promotion
    assert baseline.spec.template.metadata.labels["version"] == "baseline"
    assert baseline.spec.template.spec.containers[0].image == old  # a copy of stable as it was
    assert weights(env) == {"stable": 100, "canary": 0, "baseline": 0}
    shares = [(e["weight"], e.get("baseline_weight")) for e in env.events() if e["event"] == "weight"]
    assert shares[:4] == [(5, 5), (25, 25), (50, 50), (100, 0)]
    deployed = next(e for e in env.events() if e["event"] == "deployed")
    assert deployed["baseline"] == "auth-baseline" and deployed["baseline_replicas"] == 1


def test_a_failing_canary_with_a_baseline_is_rolled_back_and_the_baseline_stopped(env: Env) -> None:
    def errors_from_25() -> float:
        return 100 if weights(env)["canary"] >= 25 else 0

    env.prom.answer(r'"auth-canary", response_code=~"5..', errors_from_25)
    done = env.run("--auto-promote", "--baseline", "--step-duration", "3s", "--max-extension", "30s")
    assert done.returncode == 1, done.stdout + done.stderr
    assert weights(env) == {"stable": 100, "canary": 0, "baseline": 0}
    assert env.deployment("auth-canary").spec.replicas == 0
    assert env.deployment("auth-baseline").spec.replicas == 0
    writes = [(path, body) for _, path, body in env.cluster.writes if path.endswith("/deployments/auth-baseline")]
    assert writes[-1][1][0] == {"op": "replace", "path": "/spec/replicas", "value": 0}  # its last change


def test_without_a_baseline_backend_the_rollout_stops_before_deploying(env: Env) -> None:
    objects: Any = client.CustomObjectsApi(env.api)
    vs = objects.get_namespaced_custom_object("networking.istio.io", "v1", "orion", "virtualservices", "auth")
    route = vs["spec"]["http"][1]["route"]
    patch = [{"op": "replace", "path": "/spec/http/1/route", "value": route[:2]}]  # the baseline's backend gone
    objects.patch_namespaced_custom_object("networking.istio.io", "v1", "orion", "virtualservices", "auth", patch)
    done = env.run("--baseline")
    assert done.returncode != 0
    assert "no backend for the baseline (baseline)" in done.stdout + done.stderr
    assert env.deployment("auth-canary").spec.template.spec.containers[0].image != NEW  # nothing deployed
    assert env.deployment("auth-baseline").spec.replicas == 0
