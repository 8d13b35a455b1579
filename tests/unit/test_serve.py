"""The webhook server over real HTTP, with small suites standing in for the gate suite: authentication, bad
requests, answers, timeouts and the bounds on concurrent runs; and over raw sockets, what abusive or broken
clients get: malformed headers, slow clients, too many connections. (The real suites against the sandbox:
tests/integration/test_monitor_and_webhooks.py.)"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canary_checks.cli import cli
from canary_checks.config import load_config
from canary_checks.report import disk_usage
from canary_checks.rundir import write_run
from canary_checks.serve import MAX_BODY, ServeOptions, WebhookServer
from tests.conftest import serving, write_config

TOKEN = "unit-test-token"
SUITE = """
import os
import pathlib
import time

def test_gate():
    pathlib.Path(__file__).with_name("started").write_text(str(os.getpid()))
    deadline = time.monotonic() + {hold}
    while time.monotonic() < deadline and not pathlib.Path({release!r}).exists():
        time.sleep(0.02)
    assert {passes}, "error_rate: canary error rate 20 % > 5 %"
"""


def make_suite(path: Path, *, hold: float = 0.0, passes: bool = True) -> Path:
    """A stand-in suite that runs ``hold`` seconds, or until the test releases it (:func:`release`)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "test_stand_in.py").write_text(SUITE.format(hold=hold, release=str(path.parent / "release"), passes=passes))
    return path


def release(tmp_path: Path) -> None:
    """Let the stand-in suites still running finish now."""
    (tmp_path / "release").touch()


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, ServeOptions]]:
    config_path = write_config(tmp_path / "canary.yaml", prometheus={"url": "http://127.0.0.1:9"})
    settings: dict[str, Any] = getattr(request, "param", {})
    options = ServeOptions(
        token=TOKEN,
        port=0,
        reports=tmp_path / "reports",
        gate_suite=make_suite(tmp_path / "gate", hold=settings.get("hold", 0), passes=settings.get("passes", True)),
        smoke_suite=make_suite(tmp_path / "smoke"),
        suite_timeout=settings.get("timeout", 60),
        config_path=config_path,
        max_runs=settings.get("max_runs", 2),
        **{k: settings[k] for k in ("max_connections", "header_timeout", "request_timeout", "keep_reports",
                                    "reports_max_bytes") if k in settings},
    )  # fmt: skip
    httpd = WebhookServer(load_config(config_path), options).http_server()
    with serving(httpd):
        yield f"http://127.0.0.1:{httpd.server_address[1]}", options


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    assert status == 400 and body["error"] == "metadata.stage: 30 is not one of the stages [5, 25, 50, 100] of auth"
    status, body = post(f"{url}/flagger/confirm-rollout", PAYLOAD, AUTH)
    assert status == 404 and "POST /flagger/pre-rollout" in body["hooks"]
    status, _ = post(f"{url}/flagger/rollout", b"{" + b" " * 70_000 + b"}", AUTH)
    assert status == 413


@pytest.mark.parametrize("name", ["auth\n", "auth\r\n", "orion/auth"])
def test_a_name_with_a_trailing_newline_is_a_bad_request_and_runs_nothing(
    server: tuple[str, ServeOptions], name: str
) -> None:
    url, options = server
    status, body = post(f"{url}/flagger/rollout", {**PAYLOAD, "name": name}, AUTH)
    assert status == 400 and body["error"].startswith(f"name/namespace: {name!r} is not a valid Kubernetes name")
    status, body = post(f"{url}/flagger/rollout", {**PAYLOAD, "namespace": "orion\n"}, AUTH)
    assert status == 400 and "not a valid Kubernetes namespace" in body["error"]
    assert not options.reports.exists() or not any(options.reports.iterdir())  # no suite ran


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


