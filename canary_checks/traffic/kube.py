"""The Kubernetes routing resources: an Istio VirtualService, an SMI TrafficSplit, a Gateway API HTTPRoute — the
weights of their stable, canary and (when present) baseline backends, the header route, sticky sessions' cookie
routes, and whether another controller manages them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from canary_checks.errors import CanaryError, RoutingError, WeightNotApplied
from canary_checks.sticky import PREFIX as STICKY_PREFIX
from canary_checks.sticky import StickyState, annotation_patch, gateway_rules, istio_routes, next_state
from canary_checks.sticky import sticky_of as _sticky_of
from canary_checks.traffic.router import check_shares, no_baseline

__all__ = ["GatewayRouter", "IstioRouter", "KubeRouter", "SMIRouter", "kube_router"]

log = logging.getLogger(__name__)

_FOREIGN_CONTROLLERS = {
    "flagger.app": "Flagger",
    "argoproj.io": "Argo Rollouts",
}


@dataclass(frozen=True)
class _WeightSlots:
    stable: str
    """JSON pointer to the stable backend's weight."""
    canary: str
    stable_weight: int
    canary_weight: int
    baseline: str | None = None
    """JSON pointer to the baseline backend's weight, when the weighted route has one."""
    baseline_weight: int = 0

    @property
    def canary_share(self) -> int:
        total = self.stable_weight + self.canary_weight + self.baseline_weight
        return round(100 * self.canary_weight / total) if total else 0

    def shares(self) -> tuple[int, int, int]:
        return self.stable_weight, self.canary_weight, self.baseline_weight


