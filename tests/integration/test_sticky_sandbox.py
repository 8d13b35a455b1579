"""Sticky canary sessions in the real sandbox: HAProxy sets the cookie, Locust's users (each with its own cookie jar)
carry it, and the demo pods' x-served-by header says who answered each of them (the locustfile's sides.json).

One sandbox of its own (its HAProxy is written with routing.sticky on), taken through 25 % → 50 % → rollback."""

from __future__ import annotations

import io
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from canary_checks.config import RoutingSettings, StickySessions, load_config
from canary_checks.rundir import RunRecord
from canary_checks.sandbox import Sandbox, SandboxPlatform
from canary_checks.sandbox.sides import Sides, sides_between
from tests.conftest import write_config
from tests.integration.conftest import OWN_STATE, Live, sandbox_settings

pytestmark = pytest.mark.xdist_group("sticky-sandbox")  # one sandbox with sticky sessions, on one worker

COOKIE = "cc-session"
REQUESTS = 3000
"""Answers to the weighted users a stretch waits for: at 25 %, one standard deviation of the request share is
under 1 point."""
TOLERANCE = 2.0
"""Points of the weight the split may differ by (issue 17)."""


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("sticky")
    settings = sandbox_settings(root / "state")
    path = write_config(root / "canary.yaml", service="auth", namespace="orion", kubernetes={"enabled": False},
                        routing={"sticky": {"enabled": True, "cookie": COOKIE}}, sandbox=settings)  # fmt: skip
    sandbox = Sandbox(load_config(path))
    sandbox.up(weight=25)
    try:
        sandbox.wait_ready()  # every HAProxy server up: its first checks may have run before the pods listened
        yield sandbox
    finally:
        sandbox.down()


def canary_pods(box: Sandbox) -> set[str]:
    return {p["pod"] for p in box.pods() if p["workload"] == box.config.workload("canary")}


def stretch(
    box: Sandbox, start: float, *, before: float | None = None, requests: int = REQUESTS, timeout: float = 240.0
) -> Sides:
    """The users' sides from ``start`` until they have sent ``requests`` (polled: a busy machine sends fewer a
    second); who was on the canary as of ``before``."""
    pods, deadline = canary_pods(box), time.monotonic() + timeout
    while True:
        found = sides_between(box.sides(), start, time.time(), pods, before=before)
        if found.requests >= requests:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"only {found.requests} answers to Locust's users in {timeout:.0f}s: {found}")
        time.sleep(1)


def served_by(box: Sandbox, cookie: str | None) -> str:
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    request = urllib.request.Request(f"{box.service_url}/api/items/1", headers=headers)
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(response.headers["x-served-by"])


SETTLED = 1.0
"""Seconds before a weight change by which a request surely reached HAProxy: Locust's users fire together once a
second, and a burst started just before the change may still be on its way when it happens."""


def weight_change(box: Sandbox, weight: int) -> tuple[float, float]:
    """Set the weight; an instant surely before it (by request start: see SETTLED) and the instant after HAProxy
    confirmed it (every request started later sees it)."""
    before = time.time() - SETTLED
    assert box.set_weight(weight) == weight
    return before, time.time()


def near(value: float, weight: int) -> Callable[[], str]:
    return lambda: f"{value:.2f} % is not within {TOLERANCE} points of {weight} %"


def test_with_sticky_sessions_no_user_sees_both_sides_in_a_stage_and_the_split_holds(box: Sandbox) -> None:
    # stage 25 %: from whatever came before (nothing, a rollback, a higher or lower weight)
    before, start = weight_change(box, 25)
    at_25 = stretch(box, start, before=before)
    print(f"stage 25 %: {at_25.describe()}")
    assert at_25.users >= 150 and at_25.both == 0, at_25
    assert abs(at_25.user_share - 25) <= TOLERANCE, near(at_25.user_share, 25)()
    assert abs(at_25.request_share - 25) <= TOLERANCE, near(at_25.request_share, 25)()

    # stage 50 %: the canary's users stay, a third of stable's move over, nobody switches within the stage
    before, start = weight_change(box, 50)
    at_50 = stretch(box, start, before=before)
    print(f"stage 50 %: {at_50.describe()}")
    assert at_50.both == 0, at_50
    assert len(at_50.canary_before) == at_25.canary_users and at_50.moved_back == 0, at_50
    assert abs(at_50.user_share - 50) <= TOLERANCE, near(at_50.user_share, 50)()
    assert abs(at_50.request_share - 50) <= TOLERANCE, near(at_50.request_share, 50)()


