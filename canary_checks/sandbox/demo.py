"""The sandbox's demo service: one pod of a small HTTP API, exporting what an Istio sidecar and a Linkerd proxy would.

Run by the node agent (``python -m canary_checks.sandbox.demo ...``), one process per pod. It serves:

- ``/api/...``, ``/`` — the service: a small JSON answer, with injected faults applied;
- ``/healthz`` (liveness), ``/readyz`` (readiness);
- ``/metrics`` — ``istio_requests_total`` and ``istio_request_duration_milliseconds`` (``reporter="destination"``),
  and Linkerd's ``response_total`` and ``response_latency_ms`` (``direction="inbound"``), labelled as a mesh would;
- ``POST /-/faults`` — replace the injected faults (JSON: errors, latency_ms, crash_after, memory_mb_per_s,
  cpu_cores); the node agent also hands them over at start in ``$CANARY_FAULTS``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import generate_latest

__all__ = ["Faults", "build_app", "main"]

ISTIO_BUCKETS_MS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000)
LINKERD_BUCKETS_MS = (1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000)

# The service's own latency, healthy: most requests take a few milliseconds; every 33rd takes the slow path
# (think cache miss and a database read). Healthy p95 is ~20 ms and p99 ~0.4 s: inside the 500 ms / 1000 ms gates,
# close enough to the p99 limit that a 600 ms regression crosses it, as in a real service.
FAST_MEDIAN_MS = 4.0
FAST_SIGMA = 0.5
SLOW_EVERY = 33
"""A pod's every 33rd request takes the slow path (3 %), evenly spread rather than drawn at random: a window of a few
hundred requests drawn at random holds 5 % slow ones about one look in a hundred (Binomial(500, 0.03) >= 25), and
its p95 falls in the slow path (read ~260 ms through the histogram's 250/500 ms buckets, against ~20 ms) — a healthy
canary read ten times slower than stable; below 1 %, its p99 drops to ~20 ms and the 600 ms regression no longer
crosses the p99 gate."""
SLOW_RANGE_MS = (400.0, 490.0)
_requests = itertools.count(1)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Faults:
    """What is wrong with this pod on purpose."""

    errors: float = 0.0
    """Percent of API requests answered 500."""
    latency_ms: float = 0.0
    """Milliseconds added to every API request."""
    crash_after: float = 0.0
    """Seconds after start at which the process exits with status 1 (0: never)."""
    memory_mb_per_s: float = 0.0
    """MiB of memory allocated and kept every second."""
    cpu_cores: float = 0.0
    """Cores kept busy by a spinning thread."""

    @classmethod
    def from_mapping(cls, data: MutableMapping[str, Any] | None) -> Faults:
        known = {k: float(v) for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Pod:
    workload: str
    namespace: str
    pod: str
    version: str
    faults: Faults
    started: float = field(default_factory=time.monotonic)
    hog: list[bytearray] = field(default_factory=list)


def service_time_ms() -> float:
    """How long the healthy service works on one request, milliseconds."""
    if next(_requests) % SLOW_EVERY == 0:
        return random.uniform(*SLOW_RANGE_MS)
    return random.lognormvariate(math.log(FAST_MEDIAN_MS), FAST_SIGMA)


def build_app(pod: _Pod) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI application of one pod."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    observe = _mesh_metrics(pod, registry)

    async def respond(send: Send, code: int, body: bytes, content_type: bytes = b"application/json") -> None:
        await _respond(pod, send, code, body, content_type)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/metrics":
            await respond(send, 200, generate_latest(registry), b"text/plain; version=0.0.4")
            return
        if path in ("/healthz", "/readyz"):
            await respond(send, 200, b'{"status": "ok"}')
            return
        if path == "/-/faults":
            if scope["method"] == "POST":
                try:
                    pod.faults = Faults.from_mapping(json.loads(await _read_body(receive) or b"{}"))
                except (ValueError, TypeError) as e:
                    await respond(send, 400, json.dumps({"error": str(e)}).encode())
                    return
            await respond(send, 200, json.dumps(asdict(pod.faults)).encode())
            return
        start = time.perf_counter()
        faults = pod.faults
        await asyncio.sleep((service_time_ms() + max(faults.latency_ms, 0.0)) / 1000.0)
        if faults.errors > 0 and random.random() * 100.0 < faults.errors:
            code, body = 500, b'{"error": "injected fault"}'
        else:
            code = 200
            body = json.dumps({"service": pod.workload, "version": pod.version, "pod": pod.pod, "path": path}).encode()
        await respond(send, code, body)
        observe(code, (time.perf_counter() - start) * 1000.0)

    return app


def _mesh_metrics(pod: _Pod, registry: CollectorRegistry) -> Callable[[int, float], None]:
    """The metrics Istio's and Linkerd's proxies would export for ``pod``, in ``registry``; the function that
    observes one answered request (its code and milliseconds)."""
    istio_labels = (
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "destination_workload",
        "destination_workload_namespace",
        "destination_service",
        "destination_version",
        "request_protocol",
        "response_code",
    )
    istio_total = Counter(
        "istio_requests", "Requests seen by the destination sidecar.", istio_labels, registry=registry
    )
    istio_duration = Histogram(
        "istio_request_duration_milliseconds",
        "Request duration seen by the destination sidecar.",
        istio_labels,
        buckets=ISTIO_BUCKETS_MS,
        registry=registry,
    )
    linkerd_labels = ("direction", "namespace", "deployment", "pod", "status_code", "classification")
    linkerd_total = Counter("response", "Responses seen by the Linkerd proxy.", linkerd_labels, registry=registry)
    linkerd_latency = Histogram(
        "response_latency_ms",
        "Response latency seen by the Linkerd proxy.",
        ("direction", "namespace", "deployment", "pod", "status_code"),
        buckets=LINKERD_BUCKETS_MS,
        registry=registry,
    )
    service = f"{pod.workload.rsplit('-', 1)[0]}.{pod.namespace}.svc.cluster.local"

    def observe(code: int, elapsed_ms: float) -> None:
        status = str(code)
        istio = istio_total.labels(
            "destination", "loadgen", pod.namespace, pod.workload, pod.namespace, service, pod.version, "http", status
        )
        istio.inc()
        istio_duration.labels(
            "destination", "loadgen", pod.namespace, pod.workload, pod.namespace, service, pod.version, "http", status
        ).observe(elapsed_ms)
        classification = "failure" if code >= 500 else "success"
        linkerd_total.labels("inbound", pod.namespace, pod.workload, pod.pod, status, classification).inc()
        linkerd_latency.labels("inbound", pod.namespace, pod.workload, pod.pod, status).observe(elapsed_ms)

    return observe


async def _respond(pod: _Pod, send: Send, code: int, body: bytes, content_type: bytes) -> None:
    """One whole answer, marked with the pod that served it."""
    await send(
        {
            "type": "http.response.start",
            "status": code,
            "headers": [(b"content-type", content_type), (b"x-served-by", pod.pod.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _background_faults(pod: _Pod) -> None:
    """Crash, memory growth and CPU burn run beside the server, reading the current faults each tick."""

    def crash_and_grow() -> None:
        while True:
            time.sleep(0.25)
            faults = pod.faults
            if faults.crash_after > 0 and time.monotonic() - pod.started >= faults.crash_after:
                os._exit(1)
            if faults.memory_mb_per_s > 0:
                pod.hog.append(bytearray(b"\x01") * int(faults.memory_mb_per_s * 2**20 / 4))
            elif pod.hog:
                pod.hog.clear()

    def burn() -> None:
        period = 0.1
        while True:
            share = min(max(pod.faults.cpu_cores, 0.0), 1.0)
            if share <= 0:
                time.sleep(0.25)
                continue
            end = time.perf_counter() + period * share
            while time.perf_counter() < end:
                pass
            time.sleep(period * (1 - share))

    threading.Thread(target=crash_and_grow, daemon=True, name="faults").start()
    threading.Thread(target=burn, daemon=True, name="cpu-burn").start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One pod of the sandbox demo service.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on (0.0.0.0 in a container).")
    parser.add_argument("--workload", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--version", default="v1")
    args = parser.parse_args(argv)
    faults = Faults.from_mapping(json.loads(os.environ.get("CANARY_FAULTS") or "{}"))
    pod = _Pod(args.workload, args.namespace, args.pod, args.version, faults)
    _background_faults(pod)

    import uvicorn

    uvicorn.run(
        build_app(pod),
        host=args.host,
        port=args.port,
        http="httptools",
        loop="asyncio",
        lifespan="on",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )


if __name__ == "__main__":
    main()