class KubeRouter:
    """A routing custom resource whose stable and canary backends carry weights; subclasses say where they are."""

    group = ""
    version = ""
    plural = ""

    def __init__(
        self, api: Any, namespace: str, name: str, *, stable: str, canary: str, sticky_cookie: str | None = None,
        baseline: str | None = None,
    ) -> None:  # fmt: skip
        from kubernetes import client

        self.objects = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.stable, self.canary = stable, canary
        self.baseline = baseline
        """The baseline's subset or Service (baseline.enabled), routed beside the two when the route has it."""
        self.sticky_cookie = sticky_cookie
        """Sticky sessions' cookie (routing.sticky): the cookie routes move with the weight; none: no cookie routes."""

    def describe(self) -> str:
        return f"{self.plural}/{self.name} in {self.namespace}"

    def read(self) -> dict[str, Any]:
        from canary_checks.kube import call

        obj: Any = call(
            f"GET {self.plural}/{self.name}",
            lambda: self.objects.get_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name
            ),
        )
        if not isinstance(obj, dict):
            raise RoutingError(f"unexpected answer: {str(obj)[:200]}", where=self.describe())
        return obj

    def slots(self, obj: dict[str, Any]) -> _WeightSlots:
        raise NotImplementedError

    def _first_weighted(
        self, routes: list[dict[str, Any]], path: str, key: str, name_of: Callable[[dict[str, Any]], Any], default: int
    ) -> _WeightSlots:
        """The weights of the first route (of ``routes`` at ``path``) whose backends (its ``key``) include stable
        and canary — not a sticky cookie route: its split moves stable's clients to a new weight, not the weight."""
        for i, route in enumerate(routes):
            if str(route.get("name", "")).startswith(STICKY_PREFIX):
                continue
            backends = route.get(key, [])
            names = [name_of(b) for b in backends]
            if self.stable in names and self.canary in names:
                return self._slots(f"{path}/{i}/{key}", backends, names, default)
        raise KeyError("no weighted route")

    def _slots(self, path: str, backends: list[dict[str, Any]], names: list[Any], default: int) -> _WeightSlots:
        """The weights of the backends named ``names`` (stable, canary, maybe the baseline) at ``path``/<i>."""
        s, c = names.index(self.stable), names.index(self.canary)
        b = names.index(self.baseline) if self.baseline is not None and self.baseline in names else None
        weight = [int(backend.get("weight", default)) for backend in backends]
        return _WeightSlots(f"{path}/{s}/weight", f"{path}/{c}/weight", weight[s], weight[c],
                            None if b is None else f"{path}/{b}/weight", 0 if b is None else weight[b])  # fmt: skip

    def _slots_or_explain(self, obj: dict[str, Any]) -> _WeightSlots:
        try:
            return self.slots(obj)
        except (KeyError, IndexError, TypeError, StopIteration):
            raise RoutingError(
                f"no weighted route to both {self.stable!r} and {self.canary!r}",
                where=self.describe(),
                fix="apply the routing manifest from manifests/<service>/ (or name your backends in canary.yaml)",
            ) from None

    def get_weight(self) -> int:
        return self._slots_or_explain(self.read()).canary_share

    def weights(self) -> dict[str, int]:
        """Each backend's weight in the weighted route: stable, canary and (when it has one) baseline."""
        slots = self._slots_or_explain(self.read())
        return {"stable": slots.stable_weight, "canary": slots.canary_weight,
                **({"baseline": slots.baseline_weight} if slots.baseline is not None else {})}  # fmt: skip

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        from canary_checks.kube import call

        check_shares(percent, baseline)

        def attempt() -> None:
            obj = self.read()  # fresh on every attempt: a conflict is retried against the current object
            slots = self._slots_or_explain(obj)
            if baseline and slots.baseline is None:
                raise no_baseline(self.describe(), f"add a weight-0 route to the baseline ({self.baseline}) beside "
                                   "stable and canary: apply the routing manifest rendered with `baseline: true` "
                                   "(canary-checks manifests render)")  # fmt: skip
            # the cookie routes move with the weight, also for a router not told of them (the watchdog, a rollback
            # with another canary.yaml): the object names its cookie
            cookie = self.sticky_cookie or _sticky_of(obj)[1]
            wanted = (100 - percent - baseline, percent, baseline)
            if cookie is not None:
                changes = self._sticky_patch(obj, slots, percent, cookie)
            elif slots.shares() != wanted:
                changes = [{"op": "add", "path": slots.stable, "value": wanted[0]},
                           {"op": "add", "path": slots.canary, "value": percent}]  # fmt: skip
                if slots.baseline is not None:
                    changes.append({"op": "add", "path": slots.baseline, "value": baseline})
            else:
                changes = []
            if not changes:
                return  # already there: setting a weight is idempotent
            version = obj.get("metadata", {}).get("resourceVersion")
            patch: list[dict[str, Any]] = []
            if version:  # the API server answers 409 if the object changed since this read
                patch.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
            patch += changes
            self.objects.patch_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name, patch
            )

        call(f"PATCH {self.plural}/{self.name}", attempt)
        slots = self._slots_or_explain(self.read())
        if (slots.canary_share, slots.baseline_weight) != (percent, baseline):
            raise WeightNotApplied(
                f"set the canary weight to {percent} %{f' and the baseline to {baseline} %' if baseline else ''} but "
                f"it reads back as {slots.canary_share} %{f' and {slots.baseline_weight} %' if baseline else ''}",
                where=self.describe(),
            )
        log.info("%s: canary weight %d %%, baseline %d %%, confirmed", self.describe(), percent, baseline)
        return slots.canary_share

    def _sticky_patch(
        self, obj: dict[str, Any], slots: _WeightSlots, percent: int, cookie: str
    ) -> list[dict[str, Any]]:
        """The weight with the cookie routes (canary_checks.sticky) kept consistent with it, in one patch: the
        routes or rules whole, and the cookies in force in an annotation; empty when nothing changes."""
        if slots.baseline is not None:
            raise RoutingError(
                f"the weighted route has a baseline backend ({self.baseline}) and sticky sessions are on: a sticky "
                "client's cookie names canary or stable", where=self.describe(),
                fix="turn routing.sticky.enabled off for a rollout with a baseline, or remove the baseline's backend",
            )  # fmt: skip
        annotations = obj.get("metadata", {}).get("annotations") or {}
        previous = _sticky_of(obj)[0]
        total = slots.stable_weight + slots.canary_weight
        old = round(100 * slots.canary_weight / total) if total else 0
        state = next_state(previous, old, percent)
        if (slots.stable_weight, slots.canary_weight) == (100 - percent, percent) and state == previous:
            return []
        path, value = self._sticky_spec(obj, cookie, state, percent)
        return [{"op": "replace", "path": path, "value": value}, *annotation_patch(annotations, cookie, state)]

    def _sticky_spec(self, obj: dict[str, Any], cookie: str, state: StickyState | None, percent: int) -> Any:
        raise RoutingError(
            f"{self.plural} cannot route by cookie", where=self.describe(),
            fix="turn routing.sticky.enabled off for this service, or move its traffic with an Istio "
            "VirtualService or a Gateway API HTTPRoute (run --router istio|gateway-api)",
        )  # fmt: skip

    def sticky_state(self) -> StickyState | None:
        """The cookies in force (none: no cookie route)."""
        return _sticky_of(self.read())[0]

    def header_route(self) -> bool:
        """Whether requests with ``x-canary: true`` always go to the canary."""
        return self._header_index(self.read()) is not None

    def ensure_header_route(self) -> bool:
        """Add the ``x-canary: true`` → canary route first in the object if it is missing; True if it was added."""
        from canary_checks.kube import call

        added = False

        def attempt() -> None:
            nonlocal added
            obj = self.read()
            if self._header_index(obj) is not None:
                return
            path, value = self._header_rule()
            patch: list[dict[str, Any]] = []
            if version := obj.get("metadata", {}).get("resourceVersion"):
                patch.append({"op": "replace", "path": "/metadata/resourceVersion", "value": version})
            patch.append({"op": "add", "path": path, "value": value})
            self.objects.patch_namespaced_custom_object(
                self.group, self.version, self.namespace, self.plural, self.name, patch
            )
            added = True

        call(f"PATCH {self.plural}/{self.name}", attempt)
        if not self.header_route():
            raise RoutingError("the x-canary header route did not read back after adding it", where=self.describe())
        return added

    def _header_index(self, obj: dict[str, Any]) -> int | None:
        raise RoutingError(
            f"{self.plural} cannot route by header",
            where=self.describe(),
            fix="use an Istio VirtualService or a Gateway API HTTPRoute for the x-canary: true route",
        )

    def _header_rule(self) -> tuple[str, Any]:
        raise RoutingError(f"{self.plural} cannot route by header", where=self.describe())

    def problems(self, *, baseline: bool = False) -> list[str]:
        """What would stop this router from moving traffic (checked before a rollout), and with ``baseline`` from
        giving the baseline its share; empty when none."""
        try:
            slots = self._slots_or_explain(self.read())
        except CanaryError as e:
            return [e.message]
        if baseline and slots.baseline is None:
            return [
                f"{self.describe()} has no backend for the baseline ({self.baseline}) beside stable and canary: "
                "apply the routing manifest rendered with `baseline: true` (canary-checks manifests render)"
            ]
        return []

    def controller(self) -> str | None:
        """The other controller managing this object (Flagger, Argo Rollouts), if any: two would fight."""
        meta = self.read().get("metadata", {})
        for owner in meta.get("ownerReferences") or []:
            group = str(owner.get("apiVersion", "")).split("/")[0]
            for marker, name in _FOREIGN_CONTROLLERS.items():
                if group.endswith(marker):
                    return f"{name} ({owner.get('kind')} {owner.get('name')})"
        for key in {**(meta.get("annotations") or {}), **(meta.get("labels") or {})}:
            for marker, name in _FOREIGN_CONTROLLERS.items():
                if marker in key:
                    return f"{name} (annotation {key})"
        return None


