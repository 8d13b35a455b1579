"""Prometheus behind authentication, a proxy or the wrong URL: the settings, what is sent, and the messages.

The server here is a real HTTP server on loopback that records what it receives and answers what a test says; the
real Prometheus with basic auth and TLS is in tests/integration/test_prometheus_auth.py."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.errors import ConfigError, PrometheusQueryError, PrometheusUnreachable, redact_url
from canary_checks.prometheus import MetricsSource
from tests.conftest import GATE_SUITE, PYTESTER_ARGS, LocalServer, PromStub, free_port, healthy, serving

EMPTY = {"status": "success", "data": {"resultType": "vector", "result": []}}


class Recorder:
    """Answers every request with (status, content type, body) and keeps each request's headers."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, bytes] = (200, "application/json", json.dumps(EMPTY).encode())
        self.headers: list[dict[str, str]] = []
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recorder.headers.append(dict(self.headers.items()))
                recorder.paths.append(self.path)
                status, kind, body = recorder.answer
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = LocalServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    with serving(recorder.server):
        yield recorder


def source(settings: dict[str, Any], tmp_path: Path) -> MetricsSource:
    (tmp_path / "canary.yaml").write_text(json.dumps({"prometheus": settings}))
    return MetricsSource(load_config(tmp_path / "canary.yaml"))


def config_error(settings: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        source(settings, tmp_path)
    return caught.value.message


# ---- what is sent ------------------------------------------------------------------------------------------------


def test_basic_auth_headers_and_tenant_reach_prometheus(
    server: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROM_PASSWORD", "hunter2\n")
    (tmp_path / "key").write_text("k-123")
    settings = {
        "url": server.url,
        "basic_auth": {"username": "gates", "password_env": "PROM_PASSWORD"},
        "headers": {"X-Scope-OrgID": "team-a", "X-Api-Key": {"file": str(tmp_path / "key")}},
    }
    assert source(settings, tmp_path).query("up") == []
    sent = server.headers[0]
    assert sent["Authorization"] == "Basic " + base64.b64encode(b"gates:hunter2").decode()
    assert sent["X-Scope-OrgID"] == "team-a" and sent["X-Api-Key"] == "k-123"


def test_a_password_in_the_url_is_sent_as_basic_auth_but_never_shown(server: Recorder, tmp_path: Path) -> None:
    url = server.url.replace("http://", "http://gates:p%40ss-Word@")
    s = source({"url": url}, tmp_path)
    s.query("up")
    assert server.headers[0]["Authorization"] == "Basic " + base64.b64encode(b"gates:p@ss-Word").decode()
    assert server.paths[0].startswith("/api/v1/query?")
    assert s.url == server.url.replace("http://", "http://gates:***@")
    server.answer = (503, "text/plain", b"down")
    with pytest.raises(PrometheusQueryError) as caught:
        s.query("up")
    assert "p%40ss" not in caught.value.message and "gates:***@" in caught.value.message


def test_redaction_covers_every_url_in_a_text() -> None:
    text = "Prometheus https://u:s3cr%40t@thanos:443/x, proxy http://p:pw@proxy:3128 and https://open:9090"
    shown = redact_url(text)
    assert "s3cr" not in shown and ":pw@" not in shown
    assert shown == "Prometheus https://u:***@thanos:443/x, proxy http://p:***@proxy:3128 and https://open:9090"
    assert redact_url("https://ghp_token@host/") == "https://***@host/"  # a user alone is often a token


# ---- mistakes caught at load -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"bearer_token_env": "T", "basic_auth": {"username": "u", "password_env": "P"}},
         "bearer_token_env/bearer_token_file and basic_auth are both set: choose one way to authenticate"),
        ({"url": "https://u:p@h", "basic_auth": {"username": "u", "password_env": "P"}},
         "basic_auth and a user:password@ in url are both set"),
        ({"bearer_token_env": "T", "bearer_token_file": "/t"}, "bearer_token_env and bearer_token_file are both set"),
        ({"basic_auth": {"username": "u"}}, "prometheus.basic_auth: no password: set password_env"),
        ({"basic_auth": {"username": "u", "password": "inline"}}, "prometheus.basic_auth.password: unknown key"),
        ({"cert_file": "/c.pem"}, "cert_file is set without key_file: set key_file"),
        ({"key_file": "/k.pem"}, "key_file is set without cert_file"),
        ({"headers": {"X-Scope-OrgID": {"env": "A", "file": "/b"}}},
         "prometheus.headers.X-Scope-OrgID.secret: give exactly one of env (a variable name) or file"),
        ({"headers": {"Authorization": "Bearer x"}}, "set Authorization through bearer_token_env"),
        ({"headers": {"bad header": "x"}}, "'bad header' is not a valid HTTP header name"),
        ({"proxy_url": "socks5://u:pw@proxy:1080"}, "expected an http:// or https:// proxy URL; got 'socks5://u:***@"),
        ({"url": "ftp://u:pw@host"}, "expected an http:// or https:// URL; got 'ftp://u:***@host'"),
    ],
)  # fmt: skip
def test_conflicting_or_incomplete_auth_is_one_error_naming_the_key(
    settings: dict[str, Any], said: str, tmp_path: Path
) -> None:
    message = config_error(settings, tmp_path)
    assert said in message
    assert ":pw@" not in message


