"""``canary-checks serve``: the gate and smoke suites behind Flagger's webhooks.

Flagger calls a webhook URL with ``{"name", "namespace", "phase", "metadata"}`` and advances only on a 2xx answer.
Each hook has its own path here, because the payload does not say which hook it is:

=====================================  ===========================================  =======================
path                                   runs                                          when Flagger calls it
=====================================  ===========================================  =======================
``POST /flagger/pre-rollout``          ``pytest suites/smoke --target canary``       before any traffic moves
``POST /flagger/rollout``              ``pytest suites/gate --stage N``              every analysis interval
``POST /flagger/confirm-traffic-increase``  the gate suite                           before each weight step
``POST /flagger/confirm-promotion``    the gate suite                                before promotion
``GET /healthz``                       nothing (no token needed)                     the Pod's probes
=====================================  ===========================================  =======================

Answers: 200 passed; 412 a gate failed or could not decide (the body names them, and Flagger logs the body);
401 without the shared token (``Authorization: Bearer`` or ``metadata.token``); 429 while a suite of the same
service runs (one at a time per service); 504 when the suite outlasts ``--suite-timeout``. Every call writes
``reports/<run-id>/`` like any other run.
"""

from __future__ import annotations

import hmac
import json
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from canary_checks.config import CanaryConfig, check_namespace, check_workload
from canary_checks.gates import GateResult, evaluate
from canary_checks.monitor import nearest_stage
from canary_checks.prometheus import MetricsSource
from canary_checks.report import build_report, new_run_id, outcome_of, record_series, write_run
from canary_checks.suite import SuiteRun, run_suite

__all__ = ["HOOKS", "ServeOptions", "WebhookServer"]

log = logging.getLogger(__name__)

HOOKS = {
    "pre-rollout": "smoke",
    "rollout": "gate",
    "confirm-traffic-increase": "gate",
    "confirm-promotion": "gate",
}
"""Flagger hook → which suite answers it."""
MAX_BODY = 64 * 1024


@dataclass
class ServeOptions:
    token: str
    host: str = "127.0.0.1"
    port: int = 8080
    reports: Path = Path("reports")
    gate_suite: Path = Path("suites/gate")
    smoke_suite: Path = Path("suites/smoke")
    suite_timeout: float = 120.0
    config_path: Path | None = None
    max_runs: int = 2
    """Suites running at once across all services (each is a pytest process)."""


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    after: Callable[[], None] | None = None
    """Work done once the answer is sent (the report: plots take a second; Flagger should not wait for them)."""


@dataclass
class _Busy:
    hook: str
    since: float


