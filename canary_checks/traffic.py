"""Traffic routers behind one interface: read and set the canary's share of traffic.

This module has the sandbox's HAProxy router (runtime API over its admin socket: weights change with no reload and
no lost request). The Kubernetes routers (Istio VirtualService, SMI TrafficSplit, Gateway API HTTPRoute) implement the
same :class:`Router` protocol.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from canary_checks.errors import CanaryError, RoutingError, SandboxError, WeightNotApplied
from canary_checks.sticky import PREFIX as STICKY_PREFIX
from canary_checks.sticky import StickyState, annotation_patch, cookie_value, gateway_rules, istio_routes, next_state
from canary_checks.sticky import sticky_of as _sticky_of
from canary_checks.weights import Server, servers_of, share, spread

__all__ = ["GatewayRouter", "HAProxyRouter", "IstioRouter", "KubeRouter", "Router", "SMIRouter", "kube_router"]

log = logging.getLogger(__name__)


class Router(Protocol):
    def get_weight(self) -> int:
        """The canary's share of traffic, percent."""
        ...

    def set_weight(self, percent: int) -> int:
        """Give the canary ``percent`` of traffic (stable the rest); returns the weight read back."""
        ...


@dataclass(frozen=True)
class HAProxyRouter:
    """The sandbox router: HAProxy backend ``backend`` with servers ``stable`` and ``canary``."""

    socket_path: Path
    backend: str = "svc"
    timeout: float = 2.0

    def command(self, line: str) -> str:
        """Send one runtime-API command line and return HAProxy's answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as e:
            raise SandboxError(
                f"HAProxy's runtime API did not answer ({e.strerror or e})",
                where=str(self.socket_path),
                fix="is the sandbox up? Run 'canary-checks sandbox status', or 'canary-checks sandbox up'",
            ) from e
        return b"".join(chunks).decode(errors="replace").strip()

    def server_weight(self, server: str, backend: str | None = None) -> int:
        backend = backend or self.backend
        answer = self.command(f"get weight {backend}/{server}")
        match = re.match(r"^(\d+)", answer)
        if not match:
            raise SandboxError(f"unexpected answer to 'get weight {backend}/{server}': {answer!r}")
        return int(match.group(1))

    def servers(self) -> list[Server]:
        """Every server of every backend, as ``show stat`` reports it."""
        return servers_of(self.command("show stat"))

    def in_service(self, backend: str | None = None) -> dict[str, int]:
        """Server → weight of ``backend``'s servers in service (not in maintenance: a pod scaled away)."""
        backend = backend or self.backend
        return {s.name: s.weight for s in self.servers() if s.backend == backend and s.in_service}

    def servers_up(self) -> dict[str, bool]:
        """``backend/server`` → whether HAProxy's health checks have it UP (servers in service only)."""
        return {f"{s.backend}/{s.name}": s.up for s in self.servers() if s.in_service}

    def get_weight(self) -> int:
        return share(self.in_service())

    def set_weight(self, percent: int, *, retiring: Sequence[str] = ()) -> int:
        """The canary's share, spread over each side's servers in service (``retiring`` ones are taken out of
        service in the same request, their share spread over the others)."""
        if not 0 <= percent <= 100:
            raise RoutingError(f"a canary weight is a percent from 0 to 100; got {percent}")
        # Every server changes in one request, so no request sees a split that sums to anything but 100; with
        # sticky sessions the restick split and the cookies in force change in the same request.
        line = "; ".join(
            [*(f"set server {s.backend}/{s.name} state maint" for s in self.servers() if s.name in retiring),
             *self._weights(self.backend, percent, retiring)]
        )  # fmt: skip
        sticky = self.sticky_map()
        if sticky is not None:  # the weights first, the cookies in force last (see _sticky_commands)
            line = f"{line}; {self._sticky_commands(sticky, percent, retiring)}"
        answer = self.command(line)
        if answer:
            raise WeightNotApplied(f"HAProxy refused the weight change: {answer}", where=str(self.socket_path))
        confirmed = self.get_weight()
        if confirmed != percent:
            raise WeightNotApplied(
                f"set the canary weight to {percent} % but HAProxy reports {confirmed} %",
                where=str(self.socket_path),
            )
        log.info("canary weight %d %% (stable %d %%), confirmed by HAProxy", percent, 100 - percent)
        return confirmed

    def _weights(self, backend: str, percent: int, retiring: Sequence[str] = ()) -> list[str]:
        """The commands that give ``backend``'s canary servers in service ``percent`` together (stable's first)."""
        servers = [s for s in self.in_service(backend) if s not in retiring]
        return [f"set weight {backend}/{server} {weight}" for server, weight in spread(percent, servers).items()]

    def enter_service(self, servers: Sequence[str]) -> None:
        """Put ``servers`` (new pods) in service in every backend that has them, at weight 0 and down until a health
        check passes (HAProxy would call them UP at once): given a share by the next :meth:`set_weight`."""
        line = "; ".join(
            f"set weight {s.backend}/{s.name} 0; set server {s.backend}/{s.name} state ready; "
            f"set server {s.backend}/{s.name} health down"
            for s in self.servers() if s.name in servers and not s.in_service
        )  # fmt: skip
        if line and (answer := self.command(line)):
            raise SandboxError(f"HAProxy refused to put {', '.join(servers)} in service: {answer}")

    # sticky sessions (canary_checks.sticky): the cookies in force are two entries of a runtime map, the move of
    # stable's clients to a new weight the weights of the backend `restick`

    def sticky_map(self) -> str | None:
        """The runtime map of the cookies in force, when this HAProxy was started with sticky sessions."""
        match = re.search(r"\((/[^)]*sticky\.map)\)", self.command("show map"))
        return match.group(1) if match else None

    def sticky_state(self, path: str | None = None) -> StickyState | None:
        """The cookies in force (none: no canary cookie reaches the canary)."""
        path = path or self.sticky_map()
        if path is None:
            return None
        entries = dict(line.split()[1:3] for line in self.command(f"show map {path}").splitlines() if line.strip())
        canary, _, stable = entries.get("tokens", "").partition("/")
        if not (canary.startswith("canary.") and stable.startswith("stable.")):
            return None
        restick = share(self.in_service("restick"))
        return StickyState(canary.partition(".")[2], stable.partition(".")[2], restick)

    def _sticky_commands(self, path: str, percent: int, retiring: Sequence[str] = ()) -> str:
        """The restick split, then both cookies in force in one map entry. HAProxy runs a line's commands one by
        one, requests between them: with the weights first, a client still holding a valid cookie keeps its side
        until the cookies change, and every client split meanwhile is split at the new weights."""
        state = next_state(self.sticky_state(path), self.get_weight(), percent)
        # off: values issued to nobody (and not each other's), so no cookie reaches the canary
        canary = cookie_value("canary", state.canary) if state else f"off.{secrets.token_hex(8)}"
        stable = cookie_value("stable", state.stable) if state else f"off.{secrets.token_hex(8)}"
        restick = state.restick if state else 0
        return "; ".join([*self._weights("restick", restick, retiring), f"set map {path} tokens {canary}/{stable}"])


