"""The sandbox's node agent: what kubelet, kube-state-metrics and cAdvisor do for the demo pods.

``python -m canary_checks.sandbox.node --state-dir DIR`` reads ``DIR/node.json`` (the pods to run) and:

- runs each pod as a real process, probes its readiness, restarts it when it exits — with a growing back-off during
  which the container waits in ``CrashLoopBackOff`` — and kills it when its memory passes its limit (``OOMKilled``);
- measures each pod from outside, as cAdvisor does (CPU seconds and resident memory from ``/proc``);
- serves on ``/metrics`` the kube-state-metrics and cAdvisor series the gates read, with their real names and labels;
- takes injected faults on ``POST /faults`` ({"workload": ..., "faults": {...}}), keeps them in ``DIR/faults.json`` so
  a restarted pod keeps its fault, and hands them to the running pod;
- scales a workload on ``POST /scale`` ({"workload": ..., "replicas": N}): its first N pods run, the others are
  stopped and gone (from ``/pods`` and the series, as a deleted pod is; a pod started again is a new pod).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("canary_checks.sandbox.node")

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
BACKOFF_START = 1.0
"""Seconds before the first restart; doubles up to BACKOFF_MAX (kubelet: 10 s up to 5 min)."""
BACKOFF_MAX = 8.0
BACKOFF_RESET = 10.0
"""A container that ran this long resets its back-off."""


@dataclass
class PodState:
    name: str
    workload: str
    namespace: str
    port: int
    version: str
    cpu_limit: float
    memory_limit: int
    container: str = "app"
    running: bool = True
    """The pod exists: its Deployment's replicas include it (``POST /scale``); otherwise it is stopped."""
    changed: threading.Event = field(default_factory=threading.Event)
    """Set when ``running`` changes, to wake its supervisor."""
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    restarts: int = 0
    waiting_reason: str = ""
    last_terminated_reason: str = ""
    started_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def usage(self) -> tuple[float, int] | None:
        """CPU seconds and resident bytes of the running container, read from /proc; ``None`` if not running."""
        process = self.process
        if process is None or process.poll() is not None:
            return None
        try:
            stat = Path(f"/proc/{process.pid}/stat").read_text()
            statm = Path(f"/proc/{process.pid}/statm").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / _CLK_TCK
        rss = int(statm.split()[1]) * _PAGE
        return cpu, rss


