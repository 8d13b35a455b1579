"""The webhooks' calls: who may call (tokens), which calls are let in (names, one suite at a time per service,
--max-runs), running a hook's suite into a run directory, the answer Flagger reads, and pruning old runs.

Seam: knows calls and suites, not sockets; :mod:`canary_checks.serve.server` carries the calls over HTTP."""

from __future__ import annotations

import hmac
import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks import forks
from canary_checks.report import outcome_of, prune_runs
from canary_checks.rundir import GATE_RUN_SPAN, RunRecord, new_run_id
from canary_checks.suite import SuiteRun, failing_fields, run_suite

if TYPE_CHECKING:  # the config, the gates and the Prometheus client load with the first call, not with --help
    from canary_checks.config import CanaryConfig
    from canary_checks.serve.server import WebhookHTTPServer


log = logging.getLogger(__name__)

HOOKS = {
    "pre-rollout": "smoke",
    "rollout": "gate",
    "confirm-traffic-increase": "gate",
    "confirm-promotion": "gate",
}
"""Flagger hook → which suite answers it."""


@dataclass
class ServeOptions:
    """How ``canary-checks serve`` runs; the defaults here are the command's."""

    token: str
    """The shared token: every call must carry it, but those for a service with a token of its own."""
    host: str = "127.0.0.1"
    port: int = 8080
    reports: Path = Path("reports")
    gate_suite: Path = Path("suites/gate")
    smoke_suite: Path = Path("suites/smoke")
    suite_timeout: float = 120.0
    """Seconds a suite may run before the call answers 504."""
    config_path: Path | None = None
    max_runs: int = 2
    """Suites running at once across all services (each is a pytest process)."""
    max_connections: int = 64
    """Connections open at once; each costs at most about 0.3 MiB (its buffers), so 64 stay under 20 MiB."""
    header_timeout: float = 10.0
    """Seconds from connecting to the end of the request's headers."""
    request_timeout: float = 30.0
    """Seconds from connecting to the end of the request's body."""
    keep_reports: int = 200
    """Webhook runs kept in the reports directory (about 270 KiB each); older ones are deleted."""
    reports_max_bytes: int = 100 * 2**20
    """Disk the webhook runs may take together, bytes; the oldest go first. 100 MiB leaves the manifest's 256 MiB
    emptyDir room for the evidence files and the suites' temporary files."""
    service_tokens: dict[str, str] = field(default_factory=dict)
    """Service name → the token its calls must carry instead of the shared one (a team's Canary cannot then start
    another team's suites)."""


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
    run_id: str = ""
    """The run's directory once it is made (pruning leaves it alone)."""


@dataclass(frozen=True)
class _Call:
    """A call let in: its service's slot and one of the --max-runs is held until :meth:`WebhookServer.run` ends."""

    hook: str
    service: str
    namespace: str
    metadata: Mapping[str, Any]