def test_missing_secret_names_the_key_and_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "secrets" / "password"
    message = config_error({"basic_auth": {"username": "u", "password_file": str(missing)}}, tmp_path)
    assert message.startswith(f"prometheus.basic_auth.password_file: cannot read {missing}: No such file")
    assert "Errno" not in message
    monkeypatch.delenv("TENANT_SECRET", raising=False)
    message = config_error({"headers": {"X-Scope-OrgID": {"env": "TENANT_SECRET"}}}, tmp_path)
    assert message.startswith("prometheus.headers.X-Scope-OrgID.env: environment variable TENANT_SECRET is empty")
    message = config_error({"bearer_token_file": str(missing)}, tmp_path)
    assert message.startswith(f"prometheus.bearer_token_file: cannot read {missing}")


def test_check_secrets_finds_a_missing_client_certificate_before_any_query(tmp_path: Path) -> None:
    (tmp_path / "canary.yaml").write_text(json.dumps({"prometheus": {"cert_file": "/no/c.pem", "key_file": "/no/k"}}))
    with pytest.raises(ConfigError, match=r"prometheus.cert_file: /no/c.pem does not exist"):
        load_config(tmp_path / "canary.yaml").prometheus.check_secrets()


# ---- answers that are not what a Prometheus API sends -------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "configured"),
    [
        ({}, "configured: no authentication"),
        ({"bearer_token_env": "PROM_TOKEN"}, "configured: a bearer token from $PROM_TOKEN"),
        ({"basic_auth": {"username": "gates", "password_env": "PROM_PASSWORD"}},
         "configured: basic auth as user 'gates' (password from $PROM_PASSWORD)"),
        ({"headers": {"X-Scope-OrgID": "team-a"}}, "configured: no authentication; headers X-Scope-OrgID"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_say_what_is_configured_and_what_exists(
    server: Recorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    settings: dict[str, Any],
    configured: str,
    status: int,
) -> None:
    monkeypatch.setenv("PROM_TOKEN", "t0ken-value")
    monkeypatch.setenv("PROM_PASSWORD", "hunter2")
    server.answer = (status, "text/plain", b"no org id\n" if status == 401 else b"forbidden\n")
    with pytest.raises(PrometheusQueryError) as caught:
        source({"url": server.url, **settings}, tmp_path).query("up")
    message = caught.value.message
    assert f"answered HTTP {status}" in message and configured in message
    for key in ("bearer_token_env", "basic_auth", "prometheus.headers (e.g. X-Scope-OrgID", "cert_file"):
        assert key in message
    assert "t0ken-value" not in message and "hunter2" not in message


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ((200, "text/html", b"<!DOCTYPE html><html><head><title>Grafana</title></head></html>"),
         "not the Prometheus query API (an HTML page, title 'Grafana')"),
        ((200, "text/plain", b"ok"), "not the Prometheus query API (not JSON: 'ok')"),
        ((200, "application/json", b'{"status": "ok"}'), "not the Prometheus query API (JSON without"),
        ((401, "text/html", b"<html><head><title>Sign in</title></head><body>login</body></html>"),
         "answered HTTP 401: an HTML page (title 'Sign in')"),
    ],
)  # fmt: skip
def test_an_answer_that_is_not_the_query_api_says_so(
    server: Recorder, tmp_path: Path, answer: tuple[int, str, bytes], said: str
) -> None:
    server.answer = answer
    with pytest.raises(PrometheusQueryError) as caught:
        source({"url": server.url}, tmp_path).query("up")
    assert said in caught.value.message
    assert "Traceback" not in caught.value.message


