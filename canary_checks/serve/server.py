"""The webhooks over HTTP/1.1: one asyncio loop reads every request within its limits (head, body, deadlines,
the connection cap), refuses what it must before reading a body, hands a call to a thread of its own and writes
the answer; the reports are written after the answer, on a worker.

Seam: knows sockets and HTTP, not suites; each call is :meth:`WebhookServer.handle`'s (``admit`` then ``run``)."""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import queue
import re
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from canary_checks.serve.webhooks import HOOKS, Reply, WebhookServer, _paths

log = logging.getLogger(__name__)


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
REPORTS_GRACE = 60.0
"""Seconds closing waits for the reports of calls already answered (each reads Prometheus with its own timeout)."""
_CONTENT_LENGTH = re.compile(r"[0-9]{1,10}")


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
        self._writing = 0
        self._report_thread = threading.Thread(target=self._report_worker, name="serve-reports", daemon=True)
        self._report_thread.start()
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
        """Stop :meth:`serve_forever` and wait until it has returned. Calls still running are abandoned, and the
        suites they run stopped (``WebhookServer.stopper``)."""
        with self._guard:
            self._closing = True
            loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                loop.call_soon_threadsafe(stop.set)
        self._stopped.wait()

    def server_close(self) -> None:
        """Close the socket, then finish the reports of the calls already answered (at most REPORTS_GRACE): a
        report is the record of an answer Flagger acted on, and a thread left drawing one as the interpreter ends
        can abort it."""
        self.socket.close()
        self._reports.put(None)
        self._report_thread.join(REPORTS_GRACE)
        if self._report_thread.is_alive():
            log.warning("serve: stopped with a report unfinished after %g s", REPORTS_GRACE)

    def pending_reports(self) -> int:
        """Reports not finished yet, the one being written included (for the progress line at shutdown)."""
        return self._reports.qsize() + self._writing

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
            calls = list(self._connections)
            for task in calls:
                task.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            # their suites too, and any about to start: nobody will read them, and the exit would wait for each
            if stopped := self.webhook.stopper.stop():
                log.warning("serve: stopped %d suite(s) still running (their calls end unanswered; Flagger asks "
                            "again at its next interval)", stopped)  # fmt: skip
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
            if self._closing:  # shutdown: the call is abandoned (returning, as Python 3.11's streams log a cancel)
                return
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
        """Reports and pruning, one at a time, after the answers; :meth:`server_close` waits for those queued."""
        while (work := self._reports.get()) is not None:
            self._writing = 1
            try:
                work()
            except Exception:
                log.exception("serve: a report failed")
            finally:
                self._writing = 0


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
