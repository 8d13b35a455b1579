"""The local sandbox: the whole canary loop on real parts, all on 127.0.0.1, in a state directory it owns.

- a real Prometheus (Debian package ``prometheus``) scraping everything every second;
- a real HAProxy (Debian package ``haproxy``) in front of the service: weighted split between stable and canary,
  changed through its runtime API; ``x-canary: true`` always goes to the canary;
- the node agent (:mod:`canary_checks.sandbox.node`) running one stable and one canary pod of the demo service
  (:mod:`canary_checks.sandbox.demo`), exporting kube-state-metrics and cAdvisor series;
- Locust, headless, sending a steady request rate through HAProxy.

``Sandbox.down()`` stops only what this sandbox started (checked against each process' command line) and deletes
nothing outside its state directory.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from canary_checks.config import CanaryConfig, Mesh, parse_duration
from canary_checks.errors import MissingBinary, PortInUse, SandboxError
from canary_checks.faults import FAULT_KINDS
from canary_checks.manifests import render_alerts
from canary_checks.record import RecordConflict, version_of
from canary_checks.traffic import HAProxyRouter

__all__ = ["FAULT_KINDS", "LOCUSTFILE", "SHAPES", "Sandbox", "SandboxPlatform", "free_port_settings", "pod_name"]

log = logging.getLogger(__name__)
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
"""The sandbox's traffic: the demo service's clients (shipped in the package; --locustfile replaces it)."""
SHAPES = Path(__file__).with_name("shapes.py")
"""Load shapes per rollout stage, to use beside the locustfile."""

COMPONENTS = ("node", "haproxy", "alertmanager", "prometheus", "locust")
PER_USER_RPS = 1.0
"""Each Locust user sends one request a second: many users, each mostly idle, is close to open-loop traffic, so a
slow canary does not get fewer requests than its share."""

_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_name(workload: str, version: str, salt: str = "") -> str:
    """A Deployment pod name: ``<workload>-<replicaset hash>-<suffix>``, stable for the same inputs."""
    digest = hashlib.sha256(f"{workload}/{version}/{salt}".encode()).digest()
    chars = [_K8S_ALPHABET[b % len(_K8S_ALPHABET)] for b in digest]
    return f"{workload}-{''.join(chars[:10])}-{''.join(chars[10:15])}"


def free_port_settings(state_dir: Path, **settings: Any) -> dict[str, Any]:
    """A ``sandbox:`` section on ports the OS says are free now, for a second sandbox beside the default one
    (tests, benchmarks)."""
    ports: set[int] = set()
    names = ("prometheus_port", "router_port", "router_admin_port", "stable_port", "canary_port", "node_port",
             "alertmanager_port")  # fmt: skip
    while len(ports) < len(names):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.add(int(sock.getsockname()[1]))
    return {"state_dir": str(state_dir), **dict(zip(names, sorted(ports), strict=True)), **settings}


def sandbox_rules(groups: list[dict[str, Any]], interval: str) -> list[dict[str, Any]]:
    """The cluster's recording and alerting rules, made quick for the sandbox: evaluated every ``interval``, their
    look-back windows a tenth as long (at least 30 s: [5m] becomes [30s]) and their ``for`` a tenth (at least 5 s), so a
    fault fires its alert within a minute and the alert resolves within a minute of the rollback. Names stay (the
    gates read canary:request_rate:5m)."""

    def window(match: re.Match[str]) -> str:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
        return f"[{max(30, seconds // 10)}s]"

    def tenth(duration: str) -> str:
        seconds = parse_duration(duration)
        return f"{max(5, round(seconds / 10))}s"

    out = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = {**rule, "expr": re.sub(r"\[(\d+)([smh])\]", window, rule["expr"])}
            if "for" in rule:
                rule["for"] = tenth(rule["for"])
            rules.append(rule)
        out.append({**group, "interval": interval, "rules": rules})
    return out


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(200 <= response.status < 300)
    except (OSError, urllib.error.URLError):
        return False


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Sandbox:
    """One sandbox, described by the ``sandbox`` section (and service/namespace) of a :class:`CanaryConfig`."""

    config: CanaryConfig
    locustfile: Path | None = None
    progress: Callable[[str], None] = lambda message: None

    @property
    def settings(self) -> Any:
        return self.config.sandbox

    @property
    def state_dir(self) -> Path:
        return Path(self.settings.state_dir).resolve()

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def router(self) -> HAProxyRouter:
        return HAProxyRouter(self.state_dir / "haproxy.sock")

    @property
    def service_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.router_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.alertmanager_port}"

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts Alertmanager holds as active now (firing, not silenced), from its API."""
        try:
            with urllib.request.urlopen(f"{self.alertmanager_url}/api/v2/alerts?active=true", timeout=3) as r:
                alerts: list[dict[str, Any]] = json.loads(r.read())
        except (OSError, ValueError) as e:
            raise SandboxError(f"Alertmanager at {self.alertmanager_url} did not answer: {e}") from e
        return alerts

    def received_alerts(self) -> list[dict[str, Any]]:
        """What Alertmanager has delivered to the sandbox's receiver (webhook payloads, oldest first)."""
        data: list[dict[str, Any]] = self._node("/alerts")
        return data

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.node_port}"

    # ---- state ----

    def _load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"components": {}}
        return state

    def _save_state(self, state: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def _alive(self, entry: Mapping[str, Any]) -> bool:
        pid = int(entry.get("pid", 0))
        return pid > 0 and str(self.state_dir) in _cmdline(pid)

    def running(self) -> dict[str, bool]:
        state = self._load_state()
        return {name: self._alive(state["components"][name]) for name in state["components"]}

    def is_up(self) -> bool:
        running = self.running()
        return bool(running) and all(running.get(c, False) for c in COMPONENTS)

    # ---- checks ----

    def _ports(self) -> dict[str, tuple[int, str]]:
        s = self.settings
        return {
            "Prometheus": (s.prometheus_port, "prometheus_port"),
            "HAProxy front end": (s.router_port, "router_port"),
            "HAProxy exporter": (s.router_admin_port, "router_admin_port"),
            "stable pod": (s.stable_port, "stable_port"),
            "canary pod": (s.canary_port, "canary_port"),
            "node agent": (s.node_port, "node_port"),
            "Alertmanager": (s.alertmanager_port, "alertmanager_port"),
        }

    def preflight(self) -> None:
        """Every binary installed and every port free, or one clear error saying how to fix it."""
        for binary in ("prometheus", "haproxy", "prometheus-alertmanager"):
            if shutil.which(binary) is None:
                raise MissingBinary(
                    f"'{binary}' is not installed (not found on PATH)",
                    where="canary-checks sandbox",
                    fix=f"install the Debian package: sudo apt-get install -y {binary}  (./dev does it for you)",
                )
        if importlib.util.find_spec("locust") is None:
            raise MissingBinary(
                "Locust is not installed in this Python environment",
                where="canary-checks sandbox",
                fix="pip install 'canary-checks[load]'",
            )
        self._locustfile()
        ports = self._ports()
        seen: dict[int, str] = {}
        for what, (port, key) in ports.items():
            if port in seen:
                raise PortInUse(
                    f"the {what} and the {seen[port]} are both set to port {port}",
                    where=f"sandbox.{key}",
                    fix="give each sandbox port its own number in canary.yaml",
                )
            seen[port] = what
            if not _port_free(port):
                raise PortInUse(
                    f"port {port} on 127.0.0.1 (for the {what}) is already in use",
                    where=f"sandbox.{key}",
                    fix=f"stop what listens there (ss -ltnp 'sport = :{port}'), run 'canary-checks sandbox down' "
                    f"if it is an old sandbox, or set sandbox.{key} in canary.yaml",
                )

    def _locustfile(self) -> Path:
        locustfile = self.locustfile or LOCUSTFILE
        if not locustfile.is_file():
            raise SandboxError(
                f"no locustfile at {locustfile}",
                where="canary-checks sandbox",
                fix="pass an existing locustfile with --locustfile, or leave it out for the sandbox's own",
            )
        return locustfile.resolve()

    # ---- configuration files ----

    def _pods(self) -> list[dict[str, Any]]:
        s = self.settings
        return [
            {
                "name": pod_name(self.config.workload("stable"), "v1", self.config.namespace),
                "workload": self.config.workload("stable"),
                "port": s.stable_port,
                "version": "v1",
            },
            {
                "name": pod_name(self.config.workload("canary"), "v2", self.config.namespace),
                "workload": self.config.workload("canary"),
                "port": s.canary_port,
                "version": "v2",
            },
        ]

    def _write_files(self, weight: int, faults: Mapping[str, Mapping[str, float]]) -> None:
        s = self.settings
        d = self.state_dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "node.json").write_text(
            json.dumps(
                {
                    "namespace": self.config.namespace,
                    "cpu_limit": s.cpu_limit,
                    "memory_limit_bytes": s.memory_limit_mb * 2**20,
                    "pods": self._pods(),
                },
                indent=2,
            )
        )
        (d / "faults.json").write_text(json.dumps(dict(faults), indent=2))
        interval = f"{max(1, round(s.scrape_interval))}s"
        pod_targets = [
            {
                "targets": [f"127.0.0.1:{p['port']}"],
                "labels": {"namespace": self.config.namespace, "pod": p["name"], "workload": p["workload"]},
            }
            for p in self._pods()
        ]
        # The same recording and alerting rules a cluster gets (manifests/monitoring), for the sandbox's mesh.
        mesh = self.config.mesh if self.config.mesh is not Mesh.CUSTOM else Mesh.ISTIO
        rules = sandbox_rules(
            render_alerts(mesh, self.config.gates, self.config.failure_codes)["spec"]["groups"], interval
        )
        (d / "rules.yml").write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
        # Alertmanager routes every alert to the node agent's receiver (what Slack or PagerDuty would get).
        alertmanager = {
            "route": {"receiver": "sandbox", "group_by": ["alertname", "service"], "group_wait": "1s",
                      "group_interval": "5s", "repeat_interval": "1h"},
            "receivers": [{"name": "sandbox", "webhook_configs": [
                {"url": f"http://127.0.0.1:{s.node_port}/alerts", "send_resolved": True}]}],
        }  # fmt: skip
        (d / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager, sort_keys=False))
        prometheus = {
            "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
            "rule_files": [str(d / "rules.yml")],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{s.alertmanager_port}"]}]}]},
            "scrape_configs": [
                {
                    # What kube-state-metrics and the kubelet's cAdvisor endpoint would export.
                    "job_name": "kubernetes-node",
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"127.0.0.1:{s.node_port}"]}],
                },
                {
                    # The mesh proxies' metrics, scraped per pod as Istio's and Linkerd's Prometheus jobs do.
                    "job_name": "mesh-pods",
                    "honor_labels": True,
                    "static_configs": pod_targets,
                },
                {
                    "job_name": "haproxy",
                    "static_configs": [{"targets": [f"127.0.0.1:{s.router_admin_port}"]}],
                },
            ],
        }
        (d / "prometheus.yml").write_text(yaml.safe_dump(prometheus, sort_keys=False))
        (d / "haproxy.cfg").write_text(
            f"""# Written by canary-checks sandbox; weights change at run time through the admin socket.
global
    maxconn 4000
    nbthread 1
    stats socket {d / "haproxy.sock"} mode 600 level admin
    stats timeout 10s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive

frontend service
    bind 127.0.0.1:{s.router_port}
    acl canary_header req.hdr(x-canary) -i true
    acl stable_header req.hdr(x-canary) -i false
    use_backend canary_only if canary_header
    use_backend stable_only if stable_header
    default_backend svc

backend svc
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
    server stable 127.0.0.1:{s.stable_port} weight {100 - weight} check
    server canary 127.0.0.1:{s.canary_port} weight {weight} check

backend canary_only
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
    server canary 127.0.0.1:{s.canary_port} check

backend stable_only
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
    server stable 127.0.0.1:{s.stable_port} check

frontend admin
    bind 127.0.0.1:{s.router_admin_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
"""
        )

    def _commands(self) -> dict[str, list[str]]:
        s = self.settings
        d = self.state_dir
        users = max(1, math.ceil(s.rps / PER_USER_RPS))
        return {
            "node": [
                sys.executable,
                "-m",
                "canary_checks.sandbox.node",
                "--state-dir",
                str(d),
                "--port",
                str(s.node_port),
            ],
            "haproxy": ["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
            "alertmanager": [
                "prometheus-alertmanager",
                f"--config.file={d / 'alertmanager.yml'}",
                f"--web.listen-address=127.0.0.1:{s.alertmanager_port}",
                f"--storage.path={d / 'alertmanager-data'}",
                "--cluster.listen-address=",  # one instance, no gossip port
            ],
            "prometheus": [
                "prometheus",
                f"--config.file={d / 'prometheus.yml'}",
                f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
                f"--storage.tsdb.path={d / 'prometheus-data'}",
                "--storage.tsdb.retention.time=1d",
                "--web.enable-lifecycle",
            ],
            "locust": [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(self._locustfile()),
                "--headless",
                "--users",
                str(users),
                "--spawn-rate",
                str(users),
                "--host",
                self.service_url,
                "--csv",
                str(d / "locust"),
                "--loglevel",
                "WARNING",
                "ServiceUser",
            ],
        }

    # ---- life cycle ----

    def _start(self, name: str, state: dict[str, Any]) -> None:
        cmd = self._commands()[name]
        env = dict(os.environ)
        if name == "locust":
            env["CANARY_RPS"] = str(self.settings.rps)
            env["CANARY_USERS"] = cmd[cmd.index("--users") + 1]
        log_path = self.state_dir / f"{name}.log"
        with open(log_path, "ab") as logfile:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.state_dir,
                start_new_session=True,
            )
        state["components"][name] = {"pid": process.pid, "cmd": cmd, "log": str(log_path), "started": time.time()}
        self._save_state(state)
        # Until the child has exec'd, /proc shows our own command line; wait so identity checks hold from here on.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None and not self._alive(state["components"][name]):
            time.sleep(0.01)

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        state = self._load_state()
        entry = state["components"][name]
        while time.monotonic() < deadline:
            if ready():
                return
            if not self._alive(entry):
                break
            time.sleep(0.1)
        tail = ""
        with contextlib.suppress(OSError):
            tail = "\n    ".join(Path(entry["log"]).read_text(errors="replace").strip().splitlines()[-8:])
        raise SandboxError(
            f"{name} did not become ready within {timeout:.0f}s" + (f"; last log lines:\n    {tail}" if tail else ""),
            where=entry["log"],
            fix="read the log above; 'canary-checks sandbox down' cleans up",
        )

    def up(self, *, weight: int = 5, faults: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """Start everything; on any failure, stop what was started and raise."""
        if self.is_up():
            raise SandboxError(
                f"a sandbox is already running from {self.state_dir}",
                fix="use it, or stop it first with 'canary-checks sandbox down'",
            )
        if any(self.running().values()):
            self.down()
        self.preflight()
        # A new sandbox starts with no history: series of an earlier run would linger in instant queries.
        shutil.rmtree(self.state_dir / "prometheus-data", ignore_errors=True)
        self._write_files(weight, faults or {})
        state: dict[str, Any] = {"components": {}, "service_url": self.service_url, "prometheus": self.prometheus_url,
                                 "service": self.config.service, "namespace": self.config.namespace}  # fmt: skip
        self._save_state(state)
        steps: list[tuple[str, Callable[[], bool]]] = [
            ("node", lambda: _http_ok(f"{self.node_url}/pods")),
            ("haproxy", lambda: (self.state_dir / "haproxy.sock").exists() and self._router_answers()),
            ("alertmanager", lambda: _http_ok(f"{self.alertmanager_url}/-/ready")),
            ("prometheus", lambda: _http_ok(f"{self.prometheus_url}/-/ready")),
            ("locust", lambda: (self.state_dir / "locust_stats.csv").exists()),
        ]
        try:
            for name, ready in steps:
                self.progress(f"starting {name}")
                self._start(name, state)
                self._wait(name, ready)
            self.progress("waiting for both pods to be ready")
            self._wait("node", self._pods_ready)
        except BaseException:
            self.down()
            raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until both pods are ready and HAProxy's health checks have every server UP (after a fault)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(SandboxError):
                if self._pods_ready() and all(self.router.servers_up().values()):
                    return
            time.sleep(0.2)
        raise SandboxError(
            f"the pods were not ready and UP in HAProxy within {timeout:.0f}s",
            fix="see 'canary-checks sandbox status' and the pod logs in the state directory",
        )

    def _router_answers(self) -> bool:
        try:
            self.router.get_weight()
        except SandboxError:
            return False
        return True

    def _pods_ready(self) -> bool:
        try:
            return all(p["ready"] for p in self.pods())
        except SandboxError:
            return False

    def down(self) -> list[str]:
        """Stop every process this sandbox started; returns the names stopped."""
        state = self._load_state()
        stopped = []
        for name in reversed(COMPONENTS):
            entry = state["components"].get(name)
            if not entry or not self._alive(entry):
                continue
            pid = int(entry["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._alive(entry):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if self._alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        state["components"] = {}
        if self.state_dir.exists():
            self._save_state(state)
        return stopped

    def stop_component(self, name: str) -> None:
        """Stop one component (e.g. Prometheus, to see the gates error)."""
        state = self._load_state()
        entry = state["components"].get(name)
        if entry and self._alive(entry):
            os.killpg(int(entry["pid"]), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._alive(entry):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry["pid"]), os.WNOHANG)

    def start_component(self, name: str) -> None:
        """Start one stopped component again, with the same files."""
        state = self._load_state()
        if name in state["components"] and self._alive(state["components"][name]):
            return
        self._start(name, state)
        ready = {"prometheus": lambda: _http_ok(f"{self.prometheus_url}/-/ready")}.get(name, lambda: True)
        self._wait(name, ready)

    # ---- driving it ----

    def _node(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.node_url}{path}",
            data=data,
            method="POST" if data else "GET",
            headers={"content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raise SandboxError(f"node agent refused {path}: {e.read().decode(errors='replace')}") from e
        except OSError as e:
            raise SandboxError(
                f"the sandbox node agent at {self.node_url} does not answer ({e})",
                fix="is the sandbox up? 'canary-checks sandbox status' shows it; 'canary-checks sandbox up' starts it",
            ) from e

    def pods(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._node("/pods")
        return result

    def set_faults(self, side: str, faults: Mapping[str, float]) -> dict[str, Any]:
        """Replace the injected faults of ``side`` (canary|stable); keys are fields of ``demo.Faults``."""
        result: dict[str, Any] = self._node("/faults", {"workload": self.config.workload(side), "faults": dict(faults)})
        return result

    def faults(self) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = self._node("/faults")
        return result

    def set_weight(self, percent: int) -> int:
        return self.router.set_weight(percent)

    def status(self) -> dict[str, Any]:
        """What runs where: components, pods, weights, faults."""
        state = self._load_state()
        components = {}
        for name in COMPONENTS:
            entry = state["components"].get(name)
            components[name] = {
                "running": bool(entry) and self._alive(entry),
                "pid": entry.get("pid") if entry else None,
                "log": entry.get("log") if entry else None,
            }
        out: dict[str, Any] = {
            "state_dir": str(self.state_dir),
            "components": components,
            "addresses": {
                "service": self.service_url,
                "prometheus": self.prometheus_url,
                "node agent": self.node_url,
                "alertmanager": self.alertmanager_url,
                "haproxy stats": f"http://127.0.0.1:{self.settings.router_admin_port}/stats",
            },
        }
        with contextlib.suppress(SandboxError):
            out["canary_weight"] = self.router.get_weight()
        with contextlib.suppress(SandboxError):
            out["pods"] = self.pods()
        with contextlib.suppress(SandboxError):
            out["alerts"] = [
                {"name": a["labels"].get("alertname", "?"), "severity": a["labels"].get("severity", ""),
                 "summary": a.get("annotations", {}).get("summary", ""), "since": a.get("startsAt", "")}
                for a in self.alerts()
            ]  # fmt: skip
        with contextlib.suppress(OSError, StopIteration, KeyError, ValueError):
            with open(self.state_dir / "locust_stats.csv") as f:
                row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
            out["load"] = {
                "rps": float(row["Requests/s"]),
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
            }
        return out

    def wait_for_data(self, timeout: float = 60.0) -> None:
        """Block until Prometheus has scraped request counts from both pods (the first gate run needs them)."""
        query = f'count(istio_requests_total{{destination_workload_namespace="{self.config.namespace}"}})'
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
                with urllib.request.urlopen(url, timeout=2) as response:
                    result = json.loads(response.read())["data"]["result"]
                if result and float(result[0]["value"][1]) >= 1:
                    return
            time.sleep(0.5)
        raise SandboxError(f"Prometheus at {self.prometheus_url} has no request data after {timeout:.0f}s")


class SandboxPlatform:
    """The local sandbox: its pods are processes; the record is a file in its state directory.

    There is no image to pull: "deploying" records the image and waits for the canary pod to be ready."""

    def __init__(self, box: Any, service: str) -> None:
        self.box = box
        self.file = Path(box.state_dir) / f"rollout-{service}.json"
        self.images = Path(box.state_dir) / f"images-{service}.json"

    def describe(self) -> str:
        return f"the sandbox in {self.box.state_dir}"

    def validate(self) -> list[str]:
        if not self.box.is_up():
            return [f"the sandbox in {self.box.state_dir} is not running (canary-checks sandbox up)"]
        state = self.box._load_state()
        serves = (state.get("service"), state.get("namespace"))
        wanted = (self.box.config.service, self.box.config.namespace)
        if serves[0] is not None and serves != wanted:
            return [
                f"the sandbox in {self.box.state_dir} serves {serves[0]} in {serves[1]}, not {wanted[0]} in "
                f"{wanted[1]}: roll out {serves[0]} there, or 'canary-checks sandbox down' and 'sandbox up' with "
                f"a canary.yaml for {wanted[0]}"
            ]
        return []

    def read_record(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.file.read_text())
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    def write_record(self, state: dict[str, Any], expected: int) -> int:
        """Compare-and-swap on the record's version, under an exclusive lock on a file beside it (the contract of
        the Kubernetes annotation's resourceVersion, for processes on this machine)."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.with_name(self.file.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read_record()
            if version_of(current) != expected:
                raise RecordConflict(
                    f"the rollout record changed (version {version_of(current)}, expected {expected})",
                    current, where=str(self.file),
                )  # fmt: skip
            state["version"] = expected + 1
            tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
            tmp.replace(self.file)
        return expected + 1

    def _images(self) -> dict[str, str]:
        return (
            json.loads(self.images.read_text()) if self.images.exists() else {"stable": "demo:v1", "canary": "demo:v2"}
        )

    def _set_image(self, side: str, image: str) -> None:
        self.images.write_text(json.dumps({**self._images(), side: image}))

    def stable_image(self) -> str:
        return self._images()["stable"]

    def deploy_canary(self, image: str) -> None:
        self._set_image("canary", image)

    def wait_canary_ready(self, timeout: float, progress: Callable[[str], None]) -> None:
        progress("waiting for the canary pod to be ready and UP in HAProxy")
        self.box.wait_ready(timeout)

    def scale_canary(self, replicas: int) -> None:
        log.info("sandbox: the canary pod stays running (the sandbox does not scale); its weight is what matters")

    def promote(self, image: str, timeout: float, progress: Callable[[str], None]) -> None:
        self._set_image("stable", image)