def test_unreachable_suggests_the_sandbox_only_for_the_sandboxs_url(tmp_path: Path) -> None:
    port = free_port()
    elsewhere = source({"url": f"http://127.0.0.1:{port}"}, tmp_path)
    with pytest.raises(PrometheusUnreachable) as caught:
        elsewhere.query("up")
    assert "sandbox" not in caught.value.message and "prometheus.url" in caught.value.message
    (tmp_path / "canary.yaml").write_text(
        json.dumps({"prometheus": {"url": f"http://127.0.0.1:{port}"}, "sandbox": {"prometheus_port": port}})
    )
    with pytest.raises(PrometheusUnreachable, match="canary-checks sandbox up"):
        MetricsSource(load_config(tmp_path / "canary.yaml")).query("up")


def test_a_dead_proxy_is_named(server: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = f"http://squid:pw@127.0.0.1:{free_port()}"
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:1")  # the configured proxy wins over the environment
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")
    with pytest.raises(PrometheusUnreachable) as caught:
        source({"url": server.url, "proxy_url": proxy}, tmp_path).query("up")
    message = caught.value.message
    assert f"through the proxy {proxy.replace(':pw@', ':***@')}" in message and "prometheus.proxy_url" in message
    assert server.headers == []


def test_init_refuses_to_write_a_password_into_canary_yaml(tmp_path: Path) -> None:
    from canary_checks.scaffold import init

    with pytest.raises(ConfigError) as caught:
        init(tmp_path, service="cart", namespace="shop", prometheus_url="https://gates:s3cret@prom.example:9090")
    message = caught.value.message
    assert "s3cret" not in message and "https://gates:***@prom.example:9090 holds a password" in message
    assert "prometheus.basic_auth: {username: gates, password_env: PROMETHEUS_PASSWORD}" in message
    assert list(tmp_path.iterdir()) == []


def test_run_json_stores_a_url_without_its_password(tmp_path: Path) -> None:
    from canary_checks.rundir import RUN, write_run

    write_run(tmp_path, kind="gate", prometheus="https://gates:s3cret@thanos.example/prometheus")
    stored = json.loads((tmp_path / RUN).read_text())
    assert stored["prometheus"] == "https://gates:***@thanos.example/prometheus"


def test_the_pytest_header_junit_and_reports_show_the_url_without_its_password(
    pytester: pytest.Pytester, prom: PromStub
) -> None:
    healthy(prom)
    url = prom.url.replace("http://", "http://gates:s3cret-pw@")
    pytester.makepyfile(test_canary_gates=GATE_SUITE)
    pytester.makefile(".yaml", canary=f"service: auth\nnamespace: orion\nprometheus: {{url: '{url}'}}\nwindow: 30s\n")
    result = pytester.runpytest(*PYTESTER_ARGS, "--stage", "25", "-k", "error_rate", "--junitxml", "out.xml")
    result.stdout.fnmatch_lines([f"canary-checks: Prometheus {prom.url.replace('http://', 'http://gates:***@')}, *"])
    written = [p for p in pytester.path.rglob("*") if p.is_file() and p.suffix in (".xml", ".json", ".html")]
    assert any(p.name == "run.json" for p in written)
    assert all("s3cret-pw" not in p.read_text() for p in written)
    assert "s3cret-pw" not in result.stdout.str()


def test_queries_go_through_the_configured_proxy(
    server: Recorder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")  # a dead one: the configured proxy wins
    target = f"http://prometheus.internal.example:{free_port()}"  # only the proxy can reach it
    samples = source({"url": target, "proxy_url": server.url, "headers": {"X-Scope-OrgID": "team-a"}}, tmp_path)
    assert samples.query("up") == []
    assert server.paths[0].startswith(f"{target}/api/v1/query?")  # a proxy's request line: the absolute URL
    assert server.headers[0]["X-Scope-OrgID"] == "team-a"


def test_a_secret_header_value_on_two_lines_is_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "tenant").write_text("team-a\nteam-b\n")
    message = config_error({"headers": {"X-Scope-OrgID": {"file": str(tmp_path / "tenant")}}}, tmp_path)
    assert message.startswith("prometheus.headers.X-Scope-OrgID.file: the value has a line break inside")
    assert "team-b" not in message
