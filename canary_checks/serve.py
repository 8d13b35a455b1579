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
``reports/<run-id>/`` like any other run; the oldest webhook runs are deleted past ``--keep-reports`` runs or
``--reports-max-size`` bytes.

What a client may cost, whoever it is (the token is checked only once the request is in):

- one asyncio loop reads every request, so a slow client holds a buffer, not a thread; suites run on threads, at
  most ``--max-runs`` at once;
- the request line and headers: at most :data:`MAX_HEAD` bytes, within ``--header-timeout`` of connecting
  (else 431, 408); the body: a ``Content-Length`` of at most :data:`MAX_BODY` (else 411 when missing, 400 when
  malformed or negative, 413 when larger, each answered before any of the body is read), in full within
  ``--request-timeout`` of connecting (else 408);
- at most ``--max-connections`` open at once: at the cap, a new connection takes the place of the one that has been
  sending its request the longest (answered 408), so clients that trickle their requests cannot starve the probes
  or Flagger (a real request is sent at once: it is never the oldest still sending); only when every connection
  waits for its suite is the new one answered 503;
- a client that goes away, or a refusal, is one line in the log, and a burst of them one line per
  :data:`LOG_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import json
import logging
import queue
import re
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks.report import outcome_of, prune_runs
from canary_checks.rundir import GATE_RUN_SPAN, RunRecord, new_run_id
from canary_checks.suite import SuiteRun, failing_fields, run_suite

if TYPE_CHECKING:  # the config, the gates and the Prometheus client load with the first call, not with --help
    from canary_checks.config import CanaryConfig

__all__ = [
    "HOOKS",
    "MAX_BODY",
    "MAX_HEAD",
    "Reply",
    "ServeOptions",
    "WebhookHTTPServer",
    "WebhookServer",
    "format_size",
    "parse_size",
]

log = logging.getLogger(__name__)

HOOKS = {
    "pre-rollout": "smoke",
    "rollout": "gate",
    "confirm-traffic-increase": "gate",
    "confirm-promotion": "gate",
}
"""Flagger hook → which suite answers it."""
MAX_BODY = 64 * 1024
"""Largest request body read, bytes (Flagger's payload is well under 1 KiB)."""
MAX_HEAD = 16 * 1024
"""Largest request line and headers together, bytes."""
WRITE_TIMEOUT = 10.0
"""Seconds an answer may take to be taken by the client."""
LINGER = (1.0, 256 * 1024)
"""After an answer given before the request was read in full: how long (seconds) and how much (bytes) of the rest
is read and thrown away before closing, so that the client reads the answer rather than a reset connection."""
LOG_EVERY = 10.0
"""Seconds between two log lines about refused, cut or vanished clients (the first is logged at once)."""
_CONTENT_LENGTH = re.compile(r"[0-9]{1,10}")


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
                            timeout=self.options.suite_timeout)  # fmt: skip
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
        from canary_checks.gates import GateResult, evaluate
        from canary_checks.monitor import nearest_stage  # SciPy: imported only when a call needs it
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
        return WebhookHTTPServer(self)


def _paths() -> list[str]:
    return [f"POST /flagger/{h}" for h in HOOKS]


# ---- the HTTP server ---------------------------------------------------------------------------------------------


class _Refusal(Exception):
    """A request answered before it was read in full (its body, if any, is never read)."""

    def __init__(self, status: int, error: str, fix: str = "") -> None:
        super().__init__(error)
        self.reply = Reply(status, {"error": error, **({"fix": fix} if fix else {})})


@dataclass
class _Connection:
    peer: str
    opened: float
    """The loop's clock when it connected."""
    state: str = "reading"
    """reading (its request: what the connection cap may cut), waiting (for its suite), or answered (closing)."""
    evicted: bool = False


@dataclass(frozen=True)
class _Request:
    method: str
    target: str
    headers: dict[str, list[str]]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str:
        return self.headers.get(name, [""])[0]


class _Tally:
    """Refused, cut and vanished clients: the first is logged at once, the rest as one line per LOG_EVERY."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._open = False

    def note(self, what: str, detail: str) -> None:
        log.debug("%s: %s", what, detail)
        if self._open:
            self._counts[what] += 1
            return
        log.warning("%s: %s", what, detail)
        self._open = True
        asyncio.get_running_loop().call_later(LOG_EVERY, self.flush)

    def flush(self) -> None:
        if not self._counts:
            self._open = False
            return
        counts = ", ".join(f"{n} {what}" for what, n in self._counts.most_common())
        log.warning("in the last %g s: %s", LOG_EVERY, counts)
        self._counts.clear()
        with contextlib.suppress(RuntimeError):  # the loop is closing
            asyncio.get_running_loop().call_later(LOG_EVERY, self.flush)


class WebhookHTTPServer:
    """The webhooks over HTTP/1.1, one request per connection. Same calls as :class:`socketserver.TCPServer`:
    ``server_address``, ``serve_forever()``, ``shutdown()`` from another thread, ``server_close()``."""

    def __init__(self, webhook: WebhookServer) -> None:
        options = webhook.options
        family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
        self.socket = socket.create_server((options.host, options.port), family=family, backlog=128)
        self.server_address: tuple[str, int] = self.socket.getsockname()[:2]
        self.webhook = webhook
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._lingering = 0
        self._tally = _Tally()
        self._reports: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._closing = False
        self._stopped = threading.Event()
        self._stopped.set()
        threading.Thread(target=self._report_worker, name="serve-reports", daemon=True).start()
        self._reports.put(webhook.prune)  # what an earlier run of the server left

    # ---- the socketserver-like calls ----

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until :meth:`shutdown`. (``poll_interval``: accepted for socketserver's signature, unused.)"""
        with self._guard:
            if self._closing:
                return
            self._stopped.clear()
        try:
            asyncio.run(self._serve())
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned. Calls still running are abandoned."""
        with self._guard:
            self._closing = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        self._stopped.wait()

    def server_close(self) -> None:
        self.socket.close()
        self._reports.put(None)

    # ---- the loop ----

    async def _serve(self) -> None:
        with self._guard:
            if self._closing:
                return
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._connected, sock=self.socket, limit=MAX_HEAD)
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            self._tally.flush()

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else "?"
        connection = _Connection(peer, loop.time())
        cap = self.webhook.options.max_connections
        try:
            if len(self._connections) >= cap and not self._evict(loop.time()):
                self._tally.note("refused at the connection cap (503)",
                                 f"{peer}: {cap} connections are open (--max-connections)")  # fmt: skip
                error = f"{cap} connections are open, the most at once (--max-connections)"
                await self._answer(connection, reader, writer, Reply(503, {"error": error, "retry_after": 1}),
                                   linger=True)  # fmt: skip
                return
            self._connections[task] = connection
            await self._exchange(connection, reader, writer)
        except asyncio.CancelledError:
            if not connection.evicted:
                raise
            task.uncancel()
            if connection.state == "reading":
                error = (f"the request was still incomplete after {loop.time() - connection.opened:.1f} s, and its "
                         "connection was needed (--max-connections)")  # fmt: skip
                await self._answer(connection, reader, writer, Reply(408, {"error": error}))
        except Exception:  # a defect here: the one traceback worth having
            log.exception("serve: the request from %s failed", peer)
            if connection.state != "answered":
                await self._answer(connection, reader, writer, Reply(500, {"error": "internal error; see the log"}))
        finally:
            self._connections.pop(task, None)
            writer.close()

    def _evict(self, now: float) -> bool:
        """Make room at the connection cap: close a connection already answered (lingering), else the one that has
        been sending its request the longest. False: every connection waits for its suite.

        (With a grace period before a sender may be cut, clients reconnecting as fast as they are cut keep every
        connection young, and the probe gets 503: a quarter of the time with 300 of them and a 1 s grace.)"""
        answered = [t for t, c in self._connections.items() if c.state == "answered"]
        slow = [(c.opened, t) for t, c in self._connections.items() if c.state == "reading"]
        if not answered and not slow:
            return False
        task = answered[0] if answered else min(slow, key=lambda item: item[0])[1]
        connection = self._connections.pop(task)
        connection.evicted = True
        task.cancel()
        if connection.state == "reading":
            self._tally.note("cut at the connection cap (408)", f"{connection.peer} had been sending its request "
                             f"for {now - connection.opened:.1f} s; its connection was needed")  # fmt: skip
        return True

    async def _exchange(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read one request within the deadlines, answer it, close."""
        options, peer = self.webhook.options, connection.peer
        try:
            async with asyncio.timeout_at(connection.opened + options.header_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self._tally.note("cut at the header deadline (408)", f"{peer}: no complete request headers within "
                             f"{options.header_timeout:g} s of connecting (--header-timeout)")  # fmt: skip
            error = f"no complete request headers within {options.header_timeout:g} s"
            await self._answer(connection, reader, writer, Reply(408, {"error": error}), linger=True)
            return
        except asyncio.LimitOverrunError:
            self._tally.note("refused: headers too large (431)", f"{peer}: over {MAX_HEAD} bytes of headers")
            error = f"the request line and headers are over {MAX_HEAD} bytes"
            await self._answer(connection, reader, writer, Reply(431, {"error": error}), linger=True)
            return
        except (asyncio.IncompleteReadError, ConnectionError) as e:
            if not isinstance(e, asyncio.IncompleteReadError) or e.partial:
                self._tally.note("went away mid-request", f"{peer} closed the connection before its headers ended")
            return
        try:
            request = _parse(head)
            answer = await self._respond(connection, request, reader, writer)
        except _Refusal as refusal:
            self._tally.note(f"refused ({refusal.reply.status})", f"{peer}: {refusal}")
            await self._answer(connection, reader, writer, refusal.reply, linger=True)
            return
        if answer is None:
            return
        # a GET's body, if it had one, was not read
        unread = request.method != "POST" and {"content-length", "transfer-encoding"} & request.headers.keys()
        await self._answer(connection, reader, writer, answer, request=request, linger=bool(unread))
        log.info("%s %s %s → %d in %.1f s", peer, request.method, request.path, answer.status,
                 asyncio.get_running_loop().time() - connection.opened)  # fmt: skip

    async def _respond(self, connection: _Connection, request: _Request, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> Reply | None:  # fmt: skip
        """The answer to one request (None: the client went away); reads its body only once its headers are
        in order."""
        server, options = self.webhook, self.webhook.options
        if request.method == "GET":
            if request.path in ("/healthz", "/readyz"):
                return Reply(200, {"status": "ok"})
            return Reply(404, {"error": f"no GET {request.path}", "hooks": _paths()})
        if request.method != "POST":
            raise _Refusal(405, f"no {request.method} here; GET /healthz or POST /flagger/<hook>")
        length = _content_length(request)
        if "authorization" in request.headers and not server.authorized(request.header("authorization"), None):
            raise _Refusal(401, "missing or wrong token", "send Authorization: Bearer <token> or metadata.token")
        if request.header("expect").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            async with asyncio.timeout_at(connection.opened + options.request_timeout):
                raw = await reader.readexactly(length)
        except TimeoutError:
            raise _Refusal(408, f"the body ({length} bytes) did not arrive within {options.request_timeout:g} s "
                                "of connecting (--request-timeout)") from None  # fmt: skip
        except (asyncio.IncompleteReadError, ConnectionError):
            self._tally.note("went away mid-request", f"{connection.peer} closed the connection before its body ended")
            return None
        connection.state = "waiting"
        try:
            payload = json.loads(raw or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            if not server.authorized(request.header("authorization"), None):
                return Reply(401, {"error": "missing or wrong token"})
            return Reply(400, {"error": f"the body is not Flagger's JSON payload: {e}"})
        if not server.authorized(request.header("authorization"), payload):
            fix = "send Authorization: Bearer <token> or metadata.token"
            return Reply(401, {"error": "missing or wrong token", "fix": fix})
        hook = request.path.removeprefix("/flagger/")
        if not request.path.startswith("/flagger/") or hook not in HOOKS:
            return Reply(404, {"error": f"no webhook at {request.path}", "hooks": _paths()})
        call = server.admit(hook, payload)
        if isinstance(call, Reply):
            return call
        return await self._in_thread(lambda: server.run(call), f"{hook} {call.service}")

    async def _in_thread(self, work: Callable[[], Reply], name: str) -> Reply:
        """``work`` on a thread of its own (admission bounds these to --max-runs), awaited on the loop."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Reply] = loop.create_future()

        def settle(result: Reply | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                assert result is not None
                done.set_result(result)

        def run() -> None:
            try:
                result, error = work(), None
            except BaseException as e:  # handed to the loop, which logs it
                result, error = None, e
            with contextlib.suppress(RuntimeError):  # the loop has ended (shutdown): nobody waits for it
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name=f"serve {name}", daemon=True).start()
        return await done

    async def _answer(self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      answer: Reply, *, request: _Request | None = None, linger: bool = False) -> None:  # fmt: skip
        """Send ``answer`` and close; ``linger``: the request may not have been read in full, so read and throw
        away what follows for a moment (LINGER), lest closing with unread data reset the connection before the
        client has read the answer. The answer's ``after`` work runs whether the client takes the answer or not."""
        data = (json.dumps(answer.body, sort_keys=True) + "\n").encode()
        headers = [f"HTTP/1.1 {answer.status} {http.HTTPStatus(answer.status).phrase}",
                   "Content-Type: application/json", f"Content-Length: {len(data)}", "Connection: close",
                   "Server: canary-checks"]  # fmt: skip
        if answer.status == 401:
            headers.append('WWW-Authenticate: Bearer realm="canary-checks"')
        if answer.status in (429, 503):
            headers.append(f"Retry-After: {answer.body.get('retry_after', 5)}")
        if answer.status == 405:
            headers.append("Allow: GET, POST")
        if answer.after is not None:
            self._reports.put(answer.after)
        connection.state = "answered"
        # a client that closed its side while its call ran: the first write still succeeds, the reset comes after
        gone = reader.at_eof() or reader.exception() is not None or writer.transport.is_closing()
        how = "closed the connection"
        try:
            writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1") + data)
            async with asyncio.timeout(WRITE_TIMEOUT):
                await writer.drain()
            if linger and self._lingering < self.webhook.options.max_connections:
                self._lingering += 1
                try:
                    await self._linger(reader, writer)
                finally:
                    self._lingering -= 1
        except (ConnectionError, TimeoutError) as e:
            gone = True
            how = "did not take it" if isinstance(e, TimeoutError) else f"went away ({e.__class__.__name__})"
        if not gone:
            return
        what = f"{request.method} {request.path}" if request is not None else "its request"
        line = f"{connection.peer} {how} before the answer {answer.status} to {what}"
        if answer.after is not None:  # a suite ran and its answer was lost: Flagger gave up first
            log.warning("%s; if it is Flagger, give the Canary's webhook a timeout over --suite-timeout", line)
        else:
            self._tally.note("gone before the answer", line)

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seconds, most = LINGER
        if writer.can_write_eof():
            writer.write_eof()
        thrown = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(seconds):
                while thrown < most and (chunk := await reader.read(64 * 1024)):
                    thrown += len(chunk)

    # ---- the report worker ----

    def _report_worker(self) -> None:
        """Reports and pruning, one at a time, after the answers (a daemon: abandoned at exit, like a call)."""
        while (work := self._reports.get()) is not None:
            try:
                work()
            except Exception:
                log.exception("serve: a report failed")


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


def _parse(head: bytes) -> _Request:
    """The request line and headers (``head`` ends with the blank line)."""
    lines = head.lstrip(b"\r\n").decode("latin-1").split("\r\n")[:-2]
    parts = lines[0].split(" ") if lines else []
    if len(parts) != 3 or parts[2] not in ("HTTP/1.0", "HTTP/1.1") or not parts[1].startswith("/"):
        shown = lines[0][:100] if lines else ""
        raise _Refusal(400, f"not an HTTP/1.1 request line: {shown!r}", "send e.g. 'POST /flagger/rollout HTTP/1.1'")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip(" \t"):
            raise _Refusal(400, f"malformed header line: {line[:100]!r}", "send 'Name: value' lines")
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    return _Request(parts[0], parts[1], headers)


def _content_length(request: _Request) -> int:
    """The body's length from a POST's headers, refused before any of it is read: missing (411), malformed or
    negative (400), over MAX_BODY (413); a chunked body (Transfer-Encoding) is not read (411)."""
    if "transfer-encoding" in request.headers:
        if "content-length" in request.headers:
            raise _Refusal(400, "both Transfer-Encoding and Content-Length: which one frames the body is ambiguous")
        raise _Refusal(411, "a body sent with Transfer-Encoding is not read", "send it with a Content-Length")
    values = request.headers.get("content-length")
    if not values:
        raise _Refusal(411, "POST needs a Content-Length (the body's size in bytes)", "send Content-Length")
    if len(set(values)) > 1:
        raise _Refusal(400, f"conflicting Content-Length headers: {', '.join(values)}")
    if not _CONTENT_LENGTH.fullmatch(values[0]):
        raise _Refusal(400, f"Content-Length must be a whole number of bytes from 0 to {MAX_BODY}; got "
                            f"{values[0][:40]!r}")  # fmt: skip
    length = int(values[0])
    if length > MAX_BODY:
        raise _Refusal(413, f"a body of {length} bytes is over the {MAX_BODY}-byte limit")
    return length