class IstioRouter(KubeRouter):
    """Istio ``VirtualService``: the HTTP route whose destinations are the stable and canary subsets."""

    group, version, plural = "networking.istio.io", "v1", "virtualservices"

    def slots(self, obj: dict[str, Any]) -> _WeightSlots:
        subset = lambda d: d.get("destination", {}).get("subset")  # noqa: E731
        return self._first_weighted(obj["spec"]["http"], "/spec/http", "route", subset, 0)

    def problems(self, *, baseline: bool = False) -> list[str]:
        from canary_checks.kube import call

        found = super().problems(baseline=baseline)
        try:
            rule: Any = call(
                f"GET destinationrules/{self.name}",
                lambda: self.objects.get_namespaced_custom_object(
                    self.group, self.version, self.namespace, "destinationrules", self.name
                ),
            )
        except CanaryError as e:
            return [*found, f"DestinationRule {self.name}: {e.what}"]
        subsets = {s.get("name") for s in rule.get("spec", {}).get("subsets", [])}
        missing = sorted({self.stable, self.canary, *([self.baseline] if baseline and self.baseline else [])} - subsets)
        if missing:
            found.append(f"DestinationRule {self.name} has no subset {', '.join(missing)} (it has {sorted(subsets)})")
        return found

    def _header_index(self, obj: dict[str, Any]) -> int | None:
        for i, route in enumerate(obj["spec"].get("http", [])):
            headers = [m.get("headers", {}) for m in route.get("match", [])]
            to_canary = [d.get("destination", {}).get("subset") for d in route.get("route", [])] == [self.canary]
            if to_canary and any(h.get("x-canary", {}).get("exact") == "true" for h in headers):
                return i
        return None

    def _sticky_spec(self, obj: dict[str, Any], cookie: str, state: StickyState | None, percent: int) -> Any:
        http = obj["spec"]["http"]
        return "/spec/http", istio_routes(http, cookie, state, stable=self.stable, canary=self.canary, weight=percent)

    def _header_rule(self) -> tuple[str, Any]:
        host = self.read()["spec"]["hosts"][0]
        return "/spec/http/0", {
            "name": "canary-header",
            "match": [{"headers": {"x-canary": {"exact": "true"}}}],
            "route": [{"destination": {"host": host, "subset": self.canary}}],
        }


