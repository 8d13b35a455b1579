"""The webhook server over real HTTP, with small suites standing in for the gate suite: authentication, bad
requests, answers, timeouts and the bounds on concurrent runs. (The real suites against the sandbox:
tests/integration/test_monitor_and_webhooks.py.)"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.serve import ServeOptions, WebhookServer
from tests.conftest import serving, write_config

TOKEN = "unit-test-token"
SUITE = """
import time

def test_gate():
    time.sleep({sleep})
    assert {passes}, "error_rate: canary error rate 20 % > 5 %"
"""


def make_suite(path: Path, *, sleep: float = 0.0, passes: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "test_stand_in.py").write_text(SUITE.format(sleep=sleep, passes=passes))
    return path


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, ServeOptions]]:
    config_path = write_config(tmp_path / "canary.yaml", prometheus={"url": "http://127.0.0.1:9"})
    settings: dict[str, Any] = getattr(request, "param", {})
    options = ServeOptions(
        token=TOKEN,
        port=0,
        reports=tmp_path / "reports",
        gate_suite=make_suite(tmp_path / "gate", sleep=settings.get("sleep", 0), passes=settings.get("passes", True)),
        smoke_suite=make_suite(tmp_path / "smoke"),
        suite_timeout=settings.get("timeout", 60),
        config_path=config_path,
        max_runs=settings.get("max_runs", 2),
    )
    httpd = WebhookServer(load_config(config_path), options).http_server()
    with serving(httpd):
        yield f"http://127.0.0.1:{httpd.server_address[1]}", options


def post(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data, headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAYLOAD = {"name": "auth", "namespace": "orion", "phase": "Progressing", "metadata": {"stage": "25"}}


def test_every_call_needs_the_token_but_the_probe(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
        assert answer.status == 200
    assert post(f"{url}/flagger/rollout", PAYLOAD)[0] == 401
    assert post(f"{url}/flagger/rollout", PAYLOAD, {"Authorization": "Bearer nope"})[0] == 401
    assert post(f"{url}/flagger/rollout", b"not json")[0] == 401  # who you are comes before what you sent
    assert post(f"{url}/flagger/rollout", {**PAYLOAD, "metadata": {"token": TOKEN, "stage": 25}})[0] == 200


def test_bad_requests_are_named(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    status, body = post(f"{url}/flagger/rollout", b"{not json", AUTH)
    assert status == 400 and "not Flagger's JSON payload" in body["error"]
    status, body = post(f"{url}/flagger/rollout", {**PAYLOAD, "name": "Bad_Name"}, AUTH)
    assert status == 400 and "name/namespace" in body["error"]
    status, body = post(f"{url}/flagger/rollout", {**PAYLOAD, "metadata": {"stage": "30"}}, AUTH)
    assert status == 400 and body["error"] == "metadata.stage 30 is not one of the stages [5, 25, 50, 100]"
    status, body = post(f"{url}/flagger/confirm-rollout", PAYLOAD, AUTH)
    assert status == 404 and "POST /flagger/pre-rollout" in body["hooks"]
    status, _ = post(f"{url}/flagger/rollout", b"{" + b" " * 70_000 + b"}", AUTH)
    assert status == 413


def test_a_passing_suite_answers_200_and_leaves_a_report(server: tuple[str, ServeOptions]) -> None:
    url, options = server
    status, body = post(f"{url}/flagger/confirm-traffic-increase", PAYLOAD, AUTH)
    assert (status, body["outcome"], body["stage"], body["checks"]) == (200, "passed", 25, 1)
    assert (options.reports / body["run_id"] / "stage-25.xml").exists()
    status, body = post(f"{url}/flagger/pre-rollout", PAYLOAD, AUTH)
    assert (status, body["outcome"], body["stage"]) == (200, "passed", None)
    assert (options.reports / body["run_id"] / "smoke.xml").exists()


@pytest.mark.parametrize("server", [{"passes": False}], indirect=True)
def test_a_failing_suite_answers_412_naming_what_failed(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    status, body = post(f"{url}/flagger/confirm-promotion", PAYLOAD, AUTH)
    assert status == 412 and body["outcome"] == "failed"
    (failing,) = body["failing"]
    assert failing["gate"] == "test_gate" and "canary error rate 20 % > 5 %" in failing["summary"]


@pytest.mark.parametrize("server", [{"sleep": 5, "timeout": 1}], indirect=True)
def test_a_suite_past_its_timeout_is_stopped_and_answers_504(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    status, body = post(f"{url}/flagger/rollout", PAYLOAD, AUTH)
    assert status == 504 and body["error"] == "the gate suite ran longer than 1 s and was stopped"


@pytest.mark.parametrize("server", [{"sleep": 2, "max_runs": 2}], indirect=True)
def test_one_run_at_a_time_per_service_and_a_bound_overall(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    answers: dict[str, int] = {}

    def call(key: str, name: str) -> None:
        answers[key] = post(f"{url}/flagger/rollout", {**PAYLOAD, "name": name}, AUTH)[0]

    first = threading.Thread(target=call, args=("auth-1", "auth"))
    first.start()
    others = [threading.Thread(target=call, args=a) for a in (("auth-2", "auth"), ("user", "user"))]
    threading.Event().wait(0.5)
    for t in others:
        t.start()
    threading.Event().wait(0.5)
    third = threading.Thread(target=call, args=("gateway", "gateway"))
    third.start()
    for t in (first, *others, third):
        t.join()
    assert answers == {"auth-1": 200, "auth-2": 429, "user": 200, "gateway": 429}
