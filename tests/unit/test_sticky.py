"""Sticky canary sessions, the parts without a router: the setting, the plan of a weight change, and the sums of
which side answered each user."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canary_checks.config import load_config
from canary_checks.errors import ConfigError
from canary_checks.manifests import DEMO, load_values, render_all
from canary_checks.sandbox.sides import sides_between
from canary_checks.sticky import cookie_regex, next_state, restick_share, sticky_of
from tests.unit.test_manifests import crd_schema


def test_sticky_sessions_are_off_by_default_and_named_by_a_cookie(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("service: auth\n")
    assert not load_config(path).routing.sticky.enabled
    path.write_text("routing: {sticky: {enabled: true, cookie: shop-canary}}\n")
    assert load_config(path).routing.sticky.cookie == "shop-canary"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routing: {sticky: {enabled: true, cookie: 'a b'}}\n",
         "routing.sticky.cookie: a cookie name is letters, digits, '-' and '_' (starting with a letter or digit, at "
         "most 64), e.g. canary-checks (got 'a b')"),
        ("routing: {sticky: {enabled: yes please}}\n", "routing.sticky.enabled: expected true or false"),
        ("routing: {stiky: {enabled: true}}\n", "routing.stiky: unknown key (did you mean sticky?)"),
    ],
)  # fmt: skip
def test_a_sticky_mistake_names_the_key_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in caught.value.message


@pytest.mark.parametrize(("old", "new", "moved"), [(0, 5, 5), (5, 25, 21), (25, 50, 33), (50, 100, 100)])
def test_a_raised_weight_moves_just_enough_of_stables_clients(old: int, new: int, moved: int) -> None:
    assert restick_share(old, new) == moved
    # the canary kept its clients and got `moved` % of stable's: `new` % of all, within half a point
    assert abs(old + (100 - old) * moved / 100 - new) <= 0.5


def test_the_plan_keeps_the_canary_cookie_while_the_weight_rises_and_ends_it_otherwise() -> None:
    first = next_state(None, 0, 5)
    assert first is not None and first.restick == 5
    raised = next_state(first, 5, 25)
    assert raised is not None and raised.canary == first.canary and raised.stable != first.stable
    assert next_state(raised, 25, 25) == raised  # the same weight changes nothing
    lowered = next_state(raised, 25, 10)
    assert lowered is not None and lowered.canary != raised.canary  # everyone chooses again
    assert next_state(raised, 25, 0) is None  # rollback: no cookie reaches the canary


def test_the_cookie_pattern_matches_the_whole_cookie_header_only_with_our_value() -> None:
    pattern = re.compile(cookie_regex("cc", "canary.ab12"))
    assert pattern.fullmatch("cc=canary.ab12")
    assert pattern.fullmatch("theme=dark; cc=canary.ab12; lang=en")
    assert not pattern.fullmatch("cc=canary.ab123")
    assert not pattern.fullmatch("xcc=canary.ab12")
    assert not pattern.fullmatch("cc=stable.ab12")
    older = re.compile(cookie_regex("cc", "stable.", exact=False))
    assert older.fullmatch("a=1; cc=stable.0f0f") and not older.fullmatch("cc=canary.0f0f")


def test_sides_count_users_who_switched_and_the_canarys_shares() -> None:
    record = {
        "users": {
            "1": [["canary-pod", 10.0, 30.0, 21]],
            "2": [["stable-pod", 10.0, 19.5, 10], ["canary-pod", 20.2, 30.0, 10]],  # moved at the change (20)
            "3": [["stable-pod", 10.0, 30.0, 21]],
            "4": [["stable-pod", 10.0, 24.0, 15], ["canary-pod", 25.0, 30.0, 6]],  # switched within the stage
            "5": [["canary-pod", 10.0, 19.0, 10], ["stable-pod", 20.5, 30.0, 10]],  # moved back
        },
        "seconds": {"20": {"canary-pod": 3, "stable-pod": 1}, "21": {"canary-pod": 1, "stable-pod": 3}},
    }
    sides = sides_between(record, 20.0, 30.0, {"canary-pod"})
    assert (sides.users, sides.both, sides.canary_users) == (5, 1, 2)
    assert sides.canary_before == {"1", "5"} and sides.moved_back == 1
    assert (sides.requests, sides.canary_requests, sides.request_share) == (8, 4, 50.0)


# ---- the manifests with the cookie routes -------------------------------------------------------------------------


def sticky_manifests() -> list[tuple[str, dict[str, Any]]]:
    values = DEMO.model_copy(update={"sticky_cookie": "canary-checks"})
    files = render_all(values)
    return [(path, obj) for path, text in files.items() if path.endswith(("/istio.yaml", "/gateway-api.yaml"))
            for obj in yaml.safe_load_all(text) if obj and obj["kind"] in ("VirtualService", "HTTPRoute")]  # fmt: skip


@pytest.mark.parametrize(("where", "obj"), sticky_manifests())
def test_the_cookie_routes_of_the_four_services_validate_against_the_upstream_schemas(
    where: str, obj: dict[str, Any]
) -> None:
    jsonschema.Draft7Validator(crd_schema(obj)).validate(obj)  # upstream's patterns are Go's, as test_manifests says
    state, cookie = sticky_of(obj)
    assert cookie == "canary-checks" and state is not None and state.restick == 5
    if obj["kind"] == "VirtualService":
        routes = obj["spec"]["http"]
        names = [r.get("name") for r in routes]
        assert names == ["canary-header", "sticky-canary", "sticky-stable", "sticky-restick", "primary"]
        assert routes[1]["match"] == [
            {"headers": {"cookie": {"regex": cookie_regex(cookie, f"canary.{state.canary}")}}}
        ]
        marks = {d["destination"]["subset"]: d["headers"]["response"]["add"]["Set-Cookie"] for d in routes[4]["route"]}
        weights = {d["destination"]["subset"]: d["weight"] for d in routes[4]["route"]}
    else:
        rules = obj["spec"]["rules"]
        assert [r.get("name") for r in rules] == [None, "sticky-canary", "sticky-stable", "sticky-restick", None]
        assert rules[0]["matches"][0]["headers"][0]["name"] == "x-canary"
        header = rules[1]["matches"][0]["headers"][0]
        assert header == {"type": "RegularExpression", "name": "Cookie",
                          "value": cookie_regex(cookie, f"canary.{state.canary}")}  # fmt: skip
        refs = rules[4]["backendRefs"]
        marks = {
            r["name"].rpartition("-")[2]: r["filters"][0]["responseHeaderModifier"]["add"][0]["value"] for r in refs
        }
        weights = {r["name"].rpartition("-")[2]: r["weight"] for r in refs}
    assert weights == {"stable": 95, "canary": 5}
    assert marks["canary"].startswith(f"canary-checks=canary.{state.canary};")
    assert marks["stable"].startswith(f"canary-checks=stable.{state.stable};")


def test_without_the_cookie_the_rendered_routes_carry_no_cookie() -> None:
    assert "cookie" not in yaml.safe_dump(render_all(DEMO)["auth/istio.yaml"]).lower()


def test_a_bad_cookie_in_the_values_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("namespace: shop\nservices: [{name: cart, image: 'r/cart:1'}]\nsticky_cookie: 'a;b'\n")
    with pytest.raises(ConfigError, match="sticky_cookie: a cookie name is letters"):
        load_values(path)