def test_closing_finishes_the_reports_of_answered_calls_and_stops_running_ones_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config_path = write_config(tmp_path / "canary.yaml", prometheus={"url": "http://127.0.0.1:9"})
    options = ServeOptions(token=TOKEN, port=0, reports=tmp_path / "reports", config_path=config_path,
                           gate_suite=make_suite(tmp_path / "gate", hold=60),
                           smoke_suite=make_suite(tmp_path / "smoke"))  # fmt: skip
    httpd = WebhookServer(load_config(config_path), options).http_server()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    unanswered: list[OSError] = []

    def call_the_gate() -> None:
        try:
            post(f"{url}/flagger/rollout", PAYLOAD, AUTH)
        except OSError as e:
            unanswered.append(e)

    with serving(httpd):
        status, body = post(f"{url}/flagger/pre-rollout", PAYLOAD, AUTH)  # the smoke suite: answered at once
        assert status == 200
        caller = threading.Thread(target=call_the_gate)
        caller.start()
        until(lambda: (tmp_path / "gate" / "started").exists(), 30, "the gate suite running")
        suite = int((tmp_path / "gate" / "started").read_text())
    # as on SIGTERM, right after an answer: its report is finished, not dropped; the running call ends unanswered,
    # and its suite (holding for a minute) is stopped, not waited for by the process's exit
    assert (options.reports / body["run_id"] / "report.html").exists()
    caller.join(10)
    assert unanswered and not caller.is_alive()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "serve: stopped 1 suite(s) still running" in caplog.text
    until(lambda: not _alive(suite), 10, "the abandoned suite's process gone")
    stopped = [json.loads(p.read_text()) for p in options.reports.glob("webhook-*/run.json")]
    assert sorted(str(r.get("exit_status")) for r in stopped) == ["0", "stopped"], stopped


