"""Shared fixtures: a stand-in Prometheus for unit tests (a real HTTP server speaking the query API) and the
real sandbox for integration tests."""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import matplotlib.pyplot  # noqa: F401  # imported once here: pytester's inline runs would re-import it half-way
import pytest
import yaml
from packaging.version import Version

# The plugin imports the library only when a session runs checks; pytester's inline runs forget the modules they
# imported, and numpy's cannot load twice in a process: import what a check session needs once, here.
import canary_checks.compare.evaluate
import canary_checks.kube
import canary_checks.smoke
import canary_checks.suite
from canary_checks import forks
from canary_checks.config import CanaryConfig, load_config

pytest_plugins = ["pytester"]

SUITE_PLUGINS_ONLY = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTEST_PLUGINS": "canary_checks.plugin"}
"""Every pytest the tests start (a suite by hand, through the runner, serve or the demo; pytester's inline runs) loads
canary-checks' plugin alone, as in a service's repository, not this checkout's test plugins (kmock, hypothesis, xdist,
kind: about a second of imports a process). The new-user test drops both: there the wheel's entry point must load it."""


@pytest.fixture(scope="session", autouse=True)
def suite_plugins_only() -> Iterator[None]:
    """Set in the process that runs the tests, once its own plugins are loaded (xdist's workers already started)."""
    before = {k: os.environ.get(k) for k in SUITE_PLUGINS_ONLY}
    os.environ.update(SUITE_PLUGINS_ONLY)
    forks.prepare()  # this process runs hundreds of suites, as a runner does: each forks (see tests/unit/test_forks)
    yield
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


with pytest.MonkeyPatch.context() as _unset:  # xdist's workers set COLUMNS=80: the consoles would keep it for good
    _unset.delenv("COLUMNS", raising=False)
    from canary_checks.cli import main as cli_main  # its consoles now read COLUMNS at each print

GATE_SUITE = (Path(__file__).parents[1] / "canary_checks" / "suites" / "gate" / "test_gates.py").read_text()
"""The packaged gate suite, for pytester runs in a fresh directory."""
PYTESTER_ARGS = ("-p", "no:locust", "-p", "no:asyncio", "-p", "no:cacheprovider",
                 "-W", "ignore::pytest.PytestAssertRewriteWarning")  # fmt: skip
"""Inner pytest runs: no Locust plugin (gevent), no asyncio plugin, no cache, no rewrite warning for our plugin."""