class Node:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        spec = json.loads((state_dir / "node.json").read_text())
        self.namespace: str = spec["namespace"]
        self.pods = [
            PodState(
                name=p["name"],
                workload=p["workload"],
                namespace=spec["namespace"],
                port=p["port"],
                version=p["version"],
                cpu_limit=spec["cpu_limit"],
                memory_limit=spec["memory_limit_bytes"],
                running=p.get("running", True),
            )
            for p in spec["pods"]
        ]
        self.faults_file = state_dir / "faults.json"
        self.faults: dict[str, dict[str, float]] = (
            json.loads(self.faults_file.read_text()) if self.faults_file.exists() else {}
        )
        self.stop = threading.Event()
        self.alerts: list[Any] = []
        """Notifications Alertmanager delivered to this receiver, oldest first (the latest 200)."""

    # ---- pods ----

    def _spawn(self, pod: PodState) -> None:
        env = dict(os.environ, CANARY_FAULTS=json.dumps(self.faults.get(pod.workload, {})))
        cmd = [
            sys.executable,
            "-m",
            "canary_checks.sandbox.demo",
            "--port",
            str(pod.port),
            "--workload",
            pod.workload,
            "--namespace",
            pod.namespace,
            "--pod",
            pod.name,
            "--version",
            pod.version,
        ]
        logfile = open(self.state_dir / f"{pod.name}.log", "ab")  # noqa: SIM115 - the child owns it
        with pod.lock:
            pod.process = subprocess.Popen(cmd, env=env, stdout=logfile, stderr=subprocess.STDOUT)
            pod.started_at = time.monotonic()
            pod.waiting_reason = ""
            pod.ready = False
        logfile.close()

    def _probe(self, pod: PodState) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{pod.port}/readyz", timeout=0.5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def supervise(self, pod: PodState) -> None:
        backoff = BACKOFF_START
        while not self.stop.is_set():
            if not pod.running:  # scaled away: nothing runs until the pod is created again
                pod.changed.wait(0.5)
                pod.changed.clear()
                continue
            self._spawn(pod)
            assert pod.process is not None
            reason = "Error"
            while not self.stop.is_set() and pod.process.poll() is None and pod.running:
                pod.ready = self._probe(pod)
                usage = pod.usage()
                if usage and usage[1] > pod.memory_limit:
                    log.warning("%s: working set %d > limit %d: OOMKilled", pod.name, usage[1], pod.memory_limit)
                    pod.process.kill()
                    pod.process.wait()
                    reason = "OOMKilled"
                    break
                self.stop.wait(0.5)
            if self.stop.is_set():
                return
            if not pod.running:  # deleted by a scale-down: stopped on purpose, and a new pod if it comes back
                self._remove(pod)
                backoff = BACKOFF_START
                continue
            ran = time.monotonic() - pod.started_at
            with pod.lock:
                pod.ready = False
                pod.restarts += 1
                pod.last_terminated_reason = reason
                pod.waiting_reason = "CrashLoopBackOff"
            backoff = BACKOFF_START if ran >= BACKOFF_RESET else backoff
            log.warning("%s exited (%s) after %.1fs; restarting in %.0fs", pod.name, reason, ran, backoff)
            self.stop.wait(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _remove(self, pod: PodState) -> None:
        if pod.process is not None and pod.process.poll() is None:
            pod.process.terminate()
            _reap(pod.process)
        with pod.lock:
            pod.process, pod.ready, pod.restarts = None, False, 0
            pod.waiting_reason = pod.last_terminated_reason = ""

    def scale(self, workload: str, replicas: int) -> None:
        """The first ``replicas`` pods of ``workload`` run; the others are stopped."""
        for i, pod in enumerate(p for p in self.pods if p.workload == workload):
            if pod.running != (i < replicas):
                pod.running = i < replicas
                pod.changed.set()

    def existing(self) -> list[PodState]:
        """The pods that exist now (not scaled away)."""
        return [p for p in self.pods if p.running]

    def set_faults(self, workload: str, faults: dict[str, float]) -> None:
        self.faults[workload] = faults
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.faults, indent=2))
        tmp.replace(self.faults_file)
        for pod in self.pods:
            if pod.workload != workload or pod.process is None or pod.process.poll() is not None:
                continue
            request = urllib.request.Request(
                f"http://127.0.0.1:{pod.port}/-/faults",
                data=json.dumps(faults).encode(),
                headers={"content-type": "application/json"},
                method="POST",
            )
            try:
                urllib.request.urlopen(request, timeout=2).close()
            except OSError as e:  # it gets them from $CANARY_FAULTS at its next start
                log.warning("could not hand faults to %s: %s", pod.name, e)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for pod in self.existing():
            usage = pod.usage()
            out.append(
                {
                    "pod": pod.name,
                    "workload": pod.workload,
                    "port": pod.port,
                    "pid": pod.process.pid if pod.process and pod.process.poll() is None else None,
                    "ready": pod.ready,
                    "restarts": pod.restarts,
                    "waiting": pod.waiting_reason,
                    "last_terminated": pod.last_terminated_reason,
                    "cpu_seconds": usage[0] if usage else None,
                    "memory_bytes": usage[1] if usage else None,
                    "faults": self.faults.get(pod.workload, {}),
                }
            )
        return out

    def shutdown(self) -> None:
        self.stop.set()
        for pod in self.pods:
            if pod.process and pod.process.poll() is None:
                pod.process.terminate()
        for pod in self.pods:
            if pod.process:
                _reap(pod.process)


