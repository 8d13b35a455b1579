"""Sticky canary sessions: which cookie keeps a client on which side, and how a weight change moves them.

Every router marks a client with the side that answered it: the cookie ``NAME=canary.<token>`` or
``NAME=stable.<token>``. A client carrying the *current* canary value goes to the canary; one carrying the current
stable value goes to stable; one carrying an *older* stable value (set before the last weight change) is split
again at the *restick* share; every other client (none, a foreign or a rolled-back cookie) is split at the weight.
So within a stage nobody changes sides, and when a stage raises the weight from ``w1`` to ``w2`` the canary's
clients stay on it while ``(w2 - w1) / (100 - w1)`` of stable's move over: the canary then holds ``w2`` % of the
clients, which is the split by clients the weight asks for. Lowering the weight (and weight 0: rollback or
promotion) issues a new canary token, so no older canary cookie reaches the canary any more; at weight 0 the
cookie routes are gone.

The state lives with the router (HAProxy's runtime map, an annotation on the VirtualService or HTTPRoute); this
module is pure: the plan (:func:`next_state`) and the routes it asks of Istio and the Gateway API.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "ANNOTATION",
    "StickyState",
    "annotation_patch",
    "annotation_value",
    "cookie_value",
    "gateway_rules",
    "initial_state",
    "istio_routes",
    "next_state",
    "restick_share",
    "set_cookie",
    "sticky_of",
]

ANNOTATION = "canary-checks.io/sticky"
"""On the VirtualService or HTTPRoute: the tokens of the cookies in force and the restick share (JSON)."""

PREFIX = "sticky-"
"""The names of the cookie routes (Istio http routes, Gateway API rules) the runner owns."""


@dataclass(frozen=True)
class StickyState:
    """The cookies in force while the canary has a share."""

    canary: str
    """Token of the canary cookie: a client carrying ``canary.<token>`` reaches the canary."""
    stable: str
    """Token of the stable cookie of this stage: a client carrying ``stable.<token>`` reaches stable."""
    restick: int
    """Percent of the clients holding an older stable cookie that the canary gets (the move to the new weight)."""

    def dumps(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def loads(cls, text: str | None) -> StickyState | None:
        """The state written by :meth:`dumps`; none when absent or unreadable (then everyone is split afresh)."""
        try:
            data = json.loads(text or "")
            return cls(str(data["canary"]), str(data["stable"]), int(data["restick"]))
        except (ValueError, KeyError, TypeError):
            return None


def sticky_of(obj: Mapping[str, Any]) -> tuple[StickyState | None, str | None]:
    """The cookies in force on a VirtualService or HTTPRoute and the cookie's name, from its annotation (none: no
    cookie routes)."""
    text = (obj.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    try:
        cookie = json.loads(text).get("cookie") if text else None
    except (ValueError, AttributeError):
        cookie = None
    return StickyState.loads(text), cookie if isinstance(cookie, str) else None


def annotation_value(cookie: str, state: StickyState) -> str:
    """The annotation's value: the cookie's name and the cookies in force."""
    return json.dumps({"cookie": cookie, **asdict(state)}, sort_keys=True)


def initial_state(key: str, weight: int) -> StickyState:
    """The cookies a rendered manifest starts with (the same for the same ``key``: rendering again changes
    nothing); the runner's first weight change keeps them, a rollback ends them."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return StickyState(digest[:8], digest[8:16], weight)


def annotation_patch(annotations: Mapping[str, str], cookie: str, state: StickyState | None) -> list[dict[str, Any]]:
    """JSON-patch operations writing ``state`` (with the cookie's name) into the annotation, or removing it."""
    pointer = "/metadata/annotations/" + ANNOTATION.replace("~", "~0").replace("/", "~1")
    if state is None:
        return [{"op": "remove", "path": pointer}] if ANNOTATION in annotations else []
    written = annotation_value(cookie, state)
    if not annotations:
        return [{"op": "add", "path": "/metadata/annotations", "value": {ANNOTATION: written}}]
    return [{"op": "add", "path": pointer, "value": written}]


def _token() -> str:
    return secrets.token_hex(4)


def restick_share(old: int, new: int) -> int:
    """Percent of stable's clients to move to the canary so that it holds ``new`` % after ``old`` %."""
    if old >= 100:
        return 100
    return max(0, min(100, round(100 * (new - old) / (100 - old))))


