"""Prometheus as production runs it, on real parts: a real Prometheus started with ``--web.config.file`` (basic
auth users with a bcrypt hash; TLS from a test CA, requiring a client certificate), a real HAProxy in front that
refuses a query without the tenant header ``X-Scope-OrgID`` (as a Mimir/Cortex gateway does), and the packaged gate
suite, ``canary-checks gates`` and the pytest plugin run against them, right and wrong. Then every file a run
writes is read back for the secrets.

The data: Prometheus scrapes, every second, a small exporter here serving Istio's request counter for auth-canary
and auth-stable (10 and 30 requests per second, no errors), so error_rate and success_rate pass only when the
queries really read it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.errors import CanaryError
from canary_checks.prometheus import MetricsSource
from canary_checks.suite import SuiteRun, packaged, run_suite
from tests.conftest import LocalServer, free_port, serving, write_config

pytestmark = [
    pytest.mark.skipif(
        not (shutil.which("prometheus") and shutil.which("haproxy") and shutil.which("openssl")),
        reason="needs the Debian packages prometheus, haproxy and openssl (./dev install)",
    ),
    pytest.mark.xdist_group("prometheus-auth"),  # one Prometheus and proxy for the module, on one worker
]

PASSWORD = "hunter2-Zq8#x"
TENANT = "team-a"
API_KEY = "k3y-9f8e7d6c5b4a"
"""A secret header the proxy does not check: it must reach Prometheus' side and never a file."""
GATES = ("-k", "test_error_rate or test_success_rate")
"""The suite's request gates: they pass only on data read through the configured authentication."""


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash as Prometheus' web config wants it (cost 4: fast, and the tests do not guard anything)."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode())
    except ImportError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # Python ≤ 3.12; glibc's libxcrypt has bcrypt
        except ImportError:
            pytest.skip("needs the bcrypt package or Python's crypt module to write a bcrypt hash")
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


# ---- a test CA, a server certificate and client certificates ------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: tuple[Path, Path]
    client: tuple[Path, Path]
    rogue_client: tuple[Path, Path]
    """Signed by another CA the server does not know."""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, stdin=subprocess.DEVNULL)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)  # fmt: skip
    return d / f"{name}.crt", d / f"{name}.key"