@dataclass
class WebhookServer:
    config: CanaryConfig
    options: ServeOptions
    services: Mapping[str, CanaryConfig] = field(default_factory=dict)
    """With a config of several services (``services:``), each one's settings; a call for any other is refused.
    Empty: one service, whose settings serve whatever name a call gives."""
    _running: dict[tuple[str, str], _Busy] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    stopper: forks.Stopper = field(default_factory=forks.Stopper)
    """Stops the calls' suites when the server shuts down (the calls are abandoned)."""

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
        tokens = self.options.service_tokens
        if payload is None:  # before the body is read: any token this server knows may be the call's
            expected = [self.options.token, *tokens.values()]
        else:
            expected = [tokens.get(str(payload.get("name") or ""), self.options.token)]
        # every token is compared (in constant time), so the time taken does not tell which one came close
        matches = [hmac.compare_digest(given.encode(), token.encode()) for token in expected if token]
        return bool(given) and any(matches)

    def handle(self, hook: str, payload: Mapping[str, Any]) -> Reply:
        """Answer one call: :meth:`admit`, then :meth:`run`."""
        call = self.admit(hook, payload)
        return call if isinstance(call, Reply) else self.run(call)

    def admit(self, hook: str, payload: Mapping[str, Any]) -> Reply | _Call:
        """The call, once its names are valid and its service and one of the --max-runs are free (quick: no
        I/O); else the answer (400, 429)."""
        name = payload.get("name")
        raw_metadata = payload.get("metadata")
        metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        from canary_checks.config import check_namespace, check_workload

        try:
            check_workload(str(name or ""))
            if self.services and str(name) not in self.services:
                names = ", ".join(self.services)
                return Reply(404, {"error": f"no service {name!r} in the config; it has {names}",
                                   "fix": f"send the name of one of {names}, or add services.{name} to the config "
                                          "and restart canary-checks serve"})  # fmt: skip
            namespace = payload.get("namespace") or self._config_of(str(name)).namespace
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
        return _Call(hook, service, namespace, metadata)

    def run(self, call: _Call) -> Reply:
        """Run an admitted call's suite (seconds to minutes), then free its slot."""
        try:
            return self._run(call.hook, call.service, call.namespace, call.metadata)
        finally:
            with self._lock:
                self._running.pop((call.namespace, call.service), None)

    def _run(self, hook: str, service: str, namespace: str, metadata: Mapping[str, Any]) -> Reply:
        suite_kind = HOOKS[hook]
        config = self._config_of(service).model_copy(update={"service": service, "namespace": namespace})
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
        with self._lock:
            busy = self._running.get((namespace, service))
            if busy is not None:
                busy.run_id = run_id
        started = time.time()
        record = RunRecord.start(self.options.reports, "webhook", run_id=run_id, hook=hook, service=service,
                                 namespace=namespace, stage=stage, started=started)  # fmt: skip
        suite = self.options.gate_suite if suite_kind == "gate" else self.options.smoke_suite
        junit = record.junit(stage, name=suite_kind)
        try:
            run = run_suite(suite, stage, junit, config_path=self.options.config_path, extra_args=args,
                            timeout=self.options.suite_timeout, stopper=self.stopper)  # fmt: skip
        except forks.Stopped:  # serve is shutting down: the call is abandoned, unanswered
            record.meta(ended=time.time(), exit_status="stopped")
            return Reply(503, {"error": "serve is shutting down; the suite was stopped", "run_id": run_id})
        except subprocess.TimeoutExpired:
            record.meta(ended=time.time(), exit_status="timeout")
            return Reply(504, {"error": f"the {suite_kind} suite ran longer than {self.options.suite_timeout:g} s "
                                         "and was stopped", "run_id": run_id,
                                "fix": "raise --suite-timeout, or see why Prometheus answers slowly"},
                         self.prune)  # fmt: skip
        record.meta(ended=time.time(), exit_status=run.exit_code)
        body = self._body(hook, service, namespace, stage, run, run_id)
        status = 200 if run.passed else 412 if run.exit_code == 1 else 500

        def report() -> None:
            gate = suite_kind == "gate"
            finished = record.finish(config if gate else None, since=started - GATE_RUN_SPAN)
            if finished.problem:  # after the answer: nothing to tell Flagger, so it goes to the log
                log.warning("report of %s not written: %s", run_id, finished.problem)
            self.prune()

        return Reply(status, body, report)

    def _config_of(self, service: str) -> CanaryConfig:
        """The settings of ``service``: its section's with several services, else the one config's."""
        return self.services.get(service, self.config)

    def _stage(self, config: CanaryConfig, metadata: Mapping[str, Any]) -> tuple[int | None, bool, str]:
        given = metadata.get("stage")
        if given is not None:
            from canary_checks.config import parse_stage

            try:
                stage = parse_stage(given)
                config.check_stages(stage)
            except ValueError as e:
                return None, False, f"metadata.stage: {e}"
            return stage, False, ""
        from canary_checks.config import nearest_stage
        from canary_checks.gates import GateResult, evaluate  # the gates and the client load with the first call
        from canary_checks.prometheus import MetricsSource

        split = evaluate(config, MetricsSource(config), ["traffic_split"])["traffic_split"]
        share = split.value if isinstance(split, GateResult) else None
        return nearest_stage(config, share), True, ""

    @staticmethod
    def _body(hook: str, service: str, namespace: str, stage: int | None, run: SuiteRun, run_id: str) -> dict[str, Any]:
        failing = [failing_fields(r) for r in run.failing]
        outcome = outcome_of(asdict(r) for r in run.records) if run.exit_code in (0, 1) else "error"
        body: dict[str, Any] = {"outcome": outcome, "hook": hook, "service": service, "namespace": namespace,
                                "stage": stage, "checks": len(run.records), "failing": failing,
                                "run_id": run_id}  # fmt: skip
        if outcome == "error":
            body["output"] = run.output[-2000:]
        return body

    def prune(self) -> None:
        """Delete the oldest webhook runs past --keep-reports or --reports-max-size (never one still running)."""
        with self._lock:
            running = [b.run_id for b in self._running.values() if b.run_id]
        options = self.options
        try:
            deleted = prune_runs(options.reports, kind="webhook", keep=options.keep_reports,
                                 max_bytes=options.reports_max_bytes, spare=running)  # fmt: skip
        except OSError as e:
            log.warning("old webhook reports in %s not pruned: %s", options.reports, e)
            return
        if deleted:
            log.info("deleted %d old webhook run(s) from %s/ (--keep-reports %d, --reports-max-size %d bytes), "
                     "the oldest %s", len(deleted), options.reports, options.keep_reports, options.reports_max_bytes,
                     deleted[-1])  # fmt: skip

    # ---- HTTP ----

    def http_server(self) -> WebhookHTTPServer:
        """The HTTP server of these webhooks, listening already (an OSError when it cannot)."""
        from canary_checks.serve.server import WebhookHTTPServer

        return WebhookHTTPServer(self)


def _paths() -> list[str]:
    return [f"POST /flagger/{h}" for h in HOOKS]


_SIZE = re.compile(r"\s*([0-9]+)\s*(Ki|Mi|Gi|KiB|MiB|GiB)?\s*")
_SIZE_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def parse_size(text: str) -> int:
    """``104857600``, ``512Ki``, ``100Mi`` (or ``100MiB``), ``1Gi`` → bytes, more than 0."""
    match = _SIZE.fullmatch(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(f"expected a size of more than 0 bytes such as 100Mi, 512Ki or 1Gi; got {text!r}")
    return int(match.group(1)) * _SIZE_UNITS.get((match.group(2) or "")[:2], 1)


def format_size(size: int) -> str:
    """Bytes as :func:`parse_size` reads them, in the largest unit that divides them: ``100Mi``."""
    for unit in ("Gi", "Mi", "Ki"):
        if size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return str(size)