def next_state(previous: StickyState | None, old: int, new: int) -> StickyState | None:
    """The cookies for weight ``new`` after ``old``: none at weight 0 (stickiness ends), the same at the same
    weight, the canary's clients kept when the weight rises, everyone split afresh when it falls."""
    if new <= 0:
        return None
    if previous is not None and new == old:
        return previous
    if previous is None or new < old or old <= 0:
        return StickyState(_token(), _token(), new)
    return StickyState(previous.canary, _token(), restick_share(old, new))


def cookie_value(side: str, token: str) -> str:
    return f"{side}.{token}"


def set_cookie(name: str, side: str, token: str) -> str:
    """The ``Set-Cookie`` header value marking a client with ``side``."""
    return f"{name}={cookie_value(side, token)}; Path=/; HttpOnly; SameSite=Lax"


def cookie_regex(name: str, value_prefix: str, *, exact: bool = True) -> str:
    """An RE2 pattern matching a whole ``Cookie`` header that carries ``name=value`` (``name=value…`` when not
    ``exact``)."""
    value = re.escape(value_prefix) + ("" if exact else r"[^;]*")
    return rf"^(.*;\s*)?{re.escape(name)}={value}(;.*)?$"


# ---- Istio VirtualService ----------------------------------------------------------------------------------------


def _istio_destination(host: str, subset: str, weight: int | None, cookie: str | None) -> dict[str, Any]:
    destination: dict[str, Any] = {"destination": {"host": host, "subset": subset}}
    if weight is not None:
        destination["weight"] = weight
    if cookie is not None:
        destination["headers"] = {"response": {"add": {"Set-Cookie": cookie}}}
    return destination


def _istio_cookie_route(name: str, regex: str, route: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": f"{PREFIX}{name}", "match": [{"headers": {"cookie": {"regex": regex}}}], "route": route}


def istio_routes(
    http: list[dict[str, Any]], cookie: str, state: StickyState | None, *, stable: str, canary: str, weight: int
) -> list[dict[str, Any]]:
    """``spec.http`` of a VirtualService with the cookie routes of ``state`` (none: removed) after the header
    route, and the weighted route (``stable``/``canary`` subsets) at ``weight`` marking each client it splits."""
    out: list[dict[str, Any]] = []
    weighted = False
    for route in http:
        if str(route.get("name", "")).startswith(PREFIX):
            continue
        subsets = [d.get("destination", {}).get("subset") for d in route.get("route", [])]
        if stable in subsets and canary in subsets and not weighted:  # the route IstioRouter.slots moves
            route = {**route, "route": [_weighted(d, cookie, state, stable, weight) for d in route["route"]]}
            weighted = True
        out.append(route)
    if state is None:
        return out
    host = next(d["destination"]["host"] for r in out for d in r.get("route", []) if "destination" in d)
    marked = {side: set_cookie(cookie, side, getattr(state, side)) for side in ("canary", "stable")}
    routes = [
        _istio_cookie_route("canary", cookie_regex(cookie, cookie_value("canary", state.canary)),
                            [_istio_destination(host, canary, None, None)]),
        _istio_cookie_route("stable", cookie_regex(cookie, cookie_value("stable", state.stable)),
                            [_istio_destination(host, stable, None, None)]),
        _istio_cookie_route("restick", cookie_regex(cookie, "stable.", exact=False), [
            _istio_destination(host, stable, 100 - state.restick, marked["stable"]),
            _istio_destination(host, canary, state.restick, marked["canary"]),
        ]),
    ]  # fmt: skip
    at = next((i + 1 for i, r in enumerate(out) if r.get("name") == "canary-header"), 0)
    return [*out[:at], *routes, *out[at:]]


def _weighted(
    destination: dict[str, Any], cookie: str, state: StickyState | None, stable: str, weight: int
) -> dict[str, Any]:
    """One destination of the weighted route at ``weight``, with our Set-Cookie added (state) or taken away."""
    subset = destination.get("destination", {}).get("subset")
    out = {**destination, "weight": 100 - weight if subset == stable else weight}
    response = dict(out.get("headers", {}).get("response", {}))
    add = {k: v for k, v in response.get("add", {}).items() if not _ours(k, v, cookie)}
    if state is not None:
        side = "stable" if subset == stable else "canary"
        add["Set-Cookie"] = set_cookie(cookie, side, getattr(state, side))
    headers = {k: v for k, v in out.get("headers", {}).items() if k != "response"}
    response = {k: v for k, v in response.items() if k != "add"} | ({"add": add} if add else {})
    if response:
        headers["response"] = response
    out.pop("headers", None)
    return out | ({"headers": headers} if headers else {})


def _ours(name: str, value: str, cookie: str) -> bool:
    return name.lower() == "set-cookie" and str(value).startswith(f"{cookie}=")


# ---- Gateway API HTTPRoute ---------------------------------------------------------------------------------------


def _gateway_ref(ref: dict[str, Any], weight: int | None, marks: str | None, cookie: str) -> dict[str, Any]:
    """A backendRef at ``weight`` whose answers carry the Set-Cookie ``marks`` (none: ours taken away)."""
    out = {k: v for k, v in ref.items() if k not in ("weight", "filters")}
    filters = [f for f in ref.get("filters", []) if not _our_filter(f, cookie)]
    if marks is not None:
        add = [{"name": "Set-Cookie", "value": marks}]
        filters.append({"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": add}})
    if weight is not None:
        out["weight"] = weight
    return out | ({"filters": filters} if filters else {})


