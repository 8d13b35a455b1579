"""Supervising the sandbox's processes: each component started in its own session with its log beside it, its pid
kept in ``state.json``, recognised by its command line (naming the state directory) before any signal is sent, and
stopped with its whole process group.

Seam: knows processes, ports and the state file, not what the components do; their command lines come from
:mod:`canary_checks.sandbox.files`, their readiness checks from :class:`~canary_checks.sandbox.Sandbox`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from canary_checks.errors import SandboxError

COMPONENTS = ("node", "haproxy", "alertmanager", "prometheus", "locust")
"""The sandbox's components in the order they start (and, reversed, stop)."""


def free_port_settings(state_dir: Path, **settings: Any) -> dict[str, Any]:
    """A ``sandbox:`` section on ports the OS says are free now, for a second sandbox beside the default one
    (tests, benchmarks)."""
    names = ("prometheus_port", "router_port", "router_admin_port", "stable_port", "canary_port", "baseline_port",
             "node_port", "alertmanager_port")  # fmt: skip
    return {"state_dir": str(state_dir), **dict(zip(names, free_ports(len(names)), strict=True)), **settings}


EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000


PORT_CLAIMS = Path(tempfile.gettempdir()) / "canary-checks-ports"
CLAIM_SECONDS = 120.0
"""How long a port drawn by :func:`free_ports` stays claimed for its process: long enough to bind it."""


def _claim(port: int) -> bool:
    """Claim ``port`` for CLAIM_SECONDS across processes (a file created exclusively): two sandboxes started at once
    on one machine (test workers, benchmarks) drew the same free port, and the second's Prometheus could not bind it."""
    path = PORT_CLAIMS / str(port)
    for _ in range(2):
        try:
            PORT_CLAIMS.mkdir(exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime < CLAIM_SECONDS:
                    return False
                path.unlink()  # an old claim: its port is bound by now, or was given up
        except OSError:  # no shared place to claim in (another user's directory): the port is free now, take it
            return True
    return False


def free_ports(count: int, taken: Iterable[int] = ()) -> list[int]:
    """``count`` ports on 127.0.0.1 that are free now (none of ``taken``), ascending: drawn at random below the
    kernel's ephemeral range, each claimed for a while so that no other process's call draws it too. A port the
    kernel hands out for port 0 comes from that range, and so does the local port of every outgoing connection —
    Locust's, HAProxy's, Prometheus' own, thousands a minute: one picked that way was taken by a connection before the
    sandbox's process could bind it. Where the range starts too low to leave room, the kernel's own pick."""
    try:
        high = int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        high = 32768
    avoid, ports = set(taken), set[int]()
    draw = random.SystemRandom()
    for _ in range(100 * count if high - LOWEST_PORT >= 1000 else 0):
        if len(ports) == count:
            break
        port = draw.randrange(LOWEST_PORT, high)
        if port not in avoid and port_free(port) and _claim(port):
            ports.add(port)
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            ports.add(port)
    return sorted(ports)


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def http_ok(url: str, timeout: float = 1.0) -> bool:
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


@dataclass(frozen=True)
class Supervisor:
    """The processes one sandbox started, by their entries in ``state_dir/state.json``."""

    state_dir: Path

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {"components": {}}
        return state

    def save_state(self, state: Mapping[str, Any]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.state_file)

    def alive(self, entry: Mapping[str, Any]) -> bool:
        pid = int(entry.get("pid", 0))
        return pid > 0 and str(self.state_dir) in _cmdline(pid)

    def running(self) -> dict[str, bool]:
        state = self.load_state()
        return {name: self.alive(state["components"][name]) for name in state["components"]}

    def start(self, name: str, cmd: list[str], env: Mapping[str, str], state: dict[str, Any]) -> None:
        """Start ``name`` as ``cmd`` in a session of its own, logging to ``name.log``, and record it in ``state``."""
        log_path = self.state_dir / f"{name}.log"
        with open(log_path, "ab") as logfile:
            process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=self.state_dir,
                start_new_session=True,
            )
        state["components"][name] = {"pid": process.pid, "cmd": cmd, "log": str(log_path), "started": time.time()}
        self.save_state(state)
        # Until the child has exec'd, /proc shows our own command line; wait so identity checks hold from here on.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process.poll() is None and not self.alive(state["components"][name]):
            time.sleep(0.01)

    def wait(self, name: str, ready: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        state = self.load_state()
        entry = state["components"][name]
        while time.monotonic() < deadline:
            if ready():
                return
            if not self.alive(entry):
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

    def stop_all(self) -> list[str]:
        """Stop every process this sandbox started; returns the names stopped."""
        state = self.load_state()
        stopped = []
        for name in reversed(COMPONENTS):
            entry = state["components"].get(name)
            if not entry or not self.alive(entry):
                continue
            pid = int(entry["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.alive(entry):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            if self.alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            stopped.append(name)
        state["components"] = {}
        if self.state_dir.exists():
            self.save_state(state)
        return stopped

    def stop(self, name: str) -> None:
        """Stop one component (e.g. Prometheus, to see the gates error)."""
        state = self.load_state()
        entry = state["components"].get(name)
        if entry and self.alive(entry):
            os.killpg(int(entry["pid"]), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.alive(entry):
                time.sleep(0.05)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(int(entry["pid"]), os.WNOHANG)