class SMIRouter(KubeRouter):
    """Linkerd via SMI ``TrafficSplit``: backends are the stable and canary Services."""

    group, version, plural = "split.smi-spec.io", "v1alpha2", "trafficsplits"

    def slots(self, obj: dict[str, Any]) -> _WeightSlots:
        services = [b["service"] for b in obj["spec"]["backends"]]
        if self.stable not in services or self.canary not in services:
            raise KeyError("no stable and canary backends")
        return self._slots("/spec/backends", obj["spec"]["backends"], services, 0)


class GatewayRouter(KubeRouter):
    """Gateway API ``HTTPRoute``: the rule whose ``backendRefs`` are the stable and canary Services."""

    group, version, plural = "gateway.networking.k8s.io", "v1", "httproutes"

    def slots(self, obj: dict[str, Any]) -> _WeightSlots:
        # Gateway API's default weight is 1
        return self._first_weighted(obj["spec"]["rules"], "/spec/rules", "backendRefs", lambda r: r.get("name"), 1)

    def _header_index(self, obj: dict[str, Any]) -> int | None:
        for i, rule in enumerate(obj["spec"].get("rules", [])):
            names = [r.get("name") for r in rule.get("backendRefs", [])]
            headers = [h for m in rule.get("matches", []) for h in m.get("headers", [])]
            wanted = any(h.get("name", "").lower() == "x-canary" and h.get("value") == "true" for h in headers)
            if names == [self.canary] and wanted:
                return i
        return None

    def _sticky_spec(self, obj: dict[str, Any], cookie: str, state: StickyState | None, percent: int) -> Any:
        rules = gateway_rules(obj["spec"]["rules"], cookie, state, stable=self.stable, canary=self.canary,
                              weight=percent)  # fmt: skip
        return "/spec/rules", rules

    def _header_rule(self) -> tuple[str, Any]:
        return "/spec/rules/0", {
            "matches": [{"headers": [{"type": "Exact", "name": "x-canary", "value": "true"}]}],
            "backendRefs": [{"group": "", "kind": "Service", "name": self.canary, "port": 80}],
        }


def kube_router(kind: str, api: Any, namespace: str, service: str, *, sticky_cookie: str | None = None) -> KubeRouter:
    """The router for ``kind`` (istio | linkerd | gateway-api) over the objects in manifests/<service>/; with
    ``sticky_cookie`` (routing.sticky) its cookie routes move with the weight. A route with a baseline backend (the
    ``baseline`` subset, the ``<service>-baseline`` Service) gets its share too."""
    if kind == "istio":
        return IstioRouter(api, namespace, service, stable="stable", canary="canary", sticky_cookie=sticky_cookie,
                           baseline="baseline")  # fmt: skip
    stable, canary, baseline = f"{service}-stable", f"{service}-canary", f"{service}-baseline"
    if kind == "linkerd" and sticky_cookie is not None:
        raise RoutingError(
            "routing.sticky.enabled is true, but an SMI TrafficSplit cannot route by cookie",
            where=f"trafficsplits/{service} in {namespace}",
            fix="set routing.sticky.enabled: false for this service, or move its traffic with a Gateway API "
            "HTTPRoute (run --router gateway-api; Linkerd 2.14+ reads it) or an Istio VirtualService",
        )
    if kind == "linkerd":
        return SMIRouter(api, namespace, service, stable=stable, canary=canary, baseline=baseline)
    if kind == "gateway-api":
        return GatewayRouter(api, namespace, service, stable=stable, canary=canary, sticky_cookie=sticky_cookie,
                             baseline=baseline)  # fmt: skip
    raise RoutingError(f"unknown router {kind!r}", fix="use istio, linkerd, gateway-api or sandbox")
