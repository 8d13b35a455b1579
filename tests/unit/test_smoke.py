"""The smoke client against a real local HTTP server: statuses, body checks, who answered, no answer."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import SmokeRequest, load_config
from canary_checks.errors import ConfigError
from canary_checks.smoke import SmokeClient
from tests.conftest import LocalServer, free_port, serving, write_config


class Service:
    """Answers like a canary pod behind a header route: records each request's headers, names itself."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.status = 200
        self.body: Any = {"data": {"id": 7, "tags": ["a", "b"]}, "version": "v2"}
        self.served_by = "auth-canary-7d9f-abcde"
        self.delay = 0.0
        service = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                service.seen.append((self.command, self.path, dict(self.headers.items()), body))
                time.sleep(service.delay)
                payload = service.body if isinstance(service.body, bytes) else json.dumps(service.body).encode()
                self.send_response(service.status)
                self.send_header("x-served-by", service.served_by)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = LocalServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def service() -> Iterator[Service]:
    s = Service()
    with serving(s.server):
        yield s


def client(tmp_path: Path, url: str, target: str = "canary", **smoke: Any) -> SmokeClient:
    config = load_config(write_config(tmp_path / "canary.yaml", smoke={"url": url, **smoke}))
    return SmokeClient(config, target)


def test_the_canary_gets_its_routing_header_and_a_json_body(tmp_path: Path, service: Service) -> None:
    smoke = client(tmp_path, service.url)
    answer = smoke.send(SmokeRequest(name="create", method="POST", path="/items?x=1", body={"name": "n"},
                                     headers={"x-request-id": "r1"}, status=(200, 201)))  # fmt: skip
    assert answer.problems == () and answer.status == 200
    method, path, headers, body = service.seen[0]
    assert (method, path, json.loads(body)) == ("POST", "/items?x=1", {"name": "n"})
    assert headers["x-canary"] == "true" and headers["x-request-id"] == "r1"
    stable = client(tmp_path, service.url, "stable")
    stable.send(SmokeRequest(name="get", path="/"))
    assert service.seen[1][2]["x-canary"] == "false"


def test_wrong_status_body_and_json_fields_are_each_named(tmp_path: Path, service: Service) -> None:
    smoke = client(tmp_path, service.url)
    service.status = 503
    request = SmokeRequest(
        name="item",
        path="/items/7",
        contains=("version",),
        json_fields={"data.id": 8, "data.tags.1": "b", "data.owner": "x"},
    )
    answer = smoke.send(request)
    assert answer.problems == (
        "status 503, expected 200",
        "data.id is 7, expected 8",
        "the JSON answer has no field data.owner",
    )
    message = answer.describe("canary", smoke.headers)
    assert message.startswith(f"GET {service.url}/items/7 (target canary, x-canary: true)")
    assert "answered 503" in message and '"version": "v2"' in message
    service.body = b"<html>oops</html>"
    service.status = 200
    assert smoke.send(request).problems == (
        "the body does not contain 'version'",
        "the body is not JSON, so json_fields cannot be checked",
    )


def test_an_answer_from_the_other_side_fails_when_the_service_names_its_pod(tmp_path: Path, service: Service) -> None:
    smoke = client(tmp_path, service.url, "stable", served_by_header="x-served-by")
    (problem,) = smoke.send(SmokeRequest(name="get", path="/")).problems
    assert problem.startswith("answered by auth-canary-7d9f-abcde, not by the stable (auth-stable)")
    canary = client(tmp_path, service.url, served_by_header="x-served-by")
    assert canary.send(SmokeRequest(name="g", path="/")).problems == ()
    missing = client(tmp_path, service.url, served_by_header="x-pod")
    assert missing.send(SmokeRequest(name="g", path="/")).problems == (
        "no x-pod header in the answer, so who answered is unknown",
    )


def test_slow_and_unreachable_targets_fail(tmp_path: Path, service: Service) -> None:
    service.delay = 0.2
    slow = client(tmp_path, service.url).send(SmokeRequest(name="s", path="/", max_latency="50ms"))
    assert len(slow.problems) == 1 and slow.problems[0].endswith("> 50 ms (max_latency)")
    dead = client(tmp_path, f"http://127.0.0.1:{free_port()}").send(SmokeRequest(name="d", path="/"))
    assert dead.status == 0 and "ConnectionError" in dead.error
    assert dead.problems[0].startswith("the canary could not be reached at http://127.0.0.1:")


def test_the_stable_target_can_have_its_own_url(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "c.yaml", smoke={"targets": {"stable": {"url": "http://stable:80/"}}}))
    assert SmokeClient(config, "stable").url == "http://stable:80"
    assert SmokeClient(config, "stable").headers == {"x-canary": "false"}
    assert SmokeClient(config, "canary").url == f"http://127.0.0.1:{config.sandbox.router_port}"


@pytest.mark.parametrize(
    ("smoke", "message"),
    [
        ({"requests": [{"name": "a", "path": "/", "status": 700}]}, "statuses are HTTP codes from 100 to 599"),
        ({"requests": [{"name": "a", "path": "x"}]}, "smoke.requests.0.path"),
        ({"requests": [{"name": "a", "path": "/"}, {"name": "a", "path": "/b"}]}, "repeated: a"),
        ({"targets": {"preview": {}}}, "targets are canary and stable; got preview"),
        ({"health": ["healthz"]}, "health paths start with '/'"),
        ({"requests": [{"name": "a b", "path": "/"}]}, "smoke.requests.0.name"),
    ],
)
def test_bad_smoke_config_is_one_clear_error(tmp_path: Path, smoke: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "canary.yaml", smoke=smoke))
    assert message in caught.value.message
