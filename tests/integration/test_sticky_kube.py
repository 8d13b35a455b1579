"""Sticky canary sessions on Kubernetes: the cookie routes of a VirtualService or HTTPRoute, written by the routers
through the official client against a real HTTP server speaking the Kubernetes API (kmock's emulator,
tests/cluster.py), on the objects in manifests/; and `canary-checks run` with routing.sticky, as a user runs it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client

from canary_checks.errors import RoutingError
from canary_checks.kube import api_client
from canary_checks.manifests import SERVICES
from canary_checks.sticky import ANNOTATION, sticky_of
from canary_checks.traffic import KubeRouter, kube_router
from tests.cluster import running_cluster
from tests.conftest import write_config
from tests.integration.test_runner_kube import Env
from tests.integration.test_runner_kube import env as env
from tests.unit.test_manifests import crd_schema

MANIFESTS = Path(__file__).parents[2] / "manifests"
KINDS = {
    "istio": ("networking.istio.io", "virtualservices"),
    "gateway-api": ("gateway.networking.k8s.io", "httproutes"),
}
FILES = {"istio": "istio.yaml", "gateway-api": "gateway-api.yaml"}


@pytest.fixture
def api() -> Iterator[client.ApiClient]:
    with running_cluster(*(f"{group}/v1/{plural}" for group, plural in KINDS.values())) as (_, url):
        api = api_client(url)
        for svc in SERVICES:
            for kind, file in FILES.items():
                for obj in yaml.safe_load_all((MANIFESTS / svc.name / file).read_text()):
                    if obj["kind"] in ("VirtualService", "HTTPRoute"):
                        group, plural = KINDS[kind]
                        client.CustomObjectsApi(api).create_namespaced_custom_object(group, "v1", "orion", plural, obj)
        yield api


def cookie_routes(router: KubeRouter) -> list[dict[str, Any]]:
    """The object's cookie routes (named sticky-…) after checking it against the upstream schema."""
    obj = router.read()
    jsonschema.Draft7Validator(crd_schema(obj)).validate(obj)
    routes = obj["spec"].get("http") or obj["spec"].get("rules")
    return [r for r in routes if str(r.get("name", "")).startswith("sticky-")]


def restick_weights(route: dict[str, Any]) -> list[int]:
    return [int(d["weight"]) for d in route.get("route") or route["backendRefs"]]


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("service", [s.name for s in SERVICES])
def test_the_cookie_routes_move_with_the_weight_and_are_removed_on_rollback(
    api: client.ApiClient, kind: str, service: str
) -> None:
    router = kube_router(kind, api, "orion", service, sticky_cookie="cc")
    assert router.set_weight(5) == 5  # the weight it has: the cookie routes are added all the same
    first = router.sticky_state()
    assert first is not None and [r["name"] for r in cookie_routes(router)] == [
        "sticky-canary", "sticky-stable", "sticky-restick"]  # fmt: skip
    assert router.set_weight(25) == 25 and router.get_weight() == 25
    raised = router.sticky_state()
    assert raised is not None and raised.canary == first.canary and raised.stable != first.stable
    assert restick_weights(cookie_routes(router)[2]) == [79, 21]  # 21 % of stable's 95 % + 5 % = 25 %
    assert f"cc=stable.{raised.stable}" in yaml.safe_dump(router.read()["spec"])
    assert router.set_weight(0) == 0
    assert cookie_routes(router) == [] and router.sticky_state() is None
    obj = router.read()
    assert "cc=" not in yaml.safe_dump(obj["spec"]) and ANNOTATION not in (obj["metadata"].get("annotations") or {})
    assert router.header_route(), "the x-canary route stays"


def test_a_rollback_by_a_router_not_told_of_the_cookie_still_ends_stickiness(api: client.ApiClient) -> None:
    kube_router("istio", api, "orion", "auth", sticky_cookie="cc").set_weight(25)
    watchdog = kube_router("istio", api, "orion", "auth")  # a canary.yaml without routing.sticky
    assert watchdog.set_weight(0) == 0
    assert cookie_routes(watchdog) == [] and "cc=" not in yaml.safe_dump(watchdog.read())


def test_sticky_sessions_on_a_traffic_split_are_one_clear_error(api: client.ApiClient) -> None:
    with pytest.raises(RoutingError) as caught:
        kube_router("linkerd", api, "orion", "auth", sticky_cookie="cc")
    message = str(caught.value)
    assert "routing.sticky.enabled" in message and "cannot route by cookie" in message
    assert "--router gateway-api" in message


# ---- the runner ------------------------------------------------------------------------------------------------


@pytest.fixture
def sticky_env(env: Env) -> Env:
    config = yaml.safe_load(env.config.read_text())
    write_config(env.config, **config, routing={"sticky": {"enabled": True, "cookie": "cc"}})
    return env


def watch_routes(env: Env) -> list[tuple[int, Any, list[int]]]:
    """Whenever the stand-in Prometheus is asked about the canary: (weight, cookies in force, restick weights)."""
    seen: list[tuple[int, Any, list[int]]] = []
    router = kube_router("istio", env.api, "orion", "auth")

    def look() -> float:
        obj = router.read()
        restick = [r for r in obj["spec"]["http"] if r.get("name") == "sticky-restick"]
        seen.append((router.get_weight(), sticky_of(obj)[0], restick_weights(restick[0]) if restick else []))
        return 0

    env.prom.answer(r'"auth-canary", response_code=~"5..', look)
    return seen


def test_a_sticky_rollout_keeps_the_cookie_routes_in_step_and_promotion_removes_them(sticky_env: Env) -> None:
    seen = watch_routes(sticky_env)
    done = sticky_env.run("--auto-promote")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {w for w, _, _ in seen} >= {5, 25, 50, 100}, seen
    for weight, state, restick in seen:  # cookie routes exactly while the canary has a share
        assert (state is not None) == (weight > 0) == bool(restick), (weight, state, restick)
    moving = [(w, state, r) for w, state, r in seen if state is not None]
    assert len({state.canary for _, state, _ in moving}) == 1, "the canary's clients keep their cookie all along"
    assert {w: r for w, _, r in moving} == {5: [95, 5], 25: [79, 21], 50: [67, 33], 100: [0, 100]}
    router = kube_router("istio", sticky_env.api, "orion", "auth")
    assert sticky_env.weights() == (100, 0) and cookie_routes(router) == [] and router.sticky_state() is None


def test_a_sticky_rollout_rolled_back_removes_the_cookie_routes(sticky_env: Env) -> None:
    def errors_from_25() -> float:
        return 100 if sticky_env.weights()[1] >= 25 else 0

    sticky_env.prom.answer(r'"auth-canary", response_code=~"5..', errors_from_25)
    done: subprocess.CompletedProcess[str] = sticky_env.run("--auto-promote")
    assert done.returncode == 1 and "rolled back" in done.stdout, done.stdout + done.stderr
    router = kube_router("istio", sticky_env.api, "orion", "auth")
    assert sticky_env.weights() == (100, 0) and cookie_routes(router) == [] and router.sticky_state() is None


def test_a_sticky_rollout_through_a_traffic_split_is_refused_before_anything_moves(sticky_env: Env) -> None:
    command = sticky_env.command("--auto-promote")
    at = command.index("--mesh")
    command[at : at + 2] = ["--router", "linkerd"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    assert "routing.sticky.enabled is true, but an SMI TrafficSplit cannot route by cookie" in done.stdout + done.stderr
    assert sticky_env.weights() == (95, 5)
