"""The traffic routers against a real HTTP server speaking the Kubernetes API (kmock's emulator, extended in
tests/cluster.py), through the official client, on exactly the objects in manifests/."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from canary_checks.errors import KubeNotFound, KubeServerError, RoutingError
from canary_checks.kube import api_client
from canary_checks.manifests import SERVICES
from canary_checks.traffic import IstioRouter, kube_router
from tests.cluster import Cluster, running_cluster

MANIFESTS = Path(__file__).parents[2] / "manifests"
ROUTING = {"istio": "istio.yaml", "linkerd": "linkerd.yaml", "gateway-api": "gateway-api.yaml"}
RESOURCES = (
    "networking.istio.io/v1/virtualservices",
    "networking.istio.io/v1/destinationrules",
    "split.smi-spec.io/v1alpha2/trafficsplits",
    "gateway.networking.k8s.io/v1/httproutes",
)


@pytest.fixture
def cluster() -> Iterator[tuple[Cluster, client.ApiClient]]:
    with running_cluster(*RESOURCES) as (emulator, url):
        api = api_client(url)
        objects = client.CustomObjectsApi(api)
        for svc in SERVICES:
            for file in ROUTING.values():
                for obj in yaml.safe_load_all((MANIFESTS / svc.name / file).read_text()):
                    group, version = obj["apiVersion"].split("/")
                    plural = obj["kind"].lower() + ("es" if obj["kind"].endswith("s") else "s")
                    objects.create_namespaced_custom_object(group, version, "orion", plural, obj)
        yield emulator, api


@pytest.mark.parametrize("kind", list(ROUTING))
@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_routers_read_and_set_the_weights_of_our_manifests(
    cluster: tuple[Cluster, client.ApiClient], kind: str, service: str
) -> None:
    _, api = cluster
    router = kube_router(kind, api, "orion", service)
    assert router.get_weight() == 5
    assert router.set_weight(25) == 25
    slots = router.slots(router.read())
    assert (slots.stable_weight, slots.canary_weight) == (75, 25)
    assert router.set_weight(0) == 0 and router.set_weight(100) == 100
    slots = router.slots(router.read())
    assert slots.stable_weight + slots.canary_weight == 100


def test_setting_the_same_weight_twice_writes_once(cluster: tuple[Cluster, client.ApiClient]) -> None:
    emulator, api = cluster
    router = kube_router("istio", api, "orion", "auth")
    before = len(emulator.writes)
    router.set_weight(50)
    router.set_weight(50)
    assert len(emulator.writes) == before + 1


def test_a_conflict_is_retried_against_the_fresh_object(
    cluster: tuple[Cluster, client.ApiClient], caplog: pytest.LogCaptureFixture
) -> None:
    emulator, api = cluster
    router = kube_router("linkerd", api, "orion", "user")
    emulator.interfere.add("user")
    with caplog.at_level(logging.WARNING):
        assert router.set_weight(25) == 25
    assert "PATCH trafficsplits/user attempt 1/4 failed (409 Conflict); retrying in" in caplog.text


def test_server_errors_are_retried_then_reported(
    cluster: tuple[Cluster, client.ApiClient], caplog: pytest.LogCaptureFixture
) -> None:
    emulator, api = cluster
    router = kube_router("gateway-api", api, "orion", "gateway")
    emulator.fail_next.extend([503, 500])
    with caplog.at_level(logging.WARNING):
        assert router.set_weight(50) == 50
    assert "attempt 1/4 failed (503 server error)" in caplog.text
    emulator.fail_next.extend([503] * 8)
    with pytest.raises(KubeServerError, match="503"):
        router.set_weight(75)
    emulator.fail_next.clear()
    assert router.get_weight() == 50, "a failed change leaves the weights as they were"


def test_a_missing_routing_object_is_a_clear_error(cluster: tuple[Cluster, client.ApiClient]) -> None:
    _, api = cluster
    with pytest.raises(KubeNotFound, match="GET virtualservices/billing answered 404"):
        kube_router("istio", api, "orion", "billing").get_weight()


def test_an_object_without_our_backends_is_refused(cluster: tuple[Cluster, client.ApiClient]) -> None:
    _, api = cluster
    router = IstioRouter(api, "orion", "auth", stable="v1", canary="v2")
    with pytest.raises(RoutingError, match="no weighted route to both 'v1' and 'v2'"):
        router.set_weight(25)


def test_the_header_route_and_foreign_controllers_are_seen(cluster: tuple[Cluster, client.ApiClient]) -> None:
    _, api = cluster
    router = kube_router("istio", api, "orion", "auth")
    assert isinstance(router, IstioRouter) and router.header_route()
    assert router.controller() is None
    objects = client.CustomObjectsApi(api)
    owner = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "auth", "uid": "1", "controller": True}
    objects.patch_namespaced_custom_object(
        "networking.istio.io", "v1", "orion", "virtualservices", "auth", {"metadata": {"ownerReferences": [owner]}}
    )
    assert router.controller() == "Flagger (Canary auth)"
    objects.patch_namespaced_custom_object(
        "split.smi-spec.io",
        "v1alpha2",
        "orion",
        "trafficsplits",
        "auth",
        {"metadata": {"annotations": {"rollouts.argoproj.io/managed-by-rollouts": "auth"}}},
    )
    assert kube_router("linkerd", api, "orion", "auth").controller() == (
        "Argo Rollouts (annotation rollouts.argoproj.io/managed-by-rollouts)"
    )


@pytest.mark.parametrize(("kind", "plural", "version", "path"), [
    ("istio", "virtualservices", "v1", "/spec/http/0"),
    ("gateway-api", "httproutes", "v1", "/spec/rules/0"),
])  # fmt: skip
def test_the_header_route_is_read_and_put_back(
    cluster: tuple[Cluster, client.ApiClient], kind: str, plural: str, version: str, path: str
) -> None:
    _, api = cluster
    router = kube_router(kind, api, "orion", "notifications")
    assert router.header_route()
    assert router.ensure_header_route() is False  # already there: nothing written
    group = {"istio": "networking.istio.io", "gateway-api": "gateway.networking.k8s.io"}[kind]
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        group, version, "orion", plural, "notifications", [{"op": "remove", "path": path}]
    )
    assert not router.header_route()
    assert router.ensure_header_route() is True
    assert router.header_route()
    assert router.get_weight() == 5, "the weighted route is untouched"


def test_a_traffic_split_cannot_route_by_header(cluster: tuple[Cluster, client.ApiClient]) -> None:
    _, api = cluster
    with pytest.raises(RoutingError, match="trafficsplits cannot route by header"):
        kube_router("linkerd", api, "orion", "auth").header_route()