def _split_ref(ref: dict[str, Any], cookie: str, state: StickyState | None, stable: str, weight: int) -> Any:
    side = "stable" if ref["name"] == stable else "canary"
    marks = set_cookie(cookie, side, getattr(state, side)) if state is not None else None
    return _gateway_ref(ref, 100 - weight if side == "stable" else weight, marks, cookie)


def _our_filter(f: Mapping[str, Any], cookie: str) -> bool:
    added = f.get("responseHeaderModifier", {}).get("add", [])
    return f.get("type") == "ResponseHeaderModifier" and any(_ours(h["name"], h["value"], cookie) for h in added)


def gateway_rules(
    rules: list[dict[str, Any]], cookie: str, state: StickyState | None, *, stable: str, canary: str, weight: int
) -> list[dict[str, Any]]:
    """``spec.rules`` of an HTTPRoute with the cookie rules of ``state`` (none: removed) after the header rule,
    and the weighted rule (``stable``/``canary`` backendRefs) at ``weight`` marking each client it splits."""
    out: list[dict[str, Any]] = []
    refs: dict[str, dict[str, Any]] = {}
    for rule in rules:
        if str(rule.get("name", "")).startswith(PREFIX):
            continue
        names = [r.get("name") for r in rule.get("backendRefs", [])]
        if stable in names and canary in names and not refs:  # the rule GatewayRouter.slots moves
            refs = {r["name"]: r for r in rule["backendRefs"]}
            rule = {**rule, "backendRefs": [_split_ref(r, cookie, state, stable, weight) for r in rule["backendRefs"]]}
        out.append(rule)
    if state is None or not refs:
        return out

    def rule_for(name: str, regex: str, backends: list[dict[str, Any]]) -> dict[str, Any]:
        match = {"headers": [{"type": "RegularExpression", "name": "Cookie", "value": regex}]}
        return {"name": f"{PREFIX}{name}", "matches": [match], "backendRefs": backends}

    marked = {side: set_cookie(cookie, side, getattr(state, side)) for side in ("canary", "stable")}
    added = [
        rule_for("canary", cookie_regex(cookie, cookie_value("canary", state.canary)),
                 [_gateway_ref(refs[canary], None, None, cookie)]),
        rule_for("stable", cookie_regex(cookie, cookie_value("stable", state.stable)),
                 [_gateway_ref(refs[stable], None, None, cookie)]),
        rule_for("restick", cookie_regex(cookie, "stable.", exact=False), [
            _gateway_ref(refs[stable], 100 - state.restick, marked["stable"], cookie),
            _gateway_ref(refs[canary], state.restick, marked["canary"], cookie),
        ]),
    ]  # fmt: skip
    at = next((i + 1 for i, r in enumerate(out) if _is_header_rule(r, canary)), 0)
    return [*out[:at], *added, *out[at:]]


def _is_header_rule(rule: Mapping[str, Any], canary: str) -> bool:
    headers = [h for m in rule.get("matches", []) for h in m.get("headers", [])]
    names = [r.get("name") for r in rule.get("backendRefs", [])]
    return names == [canary] and any(str(h.get("name", "")).lower() == "x-canary" for h in headers)