class LocalServer(ThreadingHTTPServer):
    """A test HTTP server that takes a burst of concurrent connections (the gates query in parallel; the default
    backlog of 5 makes the client's SYN wait a second for a retransmit)."""

    request_queue_size = 128
    daemon_threads = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PromStub:
    """Answers /api/v1/query from rules: the first rule whose regex matches the query wins; no match is an empty
    vector. A rule's answer is a number, a list of (labels, number), or ("error", status, message)."""

    def __init__(self) -> None:
        self.rules: list[tuple[re.Pattern[str], Any]] = []
        self.queries: list[str] = []
        self.times: list[str] = []
        self.delay = 0.0
        self.down: Any = None
        """A callable: while it says True, every query is answered 503 (Prometheus gone)."""
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()
        self.server = LocalServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, pattern: str, value: Any) -> None:
        self.rules.insert(0, (re.compile(pattern), value))

    def _reply(self, query: str, span: tuple[float, float, float] | None = None) -> tuple[int, dict[str, Any]]:
        """``span``: (start, end, step) of a range query; each series then holds the answer at every step, or a
        list of values (one per step) when the answer gives one."""
        self.queries.append(query)
        if self.down is not None and self.down():
            return 503, {"status": "error", "errorType": "unavailable", "error": "Prometheus is down (the test)"}
        value = next((answer for pattern, answer in self.rules if pattern.search(query)), [])
        if callable(value):  # an answer that depends on the moment (e.g. on the canary's weight)
            value = value()
        if isinstance(value, tuple) and value[0] == "error":
            return value[1], {"status": "error", "errorType": "bad_data", "error": value[2]}
        samples = [({}, value)] if isinstance(value, int | float | str) else value
        if span is None:
            result = [{"metric": labels, "value": [0, str(v)]} for labels, v in samples]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        start, end, step = span
        times = [start + i * step for i in range(int((end - start) / step) + 1)]
        series = []
        for labels, v in samples:
            values = v if isinstance(v, list) else [v] * len(times)
            series.append({"metric": labels, "values": [[t, str(x)] for t, x in zip(times, values, strict=False)]})
        return 200, {"status": "success", "data": {"resultType": "matrix", "result": series}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                params = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                with stub._lock:
                    stub.in_flight += 1
                    stub.peak_in_flight = max(stub.peak_in_flight, stub.in_flight)
                    stub.times.extend(params.get("time", []))
                time.sleep(stub.delay)
                with stub._lock:
                    stub.in_flight -= 1
                span = None
                if self.path.startswith("/api/v1/query_range"):
                    step = params["step"][0].rstrip("s")
                    span = (float(params["start"][0]), float(params["end"][0]), float(step))
                status, body = stub._reply(params.get("query", [""])[0], span)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """Serve on a background thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def prom() -> Iterator[PromStub]:
    stub = PromStub()
    with serving(stub.server):
        yield stub


def healthy(prom: PromStub, *, baseline: int = 0) -> None:
    """Answers of a healthy canary at stage 25: 1000 canary and 3000 stable requests, no errors (and ``baseline``
    requests of a baseline as healthy, when given)."""
    prom.answer(r'canary:request_rate:5m\{namespace="orion", service="auth"\}', 33)  # the canary rules are loaded
    sides = (("canary", 1000), ("stable", 3000), *((("baseline", baseline),) if baseline else ()))
    for side, requests in sides:
        # latency histogram buckets (the comparisons): 90 % under 100 ms, 99.5 % under 250 ms
        prom.answer(
            rf'^sum by \(le\) \(increase\(istio_request_duration_milliseconds_bucket\{{[^}}]*"auth-{side}"',
            [
                ({"le": le}, requests * c)
                for le, c in zip(
                    ("10", "25", "100", "250", "500", "1000", "+Inf"),
                    (0.2, 0.6, 0.9, 0.995, 1.0, 1.0, 1.0),
                    strict=True,
                )
            ],
        )
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}"\}}', requests)
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}", response_code=~"5..', 0)
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}", response_code!~"5..', requests)
        prom.answer(rf"histogram_quantile\(0.95.*auth-{side}", 120)
        prom.answer(rf"histogram_quantile\(0.99.*auth-{side}", 400)
        pod = f"auth-{side}-abcdefghij-klmno"
        prom.answer(rf"container_cpu_usage_seconds_total.*auth\\\\-{side}", [({"pod": pod}, 0.1)])
        prom.answer(rf'resource_limits.*auth\\\\-{side}.*"cpu"', [({"pod": pod}, 0.5)])
        prom.answer(rf"container_memory_working_set_bytes.*auth\\\\-{side}", [({"pod": pod}, 64 * 2**20)])
        prom.answer(rf'resource_limits.*auth\\\\-{side}.*"memory"', [({"pod": pod}, 256 * 2**20)])
        prom.answer(rf"kube_pod_status_ready.*auth\\\\-{side}", [({"pod": pod}, 1)])
        prom.answer(rf'kube_deployment_spec_replicas.*"auth-{side}"', 1)
        prom.answer(rf"restarts_total.*auth\\\\-{side}", [({"pod": pod, "container": "app"}, 0)])


def canary_checks(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it (its own process: what it prints, its exit code, no traceback)."""
    return subprocess.run(
        [sys.executable, "-m", "canary_checks", *args],
        cwd=cwd,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def canary_checks_here(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command in this process, through the entry point a user's process runs (``canary_checks.cli.main``: its
    error handling and exit codes) with the same directory, environment and width as :func:`canary_checks`: what it
    prints and its exit code, without a Python start and its imports (2 s with SciPy) a call. An unexpected
    exception is raised here, not printed. The tests of the process itself call :func:`canary_checks`."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        patch.chdir(cwd)
        for key, value in {**(env or {}), "COLUMNS": "200"}.items():
            patch.setenv(key, value)
        patch.setattr(sys, "argv", ["canary-checks", *args])
        try:
            cli_main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
    return subprocess.CompletedProcess(["canary-checks", *args], code, stdout.getvalue(), stderr.getvalue())


def write_config(path: Path, **settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


@pytest.fixture
def suite(pytester: pytest.Pytester, prom: PromStub) -> pytest.Pytester:
    """The repo's gate suite in a fresh directory, with a canary.yaml pointing at the stand-in Prometheus."""
    pytester.makepyfile(test_canary_gates=GATE_SUITE)
    pytester.makefile(
        ".yaml", canary=f"service: auth\nnamespace: orion\nprometheus: {{url: '{prom.url}'}}\nwindow: 30s\n"
    )
    return pytester


@pytest.fixture
def stub_config(tmp_path: Path, prom: PromStub) -> CanaryConfig:
    return load_config(write_config(tmp_path / "canary.yaml", prometheus={"url": prom.url}, window="30s"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-kind",
        action="store_true",
        default=False,
        help="run the real-cluster tests (tests/e2e): kind in Docker, the repo's manifests and the demo image",
    )


def _order(item: pytest.Item) -> int:
    """The order workers take the tests in (pytest_configure keeps it). The run is CPU-bound but where every worker
    waits for windows of traffic at once, so the waits go first and the busy work last, where it fills the cores:
    0. the longest module (marked ``longest``: the demo tour, over three minutes on one worker; started later, it is
       the suite's tail);
    1. the modules with a sandbox of their own and the tests marked long, which mostly wait for windows of traffic;
    2. the integration tests with no live sandbox (the Kubernetes emulator's rollouts: busy processes, short waits);
    3. the tests on a worker's live sandbox (started at its first such test; its traffic stops while the worker runs
       tests that do not use it: tests/integration/conftest.py);
    4. the unit tier, hundreds of short busy tests: the workers finish together."""
    if item.get_closest_marker("longest"):
        return 0
    if item.get_closest_marker("xdist_group") or item.get_closest_marker("long"):
        return 1
    if not item.get_closest_marker("integration"):
        return 4
    return 3 if "live" in getattr(item, "fixturenames", ()) else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    integration = Path(__file__).parent / "integration"
    for item in items:  # `-m "not integration"` is the unit tier: no sandbox, no emulator, no wheel build
        if item.path.is_relative_to(integration):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_order)
    kind_items = [item for item in items if item.get_closest_marker("kind")]
    if not kind_items:
        return
    if not config.getoption("--with-kind"):
        reason = "real-cluster test: pass --with-kind to run it (needs Docker, and network access for kind)"
    elif shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        reason = "--with-kind was given but no Docker engine answers here ('docker info' fails)"
    else:
        return
    for item in kind_items:
        item.add_marker(pytest.mark.skip(reason=reason))


T = TypeVar("T")


def _next(value: T | list[T]) -> T:
    """``value``, or the next of a list of them (its last one stays)."""
    if isinstance(value, list):
        return value.pop(0) if len(value) > 1 else value[0]
    return value


class Receiver:
    """A local HTTP endpoint taking JSON POSTs, as a Slack/Teams/Alertmanager webhook would. ``status`` answers
    each request and ``delay`` makes it slow (seconds; a list of either is used up in order, then its last value)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status: int | list[int] = 200
        self.delay: float | list[float] = 0.0
        self.down: Any = None
        """A callable: while it says True, every query is answered 503 (Prometheus gone)."""
        self.attempts = 0
        self.server = LocalServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _answer(self) -> int:
        return _next(self.status)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.attempts += 1
                time.sleep(_next(receiver.delay))
                status = receiver._answer()
                if status < 300:
                    receiver.received.append((self.path, json.loads(body)))
                    receiver.headers.append(dict(self.headers.items()))
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timed out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    with serving(r.server):
        yield r


def pytest_configure(config: pytest.Config) -> None:
    """A module that starts its own sandbox for its tests (``xdist_group``) must run on one worker, or each worker that
    gets one of them starts another. pytest-xdist's ``--dist loadgroup`` groups by a suffix on the test ids, which
    pytest 9.2 ignores (pytest-dev/pytest-xdist#1386): the suite would run, at twice its cost. Stop at once instead."""
    if config.getoption("dist", "no") != "loadgroup":
        return
    # xdist hands out its groups largest first (by number of tests: a one-test group of two minutes went last);
    # pytest_collection_modifyitems orders them by cost instead
    config.option.loadscopereorder = False
    xdist = Version(importlib.metadata.version("pytest-xdist"))
    if Version(pytest.__version__) >= Version("9.2") and xdist <= Version("3.8.0"):
        raise pytest.UsageError(
            f"--dist loadgroup does not group tests with pytest {pytest.__version__} and pytest-xdist {xdist} "
            "(pytest-dev/pytest-xdist#1386): install the dev extra's versions ('./dev install')"
        )