def _reap(process: subprocess.Popen[bytes]) -> None:
    """Wait for a terminated process (5 s), then kill it."""
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class _Metrics(Collector):
    """kube-state-metrics and cAdvisor series of the node's pods, computed at each scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        ns = self.node.namespace
        ready = GaugeMetricFamily(
            "kube_pod_status_ready", "Pod ready condition.", labels=["namespace", "pod", "condition"]
        )
        restarts = CounterMetricFamily(
            "kube_pod_container_status_restarts", "Container restarts.", labels=["namespace", "pod", "container"]
        )
        waiting = GaugeMetricFamily(
            "kube_pod_container_status_waiting_reason",
            "Why the container is waiting.",
            labels=["namespace", "pod", "container", "reason"],
        )
        terminated = GaugeMetricFamily(
            "kube_pod_container_status_last_terminated_reason",
            "Why the container last terminated.",
            labels=["namespace", "pod", "container", "reason"],
        )
        limits = GaugeMetricFamily(
            "kube_pod_container_resource_limits",
            "Container resource limits.",
            labels=["namespace", "pod", "container", "node", "resource", "unit"],
        )
        replicas = GaugeMetricFamily(
            "kube_deployment_spec_replicas", "Desired replicas.", labels=["namespace", "deployment"]
        )
        replicas_ready = GaugeMetricFamily(
            "kube_deployment_status_replicas_ready", "Ready replicas.", labels=["namespace", "deployment"]
        )
        cpu = CounterMetricFamily(
            "container_cpu_usage_seconds",
            "Cumulative CPU time consumed.",
            labels=["namespace", "pod", "container", "image"],
        )
        memory = GaugeMetricFamily(
            "container_memory_working_set_bytes",
            "Current working set.",
            labels=["namespace", "pod", "container", "image"],
        )
        by_workload: dict[str, list[PodState]] = {p.workload: [] for p in self.node.pods}
        for pod in self.node.existing():
            by_workload.setdefault(pod.workload, []).append(pod)
            with pod.lock:
                is_ready, count, reason, last = pod.ready, pod.restarts, pod.waiting_reason, pod.last_terminated_reason
            for condition, value in (("true", is_ready), ("false", not is_ready), ("unknown", False)):
                ready.add_metric([ns, pod.name, condition], float(value))
            restarts.add_metric([ns, pod.name, pod.container], float(count))
            if reason:
                waiting.add_metric([ns, pod.name, pod.container, reason], 1.0)
            if last:
                terminated.add_metric([ns, pod.name, pod.container, last], 1.0)
            limits.add_metric([ns, pod.name, pod.container, "sandbox", "cpu", "core"], pod.cpu_limit)
            limits.add_metric([ns, pod.name, pod.container, "sandbox", "memory", "byte"], float(pod.memory_limit))
            usage = pod.usage()
            if usage:
                image = f"demo:{pod.version}"
                cpu.add_metric([ns, pod.name, pod.container, image], usage[0])
                memory.add_metric([ns, pod.name, pod.container, image], float(usage[1]))
        for workload, pods in by_workload.items():
            replicas.add_metric([ns, workload], float(len(pods)))
            replicas_ready.add_metric([ns, workload], float(sum(p.ready for p in pods)))
        yield from (ready, restarts, waiting, terminated, limits, replicas, replicas_ready, cpu, memory)


def _handler(node: Node, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path == "/pods":
                self._send(200, json.dumps(node.status()).encode())
            elif self.path == "/faults":
                self._send(200, json.dumps(node.faults).encode())
            elif self.path == "/alerts":
                self._send(200, json.dumps(node.alerts).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            if self.path == "/alerts":  # Alertmanager's webhook receiver: keep what it delivers
                try:
                    payload = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                except ValueError:
                    self._send(400, b'{"error": "expected JSON"}')
                    return
                node.alerts = [*node.alerts[-199:], payload]
                self._send(200, b"{}")
                return
            if self.path == "/scale":
                self._scale()
                return
            if self.path != "/faults":
                self._send(404, b'{"error": "not found"}')
                return
            try:
                data = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                workload = str(data["workload"])
                faults = {str(k): float(v) for k, v in dict(data.get("faults", {})).items()}
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, json.dumps({"error": f"expected {{workload, faults}}: {e}"}).encode())
                return
            if workload not in {p.workload for p in node.pods}:
                self._send(404, json.dumps({"error": f"no workload {workload!r}"}).encode())
                return
            node.set_faults(workload, faults)
            self._send(200, json.dumps(node.faults).encode())

        def _scale(self) -> None:
            try:
                data = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
                workload, replicas = str(data["workload"]), int(data["replicas"])
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, json.dumps({"error": f"expected {{workload, replicas}}: {e}"}).encode())
                return
            slots = sum(p.workload == workload for p in node.pods)
            if not 0 <= replicas <= slots:
                why = f"{workload} has {slots} pods in this sandbox" if slots else f"no workload {workload!r}"
                self._send(400 if slots else 404, json.dumps({"error": f"cannot run {replicas}: {why}"}).encode())
                return
            node.scale(workload, replicas)
            self._send(200, json.dumps(node.status()).encode())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The sandbox node agent (kubelet + kube-state-metrics + cAdvisor).")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = Node(args.state_dir)
    registry = CollectorRegistry()
    registry.register(_Metrics(node))
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _handler(node, registry))

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pod in node.pods:
        threading.Thread(target=node.supervise, args=(pod,), daemon=True, name=pod.name).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        node.shutdown()


if __name__ == "__main__":
    main()