@pytest.mark.parametrize("server", [{"hold": 5, "timeout": 1}], indirect=True)
def test_a_suite_past_its_timeout_is_stopped_and_answers_504(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    status, body = post(f"{url}/flagger/rollout", PAYLOAD, AUTH)
    assert status == 504 and body["error"] == "the gate suite ran longer than 1 s and was stopped"


@pytest.mark.parametrize("server", [{"hold": 60, "max_runs": 2}], indirect=True)
def test_one_run_at_a_time_per_service_and_a_bound_overall(server: tuple[str, ServeOptions], tmp_path: Path) -> None:
    url, options = server
    answers: dict[str, int] = {}

    def call(key: str, name: str) -> None:
        answers[key] = post(f"{url}/flagger/rollout", {**PAYLOAD, "name": name}, AUTH)[0]

    def running() -> int:  # each suite run makes its directory first
        return len(list(options.reports.glob("webhook-*/run.json")))

    first = threading.Thread(target=call, args=("auth-1", "auth"))
    first.start()
    until(lambda: running() == 1, 30, "auth's suite running")
    others = [threading.Thread(target=call, args=a) for a in (("auth-2", "auth"), ("user", "user"))]
    for t in others:
        t.start()
    until(lambda: "auth-2" in answers and running() == 2, 30, "auth's second call answered, user's suite running")
    third = threading.Thread(target=call, args=("gateway", "gateway"))
    third.start()
    until(lambda: "gateway" in answers, 30, "gateway's call answered while both suites run")
    release(tmp_path)
    for t in (first, *others, third):
        t.join()
    assert answers == {"auth-1": 200, "auth-2": 429, "user": 200, "gateway": 429}


# ---- abuse, over raw sockets ---------------------------------------------------------------------------------------


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def answer_of(sock: socket.socket) -> tuple[int, dict[str, Any], dict[str, str]]:
    """Status, JSON body and headers of the server's answer: everything it sends until it closes."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split(" ")[1]), json.loads(body), headers


def healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        return e.code


def until(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll ``condition`` until it is true; its value."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}"
        threading.Event().wait(0.05)
    return value


HEAD = "POST /flagger/rollout HTTP/1.1\r\nHost: canary-checks\r\n"


@pytest.mark.parametrize(
    ("headers", "status", "error"),
    [
        ("Content-Length: -1\r\n", 400, "Content-Length must be a whole number of bytes from 0 to 65536; got '-1'"),
        ("Content-Length: 1e3\r\n", 400, "Content-Length must be a whole number of bytes from 0 to 65536; got '1e3'"),
        ("Content-Length: +20\r\n", 400, "Content-Length must be a whole number of bytes from 0 to 65536; got '+20'"),
        ("Content-Length: 20\r\nContent-Length: 30\r\n", 400, "conflicting Content-Length headers: 20, 30"),
        ("", 411, "POST needs a Content-Length (the body's size in bytes)"),
        ("Transfer-Encoding: chunked\r\n", 411, "a body sent with Transfer-Encoding is not read"),
        ("Content-Length: 209715200\r\n", 413, "a body of 209715200 bytes is over the 65536-byte limit"),
        (f"Authorization: Bearer wrong\r\nContent-Length: {MAX_BODY}\r\n", 401, "missing or wrong token"),
        ("X-Folded: a\r\n  b\r\nContent-Length: 2\r\n", 400, "malformed header line: '  b'"),
    ],
)  # fmt: skip
def test_a_bad_request_head_is_answered_before_any_body_is_read(
    server: tuple[str, ServeOptions], headers: str, status: int, error: str
) -> None:
    """The client sends its head, and a 200 MiB body after it; the answer comes before the body, which the server
    stops taking (it does not read it into memory first, as a negative Content-Length once made it do)."""
    url, _ = server
    sock = connect(url)
    sock.sendall(f"{HEAD}{headers}\r\n".encode())
    total, sent = 200 * 2**20, 0

    def flood() -> None:
        nonlocal sent
        chunk = b"x" * 65536
        try:
            while sent < total:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:  # the server closed: it stopped taking the body
            return

    sender = threading.Thread(target=flood)
    sender.start()
    answered, body, _ = answer_of(sock)
    sender.join(timeout=30)
    sock.close()
    assert (answered, body["error"]) == (status, error)
    assert not sender.is_alive() and sent < total / 10, f"the server took {sent} bytes of the body"


def test_malformed_request_lines_and_oversized_headers(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    for request, status, error in [
        (b"GARBAGE\r\n\r\n", 400, "not an HTTP/1.1 request line: 'GARBAGE'"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 400, "not an HTTP/1.1 request line: 'GET /healthz HTTP/2.0'"),
        (b"DELETE /flagger/rollout HTTP/1.1\r\n\r\n", 405, "no DELETE here; GET /healthz or POST /flagger/<hook>"),
        (HEAD.encode() + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n", 431,
         "the request line and headers are over 16384 bytes"),
    ]:  # fmt: skip
        sock = connect(url)
        sock.sendall(request)
        answered, body, _ = answer_of(sock)
        sock.close()
        assert (answered, body["error"]) == (status, error)


@pytest.mark.parametrize("server", [{"header_timeout": 1.0, "request_timeout": 2.0}], indirect=True)
def test_slow_clients_are_cut_at_the_deadlines_while_healthz_answers(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    stop = threading.Event()
    # a client trickling its headers a byte every 0.1 s: no single read waits long, the whole head does
    trickler, trickling_since = connect(url), time.monotonic()

    def trickle() -> None:
        for byte in HEAD.encode() * 20:
            if stop.wait(0.1):
                return
            try:
                trickler.send(bytes([byte]))
            except OSError:
                return

    threading.Thread(target=trickle, daemon=True).start()
    silent = [connect(url) for _ in range(30)]  # an incomplete head, then nothing
    for sock in silent:
        sock.sendall(HEAD.encode())
    slow_body, slow_since = connect(url), time.monotonic()
    slow_body.sendall(f"{HEAD}Authorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{".encode())
    try:
        probes = [healthz(url) for _ in range(20)]  # meanwhile the probe is answered, every time
        assert probes == [200] * 20
        status, body, _ = answer_of(trickler)
        took = time.monotonic() - trickling_since
        assert (status, body["error"]) == (408, "no complete request headers within 1 s") and 0.9 < took < 5
        for sock in silent:
            assert answer_of(sock)[0] == 408
        status, body, _ = answer_of(slow_body)
        took = time.monotonic() - slow_since
        assert status == 408 and 1.9 < took < 6
        assert body["error"] == "the body (100 bytes) did not arrive within 2 s of connecting (--request-timeout)"
        assert healthz(url) == 200
    finally:
        stop.set()
        for sock in (trickler, slow_body, *silent):
            sock.close()


@pytest.mark.parametrize("server", [{"hold": 60, "max_runs": 2, "max_connections": 2}], indirect=True)
def test_beyond_the_connection_cap_a_new_connection_gets_503(server: tuple[str, ServeOptions], tmp_path: Path) -> None:
    url, options = server
    calls = [threading.Thread(target=post, args=(f"{url}/flagger/rollout", {**PAYLOAD, "name": name}, AUTH))
             for name in ("auth", "user")]  # fmt: skip
    for call in calls:
        call.start()
    # once both calls wait for their suites (each has made its run's directory), every connection is taken and
    # neither may be cut
    until(lambda: len(list(options.reports.glob("webhook-*/run.json"))) == 2, 30, "both suites running")
    sock = connect(url)
    sock.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
    status, body, headers = answer_of(sock)
    sock.close()
    assert (status, body["error"], headers["retry-after"]) == (
        503, "2 connections are open, the most at once (--max-connections)", "1")  # fmt: skip
    release(tmp_path)
    for call in calls:
        call.join()
    assert healthz(url) == 200


@pytest.mark.parametrize("server", [{"max_connections": 4}], indirect=True)
def test_at_the_cap_the_slowest_sender_makes_room_for_the_probe(server: tuple[str, ServeOptions]) -> None:
    url, _ = server
    idle = [connect(url) for _ in range(4)]  # every connection taken by a client that sends half its request
    for sock in idle:
        sock.sendall(HEAD.encode())
    try:
        for _ in range(3):
            assert healthz(url) == 200  # at once, each time: not refused, not kept waiting
        cut, _, _ = select.select(idle, [], [], 10)
        assert cut == idle[:1]  # the oldest made room; the probes' own connections, once answered, the next ones
        status, body, _ = answer_of(cut[0])
        assert status == 408 and body["error"].endswith("its connection was needed (--max-connections)")
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("server", [{"hold": 60}], indirect=True)
def test_a_client_gone_before_its_answer_is_one_log_line(
    server: tuple[str, ServeOptions], caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    url, options = server
    caplog.set_level(logging.INFO, logger="canary_checks.serve")
    body = json.dumps(PAYLOAD).encode()
    sock = connect(url)
    sock.sendall(f"{HEAD}Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    sock.close()  # Flagger's webhook timeout, say
    until(lambda: list(options.reports.glob("webhook-*/run.json")), 30, "the call's suite running")
    release(tmp_path)  # the answer comes after the client is gone
    until(lambda: [r for r in caplog.records if "before the answer" in r.getMessage()], 60, "the log line")
    (line,) = [r for r in caplog.records if "before the answer" in r.getMessage()]
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert line.getMessage() == (
        "127.0.0.1 closed the connection before the answer 200 to POST /flagger/rollout; "
        "if it is Flagger, give the Canary's webhook a timeout over --suite-timeout"
    )
    assert not [r for r in caplog.records if r.exc_info]  # no traceback anywhere
    until(lambda: list(options.reports.glob("webhook-*/report.html")), 60, "the call's report, written all the same")


def webhook_run(reports: Path, age: float, size: int) -> Path:
    run = reports / f"webhook-old-{age:04.0f}"
    write_run(run, kind="webhook", hook="rollout", service="auth", namespace="orion", stage=25,
              started=time.time() - age, ended=time.time() - age + 5)  # fmt: skip
    (run / "series.json").write_bytes(b"x" * size)
    return run


@pytest.fixture
def old_runs(tmp_path: Path) -> tuple[list[Path], dict[str, int]]:
    """Five webhook runs of 200 KiB left by an earlier server, oldest first, and their sizes on disk — written
    before the server starts (its first prune, in the background, would race with writing them)."""
    olds = [webhook_run(tmp_path / "reports", age, 200 * 1024) for age in (500, 400, 300, 200, 100)]
    os.sync()  # blocks on disk (what disk_usage counts, as du does) are allocated on flush: a file just written has 0
    return olds, {run.name: disk_usage(run) for run in olds}


@pytest.mark.parametrize(
    "server",
    [{"keep_reports": 3}, {"reports_max_bytes": 450 * 1024}],
    ids=["by count", "by bytes"],
    indirect=True,
)
def test_webhook_reports_are_pruned_by_count_and_bytes(
    old_runs: tuple[list[Path], dict[str, int]], server: tuple[str, ServeOptions]
) -> None:
    url, options = server
    olds, sizes = old_runs
    gate_run = options.reports / "gate-20261127-101500-abcdef"
    write_run(gate_run, kind="gate", started=time.time() - 1000)
    evidence = options.reports / "evidence-orion-auth.json"  # the gate suite's, kept across calls
    evidence.write_text("{}")
    status, body = post(f"{url}/flagger/rollout", PAYLOAD, AUTH)
    assert status == 200
    new = options.reports / body["run_id"]

    def webhook_runs() -> list[Path]:
        return sorted(p.parent for p in options.reports.glob("webhook-*/run.json"))

    def pruned() -> bool:  # runs go one by one: wait for the bound itself, not for the first of them to go
        if not (new / "report.html").exists():
            return False
        if options.keep_reports == 3:
            return len(webhook_runs()) <= 3
        return sum(disk_usage(run) for run in webhook_runs()) <= options.reports_max_bytes

    until(pruned, 60, "the runs pruned after the call")
    kept = webhook_runs()
    assert new in kept and gate_run.exists() and evidence.exists()  # other runs and the evidence stay
    old_kept = [run for run in olds if run in kept]
    assert old_kept == olds[len(olds) - len(old_kept) :]  # the newest stay, the oldest go
    total = sum(disk_usage(run) for run in kept)
    if options.keep_reports == 3:
        assert len(kept) == 3
    else:
        assert total <= options.reports_max_bytes < total + sizes[olds[len(olds) - len(old_kept) - 1].name]


def test_serve_options_come_from_flags_or_the_environment(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CANARY_WEBHOOK_TOKEN": TOKEN, "CANARY_CONFIG": str(write_config(tmp_path / "canary.yaml"))}
    for extra, args, error in [
        ({"CANARY_SERVE_REQUEST_TIMEOUT": "nan"}, [],
         "Invalid value for '--request-timeout': expected a duration such as 30s, 5m or 1h; got 'nan'"),
        ({}, ["--suite-timeout", "0"], "Invalid value for '--suite-timeout': expected a duration > 0, such as 30s"),
        ({"CANARY_SERVE_HEADER_TIMEOUT": "40s"}, [],
         "--request-timeout (30s) is shorter than --header-timeout (40s)"),
        ({"CANARY_SERVE_MAX_CONNECTIONS": "2"}, [], "--max-connections (2) must be more than --max-runs (2)"),
        ({"CANARY_SERVE_REPORTS_MAX_SIZE": "-5Mi"}, [],
         "Invalid value for '--reports-max-size': expected a size of more than 0 bytes such as 100Mi"),
    ]:  # fmt: skip
        result = runner.invoke(cli, ["serve", *args], env={**env, **extra})
        assert result.exit_code == 2 and error in result.output, result.output
