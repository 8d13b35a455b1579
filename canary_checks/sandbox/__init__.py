"""The local sandbox: the whole canary loop on real parts, all on 127.0.0.1, in a state directory it owns.

- a real Prometheus (Debian package ``prometheus``) scraping everything every second;
- a real HAProxy (Debian package ``haproxy``) in front of the service: weighted split between stable and canary,
  changed through its runtime API; ``x-canary: true`` always goes to the canary;
- the node agent (:mod:`canary_checks.sandbox.node`) running one stable and one canary pod of the demo service
  (:mod:`canary_checks.sandbox.demo`), exporting kube-state-metrics and cAdvisor series;
- Locust, headless, sending a steady request rate through HAProxy.

``Sandbox.down()`` stops only what this sandbox started (checked against each process' command line) and deletes
nothing outside its state directory.

The package's seams: :mod:`~canary_checks.sandbox.files` renders every file and command line from the config,
:mod:`~canary_checks.sandbox.processes` starts, recognises and stops the processes, :mod:`~canary_checks.sandbox.client`
talks to the node agent, :mod:`~canary_checks.sandbox.platform` is the sandbox as the runner's platform; this module
puts them together as :class:`Sandbox`. The agent (``node``), the demo service (``demo``), the load (``locustfile``,
``shapes``) and the tour (``tour``) run as their own processes or commands.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary_checks.config import CanaryConfig
from canary_checks.errors import MissingBinary, PortInUse, SandboxError
from canary_checks.faults import FAULT_KINDS
from canary_checks.sandbox.client import NodeClient
from canary_checks.sandbox.files import PER_USER_RPS as PER_USER_RPS
from canary_checks.sandbox.files import commands, extra_ports, pod_name, write_files
from canary_checks.sandbox.files import sandbox_rules as sandbox_rules
from canary_checks.sandbox.platform import SandboxPlatform
from canary_checks.sandbox.processes import (
    COMPONENTS,
    Supervisor,
    free_port_settings,
    free_ports,
    http_ok,
    port_free,
)
from canary_checks.traffic import HAProxyRouter

__all__ = ["FAULT_KINDS", "LOCUSTFILE", "SHAPES", "Sandbox", "SandboxPlatform", "free_port_settings", "pod_name"]

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
"""The sandbox's traffic: the demo service's clients (shipped in the package; --locustfile replaces it)."""
SHAPES = Path(__file__).with_name("shapes.py")
"""Load shapes per rollout stage, to use beside the locustfile."""
DATA_PATH = ("node", "haproxy", "prometheus", "locust")
"""The components request data passes through: Locust, HAProxy, the pods (the node agent's), Prometheus."""


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
        return self.processes.state_file

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
        return self.node.received_alerts()

    @property
    def node_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.node_port}"

    @property
    def node(self) -> NodeClient:
        return NodeClient(self.node_url)

    @property
    def processes(self) -> Supervisor:
        return Supervisor(self.state_dir)

    # ---- state ----

    def _load_state(self) -> dict[str, Any]:
        return self.processes.load_state()

    def _alive(self, entry: Mapping[str, Any]) -> bool:
        return self.processes.alive(entry)

    def running(self) -> dict[str, bool]:
        return self.processes.running()

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
            **({"baseline pod": (s.baseline_port, "baseline_port")} if self.config.baseline.enabled else {}),
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
            if not port_free(port):
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

    # ---- life cycle ----

    def _start(self, name: str, state: dict[str, Any]) -> None:
        cmd = commands(self.config, self.state_dir, self._locustfile(), self.service_url)[name]
        env = dict(os.environ)
        if name == "locust":
            if self.config.routing.sticky.enabled:  # without stickiness every user's answers alternate: no record
                env["CANARY_SIDES_FILE"] = str(self.sides_file)
            env["CANARY_RPS"] = str(self.settings.rps)
            env["CANARY_USERS"] = cmd[cmd.index("--users") + 1]
        self.processes.start(name, cmd, env, state)

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        self.processes.wait(name, ready, timeout)

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
        self.sides_file.unlink(missing_ok=True)
        taken = [port for port, _ in self._ports().values()]  # more pods (stable_replicas, scaling): free ports
        write_files(self.config, self.state_dir, weight, faults or {}, free_ports(extra_ports(self.config), taken))
        state: dict[str, Any] = {"components": {}, "service_url": self.service_url, "prometheus": self.prometheus_url,
                                 "service": self.config.service, "namespace": self.config.namespace}  # fmt: skip
        self.processes.save_state(state)
        steps: list[tuple[str, Callable[[], bool]]] = [
            ("node", lambda: http_ok(f"{self.node_url}/pods")),
            ("haproxy", lambda: (self.state_dir / "haproxy.sock").exists() and self._router_answers()),
            ("alertmanager", lambda: http_ok(f"{self.alertmanager_url}/-/ready")),
            ("prometheus", lambda: http_ok(f"{self.prometheus_url}/-/ready")),
            ("locust", lambda: (self.state_dir / "locust_stats.csv").exists()),
        ]
        try:
            for name, ready in steps:
                if name == "locust":
                    self._settle_router()
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

    def _settle_router(self, timeout: float = 30.0) -> None:
        """Traffic only once HAProxy sees both pods up (best effort: a pod started with a fault may never be): its
        first checks ran before they listened, and a request to a pod not yet listening fails — with sticky
        sessions such a client tries again until the side that was up first answers it, and stays there."""
        self.progress("waiting for both pods to be ready and UP in HAProxy")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(SandboxError):
                if self._pods_ready() and all(self.router.servers_up().values()):
                    return
            time.sleep(0.1)

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
        return self.processes.stop_all()

    def stop_component(self, name: str) -> None:
        """Stop one component (e.g. Prometheus, to see the gates error)."""
        self.processes.stop(name)

    def start_component(self, name: str) -> None:
        """Start one stopped component again, with the same files."""
        state = self._load_state()
        if name in state["components"] and self._alive(state["components"][name]):
            return
        self._start(name, state)
        ready = {"prometheus": lambda: http_ok(f"{self.prometheus_url}/-/ready")}.get(name, lambda: True)
        self._wait(name, ready)

    # ---- driving it ----

    @property
    def sides_file(self) -> Path:
        return self.state_dir / "sides.json"

    def sides(self) -> dict[str, Any]:
        """Which pod answered each Locust user, as the locustfile records it every second (empty before that):
        :func:`canary_checks.sandbox.sides.sides_between` sums it."""
        try:
            data: dict[str, Any] = json.loads(self.sides_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def pods(self) -> list[dict[str, Any]]:
        return self.node.pods()

    def set_faults(self, side: str, faults: Mapping[str, float]) -> dict[str, Any]:
        """Replace the injected faults of ``side`` (canary|stable|baseline); keys are fields of ``demo.Faults``."""
        return self.node.set_faults(self.config.workload(side), faults)

    def faults(self) -> dict[str, dict[str, float]]:
        return self.node.faults()

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        return self.router.set_weight(percent, baseline)

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
            if self.config.baseline.enabled:
                out["weights"] = self.router.weights()
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
        """Block until Prometheus has scraped request counts from both pods (the first gate run needs them); fail at
        once, naming it, when a component the data passes through is not running."""
        query = f'count(istio_requests_total{{destination_workload_namespace="{self.config.namespace}"}})'
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
                with urllib.request.urlopen(url, timeout=2) as response:
                    result = json.loads(response.read())["data"]["result"]
                if result and float(result[0]["value"][1]) >= 1:
                    return
            dead = [name for name, up in self.running().items() if not up and name in DATA_PATH]
            if dead or time.monotonic() - started >= timeout:
                break
            time.sleep(0.5)
        said = "; ".join(f"{name} is not running ({_last_line(self.state_dir / f'{name}.log')})" for name in dead)
        raise SandboxError(
            f"Prometheus at {self.prometheus_url} has no request data after {time.monotonic() - started:.0f}s"
            f"{': ' if said else ''}{said}",
            fix=f"see the logs in {self.state_dir}; 'canary-checks sandbox down', then 'up' again",
        )


def _last_line(log: Path) -> str:
    """The last line a component wrote to its log (why it stopped, most often), or that it wrote none."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"{log.name}: {lines[-1].strip()}" if lines else f"{log.name} is empty"