# ---- Kubernetes routing resources ---------------------------------------------------------------------------------

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


class KubeRouter:
    """A routing custom resource whose stable and canary backends carry weights; subclasses say where they are."""

    group = ""
    version = ""
    plural = ""

    def __init__(
        self, api: Any, namespace: str, name: str, *, stable: str, canary: str, sticky_cookie: str | None = None
    ) -> None:
        from kubernetes import client

        self.objects = client.CustomObjectsApi(api)
        self.namespace, self.name = namespace, name
        self.stable, self.canary = stable, canary
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
        slots = self._slots_or_explain(self.read())
        total = slots.stable_weight + slots.canary_weight
        return round(100 * slots.canary_weight / total) if total else 0

    def set_weight(self, percent: int) -> int:
        from canary_checks.kube import call

        if not 0 <= percent <= 100:
            raise RoutingError(f"a canary weight is a percent from 0 to 100; got {percent}")

        def attempt() -> None:
            obj = self.read()  # fresh on every attempt: a conflict is retried against the current object
            slots = self._slots_or_explain(obj)
            # the cookie routes move with the weight, also for a router not told of them (the watchdog, a rollback
            # with another canary.yaml): the object names its cookie
            cookie = self.sticky_cookie or _sticky_of(obj)[1]
            if cookie is not None:
                changes = self._sticky_patch(obj, slots, percent, cookie)
            elif (slots.stable_weight, slots.canary_weight) != (100 - percent, percent):
                changes = [{"op": "add", "path": slots.stable, "value": 100 - percent},
                           {"op": "add", "path": slots.canary, "value": percent}]  # fmt: skip
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
        confirmed = self.get_weight()
        if confirmed != percent:
            raise WeightNotApplied(
                f"set the canary weight to {percent} % but it reads back as {confirmed} %", where=self.describe()
            )
        log.info("%s: canary weight %d %%, confirmed", self.describe(), percent)
        return confirmed

    def _sticky_patch(
        self, obj: dict[str, Any], slots: _WeightSlots, percent: int, cookie: str
    ) -> list[dict[str, Any]]:
        """The weight with the cookie routes (canary_checks.sticky) kept consistent with it, in one patch: the
        routes or rules whole, and the cookies in force in an annotation; empty when nothing changes."""
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

    def problems(self) -> list[str]:
        """What would stop this router from moving traffic (checked before a rollout); empty when none."""
        try:
            self._slots_or_explain(self.read())
        except CanaryError as e:
            return [e.message]
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
        for i, route in enumerate(obj["spec"]["http"]):
            if str(route.get("name", "")).startswith(STICKY_PREFIX):
                continue  # a cookie route's split moves stable's clients to a new weight, not the weight itself
            subsets = [d.get("destination", {}).get("subset") for d in route.get("route", [])]
            if self.stable in subsets and self.canary in subsets:
                s, c = subsets.index(self.stable), subsets.index(self.canary)
                return _WeightSlots(
                    f"/spec/http/{i}/route/{s}/weight",
                    f"/spec/http/{i}/route/{c}/weight",
                    int(route["route"][s].get("weight", 0)),
                    int(route["route"][c].get("weight", 0)),
                )
        raise KeyError("no weighted route")

    def problems(self) -> list[str]:
        from canary_checks.kube import call

        found = super().problems()
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
        missing = sorted({self.stable, self.canary} - subsets)
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
        s, c = services.index(self.stable), services.index(self.canary)
        backends = obj["spec"]["backends"]
        return _WeightSlots(
            f"/spec/backends/{s}/weight",
            f"/spec/backends/{c}/weight",
            int(backends[s].get("weight", 0)),
            int(backends[c].get("weight", 0)),
        )