@dataclass
class WebhookServer:
    config: CanaryConfig
    options: ServeOptions
    _running: dict[tuple[str, str], _Busy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- one call ----

    def authorized(self, authorization: str, payload: Mapping[str, Any] | None) -> bool:
        """The shared token, from ``Authorization: Bearer`` or Flagger's ``metadata.token``, compared in constant
        time."""
        given = ""
        auth = authorization
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        elif payload is not None and isinstance(payload.get("metadata"), dict):
            given = str(payload["metadata"].get("token", ""))
        return bool(given) and hmac.compare_digest(given.encode(), self.options.token.encode())

    def handle(self, hook: str, payload: Mapping[str, Any]) -> Reply:
        name, namespace = payload.get("name"), payload.get("namespace") or self.config.namespace
        raw_metadata = payload.get("metadata")
        metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        try:
            check_workload(str(name or ""))
            check_namespace(str(namespace))
        except ValueError as e:
            return Reply(400, {"error": f"name/namespace: {e}", "fix": "send Flagger's payload: name, namespace"})
        service, namespace = str(name), str(namespace)
        key = (namespace, service)
        with self._lock:
            busy = self._running.get(key)
            if busy is not None:
                return Reply(429, {"error": f"a {busy.hook} suite of {service} in {namespace} has been running "
                                             f"for {time.time() - busy.since:.0f} s; one at a time per service",
                                    "retry_after": 5})  # fmt: skip
            if len(self._running) >= self.options.max_runs:
                return Reply(429, {"error": f"{len(self._running)} suites are running, the most at once "
                                             "(--max-runs)", "retry_after": 5})  # fmt: skip
            self._running[key] = _Busy(hook, time.time())
        try:
            return self._run(hook, service, namespace, metadata)
        finally:
            with self._lock:
                self._running.pop(key, None)

    def _run(self, hook: str, service: str, namespace: str, metadata: Mapping[str, Any]) -> Reply:
        suite_kind = HOOKS[hook]
        config = self.config.model_copy(update={"service": service, "namespace": namespace})
        args = [f"--service={service}", f"--namespace={namespace}"]
        stage: int | None = None
        if suite_kind == "gate":
            stage, inferred, problem = self._stage(config, metadata)
            if problem:
                return Reply(400, {"error": problem})
            # each service's sequential evidence accumulates across calls, beside the reports (writable in a Pod)
            args.append(f"--canary-evidence={self.options.reports / f'evidence-{namespace}-{service}.json'}")
            if inferred:
                # Flagger owns the weights and steps by its own stepWeight: judge the thresholds of the nearest
                # stage, and leave the split to Flagger.
                args.append("--threshold=traffic_split.enabled=false")
        else:
            args.append(f"--target={metadata.get('target', 'canary')}")
        run_id = new_run_id("webhook")
        run_dir = self.options.reports / run_id
        started = time.time()
        write_run(run_dir, kind="webhook", hook=hook, service=service, namespace=namespace, stage=stage,
                  started=started)  # fmt: skip
        suite = self.options.gate_suite if suite_kind == "gate" else self.options.smoke_suite
        junit = run_dir / (f"stage-{stage}.xml" if stage is not None else f"{suite_kind}.xml")
        try:
            run = run_suite(suite, stage, junit, config_path=self.options.config_path, extra_args=args,
                            timeout=self.options.suite_timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            write_run(run_dir, ended=time.time(), exit_status="timeout")
            return Reply(504, {"error": f"the {suite_kind} suite ran longer than {self.options.suite_timeout:g} s "
                                         "and was stopped", "run_id": run_id,
                                "fix": "raise --suite-timeout, or see why Prometheus answers slowly"})  # fmt: skip
        write_run(run_dir, ended=time.time(), exit_status=run.exit_code)
        body = self._body(hook, service, namespace, stage, run, run_id)
        status = 200 if run.passed else 412 if run.exit_code == 1 else 500

        def report() -> None:
            try:
                if suite_kind == "gate":
                    record_series(config, MetricsSource(config), run_dir, started - 900, time.time())
                build_report(run_dir)
            except Exception as e:  # after the answer: nothing to tell Flagger, so it goes to the log
                log.warning("report of %s not written: %s: %s", run_id, e.__class__.__name__, e)

        return Reply(status, body, report)

    def _stage(self, config: CanaryConfig, metadata: Mapping[str, Any]) -> tuple[int | None, bool, str]:
        given = metadata.get("stage")
        if given is not None:
            try:
                stage = int(str(given).rstrip("%"))
            except ValueError:
                return None, False, f"metadata.stage must be a percent such as 25; got {given!r}"
            if stage not in config.stages:
                return None, False, f"metadata.stage {stage} is not one of the stages {list(config.stages)}"
            return stage, False, ""
        split = evaluate(config, MetricsSource(config), ["traffic_split"])["traffic_split"]
        share = split.value if isinstance(split, GateResult) else None
        return nearest_stage(config, share), True, ""

    @staticmethod
    def _body(hook: str, service: str, namespace: str, stage: int | None, run: SuiteRun, run_id: str) -> dict[str, Any]:
        failing = [
            {"gate": r.gate or r.test.rpartition("::")[2], "verdict": r.verdict or r.outcome, "value": r.value,
             "threshold": r.threshold, "unit": r.unit, "summary": r.summary or r.message.splitlines()[0]}
            for r in run.failing
        ]  # fmt: skip
        outcome = outcome_of(asdict(r) for r in run.records) if run.exit_code in (0, 1) else "error"
        body: dict[str, Any] = {"outcome": outcome, "hook": hook, "service": service, "namespace": namespace,
                                "stage": stage, "checks": len(run.records), "failing": failing,
                                "run_id": run_id}  # fmt: skip
        if outcome == "error":
            body["output"] = run.output[-2000:]
        return body

    # ---- HTTP ----

    def http_server(self) -> ThreadingHTTPServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 30  # a client that stops sending mid-request is dropped
            server_version = "canary-checks"

            def _send(self, answer: Reply) -> None:
                data = (json.dumps(answer.body, sort_keys=True) + "\n").encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if answer.status == 401:
                    self.send_header("WWW-Authenticate", 'Bearer realm="canary-checks"')
                if answer.status == 429:
                    self.send_header("Retry-After", str(answer.body.get("retry_after", 5)))
                self.end_headers()
                self.wfile.write(data)
                if answer.after is not None:
                    answer.after()

            def do_GET(self) -> None:
                if self.path in ("/healthz", "/readyz"):
                    self._send(Reply(200, {"status": "ok"}))
                else:
                    self._send(Reply(404, {"error": f"no GET {self.path}", "hooks": _paths()}))

            def do_POST(self) -> None:
                hook = self.path.split("?")[0].removeprefix("/flagger/")
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    self._send(Reply(400, {"error": "Content-Length is not a number"}))
                    return
                if length > MAX_BODY:
                    self._send(Reply(413, {"error": f"request body over {MAX_BODY} bytes"}))
                    return
                raw = self.rfile.read(length) if length else b""
                try:
                    payload = json.loads(raw or b"{}")
                    if not isinstance(payload, dict):
                        raise ValueError("expected a JSON object")
                except ValueError as e:
                    if not server.authorized(self.headers.get("Authorization", ""), None):
                        self._send(Reply(401, {"error": "missing or wrong token"}))
                        return
                    self._send(Reply(400, {"error": f"the body is not Flagger's JSON payload: {e}"}))
                    return
                if not server.authorized(self.headers.get("Authorization", ""), payload):
                    fix = "send Authorization: Bearer <token> or metadata.token"
                    self._send(Reply(401, {"error": "missing or wrong token", "fix": fix}))
                    return
                if hook not in HOOKS:
                    self._send(Reply(404, {"error": f"no webhook at {self.path}", "hooks": _paths()}))
                    return
                started = time.monotonic()
                answer = server.handle(hook, payload)
                log.info("%s %s → %d in %.1f s", hook, payload.get("name"), answer.status, time.monotonic() - started)
                self._send(answer)

            def log_message(self, format: str, *args: Any) -> None:
                log.info("%s %s", self.address_string(), format % args)

        httpd = ThreadingHTTPServer((self.options.host, self.options.port), Handler)
        httpd.daemon_threads = True
        return httpd


def _paths() -> list[str]:
    return [f"POST /flagger/{h}" for h in HOOKS]