def _signed(d: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
             "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)  # fmt: skip
    (d / f"{name}.ext").write_text(extensions + "authorityKeyIdentifier=keyid\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return d / f"{name}.crt", d / f"{name}.key"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("certs")
    ca, rogue = _ca(d, "test-ca"), _ca(d, "rogue-ca")
    server = _signed(d, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    client = _signed(d, "gates", ca, "extendedKeyUsage=clientAuth\n")
    rogue_client = _signed(d, "intruder", rogue, "extendedKeyUsage=clientAuth\n")
    return Certs(ca[0], server, client, rogue_client)


# ---- the exporter, Prometheus and HAProxy -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """Istio's request counter for the canary (10 req/s) and stable (30 req/s), growing with the clock."""
    start = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            elapsed = time.time() - start
            lines = ["# TYPE istio_requests_total counter"]
            for workload, rate in (("auth-canary", 10), ("auth-stable", 30)):
                labels = (f'reporter="destination",destination_workload="{workload}",'
                          f'destination_workload_namespace="orion",response_code="200"')  # fmt: skip
                lines.append(f"istio_requests_total{{{labels}}} {rate * elapsed:.0f}")
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("content-type", "text/plain; version=0.0.4")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = LocalServer(("127.0.0.1", 0), Handler)
    with serving(server):
        yield f"127.0.0.1:{server.server_address[1]}"


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited {process.returncode}: {log.read_text()[-1500:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise AssertionError(f"{process.args[0]} did not listen on {port} in {timeout:.0f}s: {log.read_text()[-1500:]}")


@contextlib.contextmanager
def running(command: list[str], port: int, log: Path) -> Iterator[None]:
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait_port(port, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def prometheus(d: Path, exporter: str, web_config: str) -> tuple[list[str], int]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
        f"scrape_configs: [{{job_name: mesh, static_configs: [{{targets: ['{exporter}']}}]}}]\n"
    )
    (d / "web.yml").write_text(web_config)
    port = free_port()
    return [
        "prometheus",
        f"--config.file={d / 'prometheus.yml'}",
        f"--web.config.file={d / 'web.yml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={d / 'data'}",
    ], port


@dataclass(frozen=True)
class Servers:
    basic: str
    """http:// Prometheus requiring basic auth (user gates)."""
    tenant: str
    """HAProxy in front of it, refusing (401) a query without X-Scope-OrgID: team-a."""
    mtls: str
    """https:// Prometheus with a certificate of the test CA, requiring a client certificate of it."""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, certs: Certs, exporter: str) -> Iterator[Servers]:
    d = tmp_path_factory.mktemp("servers")
    basic_cmd, basic_port = prometheus(
        d / "basic", exporter, f"basic_auth_users:\n  gates: '{bcrypt_hash(PASSWORD)}'\n"
    )
    tls = (f"tls_server_config:\n  cert_file: {certs.server[0]}\n  key_file: {certs.server[1]}\n"
           f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {certs.ca}\n")  # fmt: skip
    mtls_cmd, mtls_port = prometheus(d / "mtls", exporter, tls)
    proxy_port = free_port()
    (d / "haproxy.cfg").write_text(
        f"""global
    maxconn 256

defaults
    mode http
    timeout connect 2s
    timeout client 15s
    timeout server 15s

frontend tenants
    bind 127.0.0.1:{proxy_port}
    http-request deny deny_status 401 unless {{ req.hdr(X-Scope-OrgID) -m str {TENANT} }}
    default_backend prometheus

backend prometheus
    server basic 127.0.0.1:{basic_port}
"""
    )
    haproxy_cmd = ["haproxy", "-db", "-f", str(d / "haproxy.cfg")]
    with (
        running(basic_cmd, basic_port, d / "basic.log"),
        running(mtls_cmd, mtls_port, d / "mtls.log"),
        running(haproxy_cmd, proxy_port, d / "haproxy.log"),
    ):
        yield Servers(
            f"http://127.0.0.1:{basic_port}", f"http://127.0.0.1:{proxy_port}", f"https://127.0.0.1:{mtls_port}"
        )


# ---- running the suite -------------------------------------------------------------------------------------------


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROM_PASSWORD", PASSWORD)
    monkeypatch.setenv("API_KEY", API_KEY)


def config(d: Path, **prometheus: Any) -> Path:
    return write_config(
        d / "canary.yaml",
        service="auth",
        namespace="orion",
        window="10s",
        min_requests=20,
        kubernetes={"enabled": False},
        prometheus=prometheus,
    )


def wait_for_data(path: Path, timeout: float = 60.0) -> None:
    """Until the canary's requests over the window are enough to decide (Prometheus has scraped a few times)."""
    source = MetricsSource(load_config(path))
    query = source.render("requests", side="canary")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if sum(s.value for s in source.query(query)) >= 40:
                return
        except CanaryError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no canary requests in {source.url} after {timeout:.0f}s")
        time.sleep(0.5)


def gates(path: Path, *extra: str) -> SuiteRun:
    return run_suite(packaged("gate"), 25, path.parent / "gates.xml", config_path=path, extra_args=(*GATES, *extra))


def verdicts(run: SuiteRun) -> dict[str, str]:
    return {r.gate or r.test: r.verdict or r.outcome for r in run.records}


def errors(run: SuiteRun) -> set[str]:
    """Each check's error message (the same for both: the source could not be read)."""
    assert run.records and all(r.outcome == "error" for r in run.records), (verdicts(run), run.output[-2000:])
    return {r.properties.get("error", r.message) for r in run.records}


@pytest.fixture
def ready(servers: Servers, tmp_path: Path, certs: Certs, secrets: None) -> Servers:
    """The servers, once each has scraped enough for the gates to decide."""
    for url, settings in (
        (servers.basic, {"basic_auth": {"username": "gates", "password_env": "PROM_PASSWORD"}}),
        (servers.mtls, {"ca_file": str(certs.ca), "cert_file": str(certs.client[0]),
                        "key_file": str(certs.client[1])}),
    ):  # fmt: skip
        (tmp_path / "probe").mkdir(exist_ok=True)
        wait_for_data(config(tmp_path / "probe", url=url, **settings))
    return servers


# ---- basic auth ----------------------------------------------------------------------------------------------------


def test_basic_auth_right_reads_the_data_and_the_gates_pass(ready: Servers, tmp_path: Path) -> None:
    run = gates(config(tmp_path, url=ready.basic, basic_auth={"username": "gates", "password_env": "PROM_PASSWORD"}))
    assert run.exit_code == 0, run.output[-2000:]
    assert verdicts(run) == {"error_rate": "pass", "success_rate": "pass"}


def test_basic_auth_in_the_url_works_and_is_never_shown(ready: Servers, tmp_path: Path) -> None:
    url = ready.basic.replace("http://", f"http://gates:{PASSWORD.replace('#', '%23')}@")
    run = gates(config(tmp_path, url=url), "--no-header")
    assert run.exit_code == 0, run.output[-2000:]
    assert "hunter2" not in run.output


@pytest.mark.parametrize(
    ("auth", "configured"),
    [
        ({"basic_auth": {"username": "gates", "password_env": "WRONG_PASSWORD"}},
         "configured: basic auth as user 'gates' (password from $WRONG_PASSWORD)"),
        ({}, "configured: no authentication"),
        ({"bearer_token_env": "PROM_PASSWORD"}, "configured: a bearer token from $PROM_PASSWORD"),
    ],
)  # fmt: skip
def test_basic_auth_wrong_is_an_error_naming_what_is_configured(
    ready: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auth: dict[str, Any], configured: str
) -> None:
    monkeypatch.setenv("WRONG_PASSWORD", "not-" + PASSWORD)
    run = gates(config(tmp_path, url=ready.basic, **auth))
    assert run.exit_code == 1
    (message,) = errors(run)
    assert f"Prometheus at {ready.basic}" in message and "answered HTTP 401" in message
    assert configured in message and "prometheus.basic_auth {username, password_env or password_file}" in message
    assert "sandbox" not in message and PASSWORD not in run.output


def test_a_missing_password_file_stops_the_suite_naming_key_and_path(ready: Servers, tmp_path: Path) -> None:
    missing = tmp_path / "secrets" / "prometheus-password"
    run = gates(config(tmp_path, url=ready.basic, basic_auth={"username": "gates", "password_file": str(missing)}))
    assert run.exit_code == pytest.ExitCode.USAGE_ERROR, run.output[-2000:]
    assert f"prometheus.basic_auth.password_file: cannot read {missing}: No such file or directory" in run.output
    assert "Errno" not in run.output and "Traceback" not in run.output


# ---- TLS and client certificates -----------------------------------------------------------------------------------


def test_mutual_tls_right_reads_the_data_and_the_gates_pass(ready: Servers, tmp_path: Path, certs: Certs) -> None:
    path = config(tmp_path, url=ready.mtls, ca_file=str(certs.ca), cert_file=str(certs.client[0]),
                  key_file=str(certs.client[1]))  # fmt: skip
    run = gates(path)
    assert run.exit_code == 0, run.output[-2000:]
    assert verdicts(run) == {"error_rate": "pass", "success_rate": "pass"}


def test_a_server_certificate_of_an_unknown_ca_is_not_trusted(ready: Servers, tmp_path: Path, certs: Certs) -> None:
    run = gates(config(tmp_path, url=ready.mtls, cert_file=str(certs.client[0]), key_file=str(certs.client[1])))
    (message,) = errors(run)
    assert "certificate not trusted (unable to get local issuer certificate; checked against the system" in message
    assert "prometheus.ca_file" in message and "prometheus.verify_tls: false" in message


@pytest.mark.parametrize("client", ["none", "rogue"])
def test_a_refused_client_certificate_says_so_and_names_the_settings(
    ready: Servers, tmp_path: Path, certs: Certs, client: str
) -> None:
    settings: dict[str, Any] = {"ca_file": str(certs.ca)}
    if client == "rogue":
        settings |= {"cert_file": str(certs.rogue_client[0]), "key_file": str(certs.rogue_client[1])}
    run = gates(config(tmp_path, url=ready.mtls, **settings))
    (message,) = errors(run)
    if client == "rogue":  # Go sends an alert, or (racing the client's first read) just closes the connection
        assert f"the client certificate {certs.rogue_client[0]} was offered" in message
        assert "refused the TLS client certificate" in message or "refused the client certificate?" in message
    else:
        assert "refused the TLS client certificate: no client certificate was offered" in message
    assert "prometheus.cert_file and prometheus.key_file" in message


# ---- a tenant header checked by a real reverse proxy --------------------------------------------------------------


def test_the_tenant_header_passes_the_proxy(ready: Servers, tmp_path: Path) -> None:
    path = config(tmp_path, url=ready.tenant, basic_auth={"username": "gates", "password_env": "PROM_PASSWORD"},
                  headers={"X-Scope-OrgID": TENANT, "X-Api-Key": {"env": "API_KEY"}})  # fmt: skip
    run = gates(path)
    assert run.exit_code == 0, run.output[-2000:]
    assert verdicts(run) == {"error_rate": "pass", "success_rate": "pass"}


@pytest.mark.parametrize("tenant", [None, "team-b"])
def test_without_the_right_tenant_the_proxy_refuses_and_the_message_says_what_was_sent(
    ready: Servers, tmp_path: Path, tenant: str | None
) -> None:
    headers = {"X-Scope-OrgID": tenant} if tenant else {}
    path = config(tmp_path, url=ready.tenant, basic_auth={"username": "gates", "password_env": "PROM_PASSWORD"},
                  headers=headers)  # fmt: skip
    (message,) = errors(gates(path))
    assert "answered HTTP 401" in message
    sent = "; headers X-Scope-OrgID" if tenant else ""
    assert f"configured: basic auth as user 'gates' (password from $PROM_PASSWORD){sent}. Check them" in message
    assert "prometheus.headers (e.g. X-Scope-OrgID for a Mimir/Cortex/Thanos tenant)" in message


# ---- canary-checks gates: said at each hold, and its own exit code ------------------------------------------------


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "canary_checks", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "COLUMNS": "200"}, stdin=subprocess.DEVNULL)  # fmt: skip


def test_gates_holds_saying_prometheus_refuses_then_exits_2_not_1(
    ready: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG", "not-" + PASSWORD)
    path = config(tmp_path, url=ready.basic, basic_auth={"username": "gates", "password_env": "WRONG"})
    # 20 s: a busy machine takes up to 10 s a look, and the hold must look at least twice
    done = cli("--canary-config", str(path), "gates", "--stage", "25", "--hold-for", "20s", "--poll-interval", "0.5s",
               "--reports", str(tmp_path / "reports"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    held = [line for line in done.stderr.splitlines() if line.startswith("stage 25 %: holding")]  # progress
    assert held, done.stderr
    assert all(f"holding (Prometheus at {ready.basic}: answered HTTP 401: Unauthorized); again in" in h for h in held)
    out = done.stdout  # the verdict
    assert f"could not evaluate stage 25 %: Prometheus at {ready.basic}: answered HTTP 401" in out
    assert "configured: basic auth as user 'gates' (password from $WRONG)" in out


def test_gates_against_an_unreachable_prometheus_exits_2(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    path = config(tmp_path, url=url)
    done = cli("--canary-config", str(path), "gates", "--stage", "25", "--hold-for", "0.5s", "--poll-interval", "0.2s",
               "--reports", str(tmp_path / "reports"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"could not evaluate stage 25 %: Prometheus at {url}: is unreachable (connection refused)" in done.stdout


def test_gates_with_a_secret_missing_exits_2_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_PASSWORD", raising=False)
    path = config(tmp_path, basic_auth={"username": "gates", "password_env": "UNSET_PASSWORD"})
    done = cli("--canary-config", str(path), "gates", "--stage", "25", "--hold-for", "5m", "--reports",
               str(tmp_path / "reports"), cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "prometheus.basic_auth.password_env: environment variable UNSET_PASSWORD is empty or unset" in done.stdout
    assert "holding" not in done.stdout + done.stderr


# ---- no secret in any file a run writes -----------------------------------------------------------------------------


def _everything_written(root: Path) -> dict[Path, str]:
    return {p: p.read_bytes().decode(errors="replace") for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["url", "settings"])
def test_no_secret_in_any_file_a_run_writes_or_in_its_output(
    ready: Servers, tmp_path: Path, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROM_TOKEN", "unused")
    if where == "url":  # the workaround teams use today: user:password@ in the URL
        path = config(tmp_path, url=ready.tenant.replace("http://", f"http://gates:{PASSWORD.replace('#', '%23')}@"),
                      headers={"X-Scope-OrgID": TENANT, "X-Api-Key": {"env": "API_KEY"}})  # fmt: skip
    else:
        path = config(tmp_path, url=ready.tenant, basic_auth={"username": "gates", "password_env": "PROM_PASSWORD"},
                      headers={"X-Scope-OrgID": TENANT, "X-Api-Key": {"env": "API_KEY"}})  # fmt: skip
    reports = tmp_path / "reports"
    # the pytest plugin's own run directory (JUnit, run.json, summary, series, report.html) and evidence
    plugin = subprocess.run(
        [sys.executable, "-m", "pytest", str(packaged("gate")), "--stage", "25", "--canary-config", str(path),
         "-p", "no:locust", "-p", "no:cacheprovider", "--canary-reports", str(reports),
         "--canary-evidence", str(reports / "evidence.json"), "--junitxml", str(reports / "user-junit.xml")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert "error_rate" in plugin.stdout and "pass" in plugin.stdout, plugin.stdout[-3000:]
    # canary-checks gates' run directory, and what config show prints
    gate_run = cli("--canary-config", str(path), "gates", "--stage", "25", "--hold-for", "0s", "--reports",
                   str(reports), cwd=tmp_path)  # fmt: skip
    shown = cli("--canary-config", str(path), "config", "show", cwd=tmp_path)
    written = _everything_written(reports)
    assert any(p.name == "run.json" for p in written) and any(p.suffix == ".xml" for p in written)
    assert any(p.name == "report.html" for p in written) and any(p.name == "evidence.json" for p in written)
    outputs = {"pytest": plugin.stdout + plugin.stderr, "gates": gate_run.stdout + gate_run.stderr,
               "config show": shown.stdout + shown.stderr}  # fmt: skip
    for secret in (PASSWORD, PASSWORD.replace("#", "%23"), API_KEY):
        leaks = [str(p) for p, text in written.items() if secret in text]
        leaks += [name for name, text in outputs.items() if secret in text]
        assert not leaks, f"{secret!r} stored or shown in {leaks}"
    if where == "url":
        assert "gates:***@127.0.0.1" in outputs["pytest"]  # the header shows the URL, its password redacted
        assert any('"prometheus": "http://gates:***@127.0.0.1' in t for p, t in written.items() if p.name == "run.json")


# ---- the wrong mesh ------------------------------------------------------------------------------------------------


def test_linkerd_configured_on_istio_metrics_names_the_mesh_that_has_them(ready: Servers, tmp_path: Path) -> None:
    path = config(tmp_path, url=ready.basic, basic_auth={"username": "gates", "password_env": "PROM_PASSWORD"})
    run = gates(path, "--mesh", "linkerd")
    assert run.exit_code == 1
    assert verdicts(run) == {"error_rate": "no data", "success_rate": "no data"}
    hint = ("no response_total series for auth-canary in orion, but istio_requests_total (Istio) has some: "
            "set mesh: istio (or --mesh istio)")  # fmt: skip
    assert all(r.summary.endswith(hint) for r in run.records), [r.summary for r in run.records]