class GatewayRouter(KubeRouter):
    """Gateway API ``HTTPRoute``: the rule whose ``backendRefs`` are the stable and canary Services."""

    group, version, plural = "gateway.networking.k8s.io", "v1", "httproutes"

    def slots(self, obj: dict[str, Any]) -> _WeightSlots:
        for i, rule in enumerate(obj["spec"]["rules"]):
            if str(rule.get("name", "")).startswith(STICKY_PREFIX):
                continue  # a cookie rule's split moves stable's clients to a new weight, not the weight itself
            refs = rule.get("backendRefs", [])
            names = [r.get("name") for r in refs]
            if self.stable in names and self.canary in names:
                s, c = names.index(self.stable), names.index(self.canary)
                # Gateway API's default weight is 1.
                return _WeightSlots(
                    f"/spec/rules/{i}/backendRefs/{s}/weight",
                    f"/spec/rules/{i}/backendRefs/{c}/weight",
                    int(refs[s].get("weight", 1)),
                    int(refs[c].get("weight", 1)),
                )
        raise KeyError("no weighted rule")

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
    ``sticky_cookie`` (routing.sticky) its cookie routes move with the weight."""
    if kind == "istio":
        return IstioRouter(api, namespace, service, stable="stable", canary="canary", sticky_cookie=sticky_cookie)
    stable, canary = f"{service}-stable", f"{service}-canary"
    if kind == "linkerd" and sticky_cookie is not None:
        raise RoutingError(
            "routing.sticky.enabled is true, but an SMI TrafficSplit cannot route by cookie",
            where=f"trafficsplits/{service} in {namespace}",
            fix="set routing.sticky.enabled: false for this service, or move its traffic with a Gateway API "
            "HTTPRoute (run --router gateway-api; Linkerd 2.14+ reads it) or an Istio VirtualService",
        )
    if kind == "linkerd":
        return SMIRouter(api, namespace, service, stable=stable, canary=canary)
    if kind == "gateway-api":
        return GatewayRouter(api, namespace, service, stable=stable, canary=canary, sticky_cookie=sticky_cookie)
    raise RoutingError(f"unknown router {kind!r}", fix="use istio, linkerd, gateway-api or sandbox")
