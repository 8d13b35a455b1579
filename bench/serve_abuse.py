"""What abusive clients cost `canary-checks serve`: its memory and threads, and whether the probe still answers.

    PYTHONPATH=. .venv/bin/python bench/serve_abuse.py [--slow-clients 300] [--slow-seconds 45] [--json]

Starts `canary-checks serve` (no sandbox, no Prometheus needed) and runs, one after the other:
- body: `POST /flagger/rollout` with `Content-Length: -1`, no token, and a 200 MiB body sent as fast as the server
  takes it (issue 13: the old server read it all before answering 401);
- slow: --slow-clients connections each sending one byte of its headers every 20 s, reconnecting when cut (a
  persistent slow-loris), for --slow-seconds, while `GET /healthz` is asked once a second.
It samples the server's resident memory (RSS) and threads every 50 ms, and reports the baseline and the peak of each
probe, what the body client got and how much of its body the server took, how long the slow clients were held, and
the probe's answers. --code DIR serves another checkout's canary_checks (to compare with an older version).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]
MiB = 2**20


class Sampler:
    """The server's RSS (MiB) and thread count, every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        with contextlib.suppress(psutil.Error):
            rss, threads = self.process.memory_info().rss / MiB, self.process.num_threads()
            self.samples.append((time.monotonic(), rss, threads))

    def peak(self, since: float) -> tuple[float, int]:
        """The highest RSS and thread count sampled from ``since`` until now (sampled now too)."""
        self.sample()
        window = [(rss, threads) for t, rss, threads in self.samples if t >= since]
        return max(r for r, _ in window), max(n for _, n in window)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def healthz(url: str) -> tuple[int, float]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError:
        status = 0  # no answer
    return status, time.monotonic() - start


def body_probe(port: int) -> dict[str, Any]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    start = time.monotonic()
    sock.sendall(b"POST /flagger/rollout HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    total, sent = 200 * MiB, 0
    answered: dict[str, Any] = {}

    def read() -> None:
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
        answered["status_line"] = data.split(b"\r\n", 1)[0].decode("latin-1")
        answered["seconds"] = round(time.monotonic() - start, 3)

    reader = threading.Thread(target=read)
    reader.start()
    chunk = b"x" * (1 * MiB)
    with contextlib.suppress(OSError):
        while sent < total:
            sock.sendall(chunk)
            sent += len(chunk)
        sock.shutdown(socket.SHUT_WR)  # the end of the body, for a server that reads to the end
    reader.join(timeout=120)
    sock.close()
    return {**answered, "body_bytes_taken_by_server": sent, "body_bytes_offered": total}


def slow_probe(port: int, url: str, clients: int, seconds: float) -> dict[str, Any]:
    """Slow-loris clients that reconnect when cut; healthz once a second meanwhile."""
    head = b"POST /flagger/rollout HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000
    open_: dict[socket.socket, tuple[float, int]] = {}  # socket → (connected at, bytes sent)
    held: list[float] = []
    outcomes: Counter[str] = Counter()
    probes: list[tuple[int, float]] = []

    def connect() -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            outcomes["connect failed"] += 1
            return
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.send(head[:1])
        open_[sock] = (time.monotonic(), 1)

    for _ in range(clients):
        connect()
    end = time.monotonic() + seconds
    next_byte = time.monotonic() + 20
    next_probe = time.monotonic()
    while time.monotonic() < end:
        readable, _, _ = select.select(list(open_), [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            since, _ = open_.pop(sock)
            held.append(time.monotonic() - since)
            outcomes[data.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")[2] or "closed"] += 1
            sock.close()
            connect()  # the attack goes on
        if time.monotonic() >= next_byte:
            for sock, (since, n) in list(open_.items()):
                with contextlib.suppress(OSError):
                    sock.send(head[n : n + 1])
                    open_[sock] = (since, n + 1)
            next_byte += 20
        if time.monotonic() >= next_probe:
            probes.append(healthz(url))
            next_probe += 1.0
    for sock in open_:
        sock.close()
    statuses = Counter(str(s) for s, _ in probes)
    return {
        "clients": clients,
        "seconds": seconds,
        "answers_to_slow_clients": dict(outcomes),
        "held_seconds_median": round(statistics.median(held), 2) if held else None,
        "held_seconds_max": round(max(held), 2) if held else None,
        "still_open_at_end": len(open_),
        "healthz_statuses": dict(statuses),
        "healthz_seconds_max": round(max(t for _, t in probes), 3) if probes else None,
    }


@contextlib.contextmanager
def serving(code: Path, root: Path, extra: list[str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = root / "canary.yaml"
    config.write_text("service: auth\nnamespace: orion\nprometheus: {url: 'http://127.0.0.1:9'}\n")
    env = {**os.environ, "PYTHONPATH": str(code), "CANARY_WEBHOOK_TOKEN": "bench-token"}
    server = subprocess.Popen(
        [sys.executable, "-m", "canary_checks", "--canary-config", str(config), "serve", "--port", str(port),
         "--reports", str(root / "reports"), *extra],
        env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while healthz(f"http://127.0.0.1:{port}")[0] != 200:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {server.communicate()[1]}")
            time.sleep(0.1)
        yield server, port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-clients", type=int, default=300)
    parser.add_argument("--slow-seconds", type=float, default=45.0)
    parser.add_argument("--code", type=Path, default=REPO, help="checkout whose canary_checks is served")
    parser.add_argument("--serve-args", default="", help="more arguments for canary-checks serve")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, serving(args.code, Path(tmp), args.serve_args.split()) as (server, port):
        sampler = Sampler(server.pid)
        time.sleep(1.0)
        baseline = statistics.median(rss for _, rss, _ in sampler.samples)
        threads = sampler.samples[-1][2]
        start = time.monotonic()
        body = body_probe(port)
        body["rss_peak_mib"], body["threads_peak"] = sampler.peak(start)
        time.sleep(2.0)
        start = time.monotonic()
        slow = slow_probe(port, f"http://127.0.0.1:{port}", args.slow_clients, args.slow_seconds)
        slow["rss_peak_mib"], slow["threads_peak"] = sampler.peak(start)
        sampler.stop()
    result = {"code": str(args.code), "rss_baseline_mib": round(baseline, 1), "threads_baseline": threads,
              "body": body, "slow": slow}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"serve ({args.code}): baseline RSS {baseline:.0f} MiB, {threads} threads")
    print(f"body probe: {body.get('status_line')} after {body.get('seconds')} s; the server took "
          f"{body['body_bytes_taken_by_server'] / MiB:.0f} of {body['body_bytes_offered'] / MiB:.0f} MiB; "
          f"peak RSS {body['rss_peak_mib']:.0f} MiB, {body['threads_peak']} threads")  # fmt: skip
    print(f"slow probe: {slow['clients']} slow clients for {slow['seconds']:g} s: answers "
          f"{slow['answers_to_slow_clients']}, held median {slow['held_seconds_median']} s, max "
          f"{slow['held_seconds_max']} s; healthz {slow['healthz_statuses']} "
          f"(slowest {slow['healthz_seconds_max']} s); peak RSS {slow['rss_peak_mib']:.0f} MiB, "
          f"{slow['threads_peak']} threads")  # fmt: skip


if __name__ == "__main__":
    main()
