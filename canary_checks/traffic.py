"""Traffic routers behind one interface: read and set the canary's share of traffic.

This module has the sandbox's HAProxy router (runtime API over its admin socket: weights change with no reload and
no lost request). The Kubernetes routers (Istio VirtualService, SMI TrafficSplit, Gateway API HTTPRoute) implement the
same :class:`Router` protocol.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from canary_checks.errors import SandboxError

__all__ = ["HAProxyRouter", "Router", "WeightNotApplied"]

log = logging.getLogger(__name__)


class WeightNotApplied(SandboxError):
    """The router did not confirm the weight that was set."""


class Router(Protocol):
    def get_weight(self) -> int:
        """The canary's share of traffic, percent."""
        ...

    def set_weight(self, percent: int) -> int:
        """Give the canary ``percent`` of traffic (stable the rest); returns the weight read back."""
        ...


@dataclass(frozen=True)
class HAProxyRouter:
    """The sandbox router: HAProxy backend ``backend`` with servers ``stable`` and ``canary``."""

    socket_path: Path
    backend: str = "svc"
    timeout: float = 2.0

    def command(self, line: str) -> str:
        """Send one runtime-API command line and return HAProxy's answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as e:
            raise SandboxError(
                f"HAProxy's runtime API did not answer ({e.strerror or e})",
                where=str(self.socket_path),
                fix="is the sandbox up? Run 'canary-checks sandbox status', or 'canary-checks sandbox up'",
            ) from e
        return b"".join(chunks).decode(errors="replace").strip()

    def server_weight(self, server: str) -> int:
        answer = self.command(f"get weight {self.backend}/{server}")
        match = re.match(r"^(\d+)", answer)
        if not match:
            raise SandboxError(f"unexpected answer to 'get weight {self.backend}/{server}': {answer!r}")
        return int(match.group(1))

    def get_weight(self) -> int:
        canary, stable = self.server_weight("canary"), self.server_weight("stable")
        total = canary + stable
        return round(100 * canary / total) if total else 0

    def set_weight(self, percent: int) -> int:
        if not 0 <= percent <= 100:
            raise SandboxError(f"a canary weight is a percent from 0 to 100; got {percent}")
        # Both servers change in one request, so no request sees a split that sums to anything but 100.
        answer = self.command(
            f"set weight {self.backend}/stable {100 - percent}; set weight {self.backend}/canary {percent}"
        )
        if answer:
            raise WeightNotApplied(f"HAProxy refused the weight change: {answer}", where=str(self.socket_path))
        confirmed = self.get_weight()
        if confirmed != percent:
            raise WeightNotApplied(
                f"set the canary weight to {percent} % but HAProxy reports {confirmed} %",
                where=str(self.socket_path),
            )
        log.info("canary weight %d %% (stable %d %%), confirmed by HAProxy", percent, 100 - percent)
        return confirmed
