"""The sandbox's router: HAProxy's runtime API over its admin socket (weights change with no reload and no lost
request), a server per pod (:mod:`canary_checks.weights` spreads each side's share over them), the baseline's
server when it has one, and sticky sessions' runtime map."""

from __future__ import annotations

import logging
import re
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from canary_checks.errors import SandboxError, WeightNotApplied
from canary_checks.sticky import StickyState, cookie_value, next_state
from canary_checks.traffic.router import check_shares, no_baseline
from canary_checks.weights import Server, servers_of, share, side_of, spread_shares

__all__ = ["HAProxyRouter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HAProxyRouter:
    """The sandbox router: HAProxy backend ``backend`` with a server per pod, named after its side (``stable``,
    ``canary``, ``canary-2``, ``baseline``, …); a side's share is spread over its servers in service."""

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

    def server_weight(self, server: str, backend: str | None = None) -> int:
        backend = backend or self.backend
        answer = self.command(f"get weight {backend}/{server}")
        match = re.match(r"^(\d+)", answer)
        if not match:
            raise SandboxError(f"unexpected answer to 'get weight {backend}/{server}': {answer!r}")
        return int(match.group(1))

    def servers(self) -> list[Server]:
        """Every server of every backend, as ``show stat`` reports it."""
        return servers_of(self.command("show stat"))

    def in_service(self, backend: str | None = None) -> dict[str, int]:
        """Server → weight of ``backend``'s servers in service (not in maintenance: a pod scaled away)."""
        backend = backend or self.backend
        return {s.name: s.weight for s in self.servers() if s.backend == backend and s.in_service}

    def servers_up(self) -> dict[str, bool]:
        """``backend/server`` → whether HAProxy's health checks have it UP (servers in service only)."""
        return {f"{s.backend}/{s.name}": s.up for s in self.servers() if s.in_service}

    def has_baseline(self) -> bool:
        """Whether this HAProxy was started with a baseline server (baseline.enabled)."""
        return any(side_of(s) == "baseline" for s in self.in_service())

    def weights(self) -> dict[str, int]:
        """Each side's share of the split, percent: stable, canary and (when there is one) baseline."""
        weights = self.in_service()  # one read of the stats: whether a baseline serves is in it too
        sides = (
            ("stable", "canary", "baseline") if any(side_of(s) == "baseline" for s in weights) else ("stable", "canary")
        )
        return {side: share(weights, side) for side in sides}

    def get_weight(self) -> int:
        return share(self.in_service())

    def set_weight(self, percent: int, baseline: int = 0, *, retiring: Sequence[str] = ()) -> int:
        """The canary's share and the baseline's, each spread over its side's servers in service (``retiring``
        ones are taken out of service in the same request, their share spread over the others)."""
        check_shares(percent, baseline)
        if baseline and not self.has_baseline():
            raise no_baseline(str(self.socket_path), "'canary-checks sandbox down', then 'canary-checks sandbox up' "
                              "with baseline.enabled: true in canary.yaml (it starts the baseline pod)")  # fmt: skip
        # Every server changes in one request; with sticky sessions the restick split and the cookies in force too.
        shares = {"stable": 100 - percent - baseline, "canary": percent, "baseline": baseline}
        line = "; ".join(
            [*(f"set server {s.backend}/{s.name} state maint" for s in self.servers() if s.name in retiring),
             *self._weights(self.backend, shares, retiring)]
        )  # fmt: skip
        sticky = self.sticky_map()
        if sticky is not None:  # the weights first, the cookies in force last (see _sticky_commands)
            line = f"{line}; {self._sticky_commands(sticky, percent, retiring)}"
        answer = self.command(line)
        if answer:
            raise WeightNotApplied(f"HAProxy refused the weight change: {answer}", where=str(self.socket_path))
        weights = self.weights()
        if (weights["canary"], weights.get("baseline", 0)) != (percent, baseline):
            raise WeightNotApplied(
                f"set the canary weight to {percent} %{f' and the baseline to {baseline} %' if baseline else ''} but "
                f"HAProxy reports {weights}",
                where=str(self.socket_path),
            )
        log.info("weights %s, confirmed by HAProxy", weights)
        return weights["canary"]

    def respread(self, *, retiring: Sequence[str] = ()) -> int:
        """Each side's share as it is (the canary's, the baseline's), spread again over the servers in service —
        a pod came into service, or ``retiring`` ones leave it in the same request."""
        weights = self.weights()
        return self.set_weight(weights["canary"], weights.get("baseline", 0), retiring=retiring)

    def _weights(self, backend: str, shares: Mapping[str, int], retiring: Sequence[str] = ()) -> list[str]:
        """The commands that give ``backend``'s sides their ``shares``, each over its servers in service."""
        servers = [s for s in self.in_service(backend) if s not in retiring]
        return [f"set weight {backend}/{server} {w}" for server, w in spread_shares(shares, servers).items()]

    def enter_service(self, servers: Sequence[str]) -> None:
        """Put ``servers`` (new pods) in service in every backend that has them, at weight 0 and down until a health
        check passes (HAProxy would call them UP at once): given a share by the next :meth:`set_weight`."""
        line = "; ".join(
            f"set weight {s.backend}/{s.name} 0; set server {s.backend}/{s.name} state ready; "
            f"set server {s.backend}/{s.name} health down"
            for s in self.servers() if s.name in servers and not s.in_service
        )  # fmt: skip
        if line and (answer := self.command(line)):
            raise SandboxError(f"HAProxy refused to put {', '.join(servers)} in service: {answer}")

    # sticky sessions (canary_checks.sticky): the cookies in force are two entries of a runtime map, the move of
    # stable's clients to a new weight the weights of the backend `restick`

    def sticky_map(self) -> str | None:
        """The runtime map of the cookies in force, when this HAProxy was started with sticky sessions."""
        match = re.search(r"\((/[^)]*sticky\.map)\)", self.command("show map"))
        return match.group(1) if match else None

    def sticky_state(self, path: str | None = None) -> StickyState | None:
        """The cookies in force (none: no canary cookie reaches the canary)."""
        path = path or self.sticky_map()
        if path is None:
            return None
        entries = dict(line.split()[1:3] for line in self.command(f"show map {path}").splitlines() if line.strip())
        canary, _, stable = entries.get("tokens", "").partition("/")
        if not (canary.startswith("canary.") and stable.startswith("stable.")):
            return None
        restick = share(self.in_service("restick"))
        return StickyState(canary.partition(".")[2], stable.partition(".")[2], restick)

    def _sticky_commands(self, path: str, percent: int, retiring: Sequence[str] = ()) -> str:
        """The restick split, then both cookies in force in one map entry. HAProxy runs a line's commands one by
        one, requests between them: with the weights first, a client still holding a valid cookie keeps its side
        until the cookies change, and every client split meanwhile is split at the new weights."""
        state = next_state(self.sticky_state(path), self.get_weight(), percent)
        # off: values issued to nobody (and not each other's), so no cookie reaches the canary
        canary = cookie_value("canary", state.canary) if state else f"off.{secrets.token_hex(8)}"
        stable = cookie_value("stable", state.stable) if state else f"off.{secrets.token_hex(8)}"
        restick = state.restick if state else 0
        shares = {"stable": 100 - restick, "canary": restick}
        return "; ".join([*self._weights("restick", shares, retiring), f"set map {path} tokens {canary}/{stable}"])