def test_a_rollback_ends_stickiness_even_for_a_client_holding_the_canary_cookie(box: Sandbox) -> None:
    _, at_25 = weight_change(box, 25)
    # Locust's users on their sides at 25 % before the rollback (taken at once, no user had reached the canary yet)
    assert stretch(box, at_25, requests=400).canary_users > 0
    state = box.router.sticky_state()
    assert state is not None
    canary_cookie = f"canary.{state.canary}"
    pods = canary_pods(box)
    # the cookie works while the canary has a share: this test could fail
    assert all(served_by(box, canary_cookie) in pods for _ in range(20))
    before, start = weight_change(box, 0)
    assert box.router.sticky_state() is None
    assert not any(served_by(box, canary_cookie) in pods for _ in range(20))
    after = stretch(box, start, before=before, requests=1000)
    print(f"rolled back: {after.describe()}")
    assert after.canary_requests == 0 and after.canary_users == 0 and after.both == 0, after
    assert after.moved_back == len(after.canary_before) > 0, after  # every canary user is back on stable


def test_the_router_marks_a_new_client_with_the_side_that_answered_it(box: Sandbox) -> None:
    weight_change(box, 50)
    request = urllib.request.Request(f"{box.service_url}/api/items/1")
    with urllib.request.urlopen(request, timeout=5) as response:
        pod, cookie = response.headers["x-served-by"], response.headers["set-cookie"]
    side = "canary" if pod in canary_pods(box) else "stable"
    assert cookie.startswith(f"{COOKIE}={side}.") and "HttpOnly" in cookie, cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert {served_by(box, value) for _ in range(20)} == {pod}
    # a header route wins over the cookie: smoke checks reach the side they ask for
    request = urllib.request.Request(f"{box.service_url}/api/items/1", headers={
        "Cookie": f"{COOKIE}={value}", "x-canary": "false" if side == "canary" else "true"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.headers["x-served-by"] != pod
        assert response.headers["set-cookie"] is None  # the header routes mark nobody


def test_the_demos_sticky_scene_shows_two_stages_and_a_rollback(box: Sandbox, tmp_path: Path) -> None:
    from canary_checks.sandbox.tour import _sticky

    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    record = RunRecord.start(tmp_path, "demo", run_id="demo-sticky", service="auth", namespace="orion",
                             started=time.time())  # fmt: skip
    ok = _sticky(box, box.config, record, console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    print(shown)
    assert ok, shown
    for what in ("stage 25 %: ", "stage 50 %: ", "rolled back (weight 0): "):
        assert f"{what}" in shown and "0 saw both sides" in shown.split(what, 1)[1].splitlines()[0], shown
    assert box.router.get_weight() == box.config.stages[0]


@OWN_STATE  # a refusal, no window
def test_sticky_sessions_on_a_sandbox_started_without_them_are_refused_with_the_fix(live: Live) -> None:
    config = live.config.model_copy(update={"routing": RoutingSettings(sticky=StickySessions(enabled=True))})
    (problem,) = SandboxPlatform(Sandbox(config), "auth").validate()
    assert "routing.sticky.enabled is true, but the sandbox" in problem and "'canary-checks sandbox up'" in problem
    done = live.demo("--sticky")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--sticky: the sandbox running from" in done.stderr and "canary-checks sandbox down" in done.stderr
    assert live.box.router.sticky_map() is None and live.box.is_up()  # the running sandbox is left as it was


def test_a_sticky_canary_client_falls_back_to_stable_while_the_canary_is_down(box: Sandbox) -> None:
    # last in the module: taking servers out and back perturbs HAProxy's round robin for a while, and the tests
    # above count a burst of clients split by it
    weight_change(box, 50)
    state = box.router.sticky_state()
    assert state is not None
    canary_cookie, pods = f"canary.{state.canary}", canary_pods(box)
    assert served_by(box, canary_cookie) in pods
    # HAProxy takes the canary out as a failing health check does (a crash loop's restarts make that a race: one
    # check inside the half second it lives marks it up again)
    assert box.router.command("set server sticky_canary/canary state maint") == ""
    try:
        assert not any(served_by(box, canary_cookie) in pods for _ in range(10)), "answered by the canary"
    finally:
        box.router.command("set server sticky_canary/canary state ready")
    assert served_by(box, canary_cookie) in pods, "back on the canary once it is up"
    assert box.router.command("set server canary_only/canary state maint") == ""
    try:  # the header route has no backup: a smoke check against a canary that is down must fail
        request = urllib.request.Request(f"{box.service_url}/api/items/1", headers={"x-canary": "true"})
        with pytest.raises(urllib.error.HTTPError, match="503"):
            urllib.request.urlopen(request, timeout=5)
    finally:
        box.router.command("set server canary_only/canary state ready")
