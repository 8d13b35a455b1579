"""The sandbox's router: HAProxy's runtime API over its admin socket (weights change with no reload and no lost
request), the baseline's server when it has one, and sticky sessions' runtime map."""

from __future__ import annotations

import logging
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from canary_checks.errors import SandboxError, WeightNotApplied
from canary_checks.sticky import StickyState, cookie_value, next_state
from canary_checks.traffic.router import check_shares, no_baseline

__all__ = ["HAProxyRouter"]

log = logging.getLogger(__name__)


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

    def server_weight(self, server: str, backend: str | None = None) -> int:
        backend = backend or self.backend
        answer = self.command(f"get weight {backend}/{server}")
        match = re.match(r"^(\d+)", answer)
        if not match:
            raise SandboxError(f"unexpected answer to 'get weight {backend}/{server}': {answer!r}")
        return int(match.group(1))

    def servers_up(self) -> dict[str, bool]:
        """``backend/server`` → whether HAProxy's health checks have it UP."""
        rows = self.command("show stat").lstrip("# ").splitlines()
        header = rows[0].split(",") if rows else []
        out = {}
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("svname") not in ("FRONTEND", "BACKEND", None):
                out[f"{fields['pxname']}/{fields['svname']}"] = fields.get("status", "").startswith("UP")
        return out

    def has_baseline(self) -> bool:
        """Whether this HAProxy was started with a baseline server (baseline.enabled)."""
        return f"{self.backend}/baseline" in self.servers_up()

    def weights(self) -> dict[str, int]:
        """Each server's share of the split, percent: stable, canary and (when there is one) baseline."""
        servers = ("stable", "canary", "baseline") if self.has_baseline() else ("stable", "canary")
        raw = {server: self.server_weight(server) for server in servers}
        total = sum(raw.values())
        return {server: round(100 * w / total) if total else 0 for server, w in raw.items()}

    def get_weight(self) -> int:
        return self.weights()["canary"]

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        check_shares(percent, baseline)
        has_baseline = self.has_baseline()
        if baseline and not has_baseline:
            raise no_baseline(str(self.socket_path), "'canary-checks sandbox down', then 'canary-checks sandbox up' "
                               "with baseline.enabled: true in canary.yaml (it starts the baseline pod)")  # fmt: skip
        # The servers change in one request; with sticky sessions the restick split and the cookies in force too.
        line = (
            f"set weight {self.backend}/stable {100 - percent - baseline}; set weight {self.backend}/canary {percent}"
        )
        if has_baseline:
            line += f"; set weight {self.backend}/baseline {baseline}"
        sticky = self.sticky_map()
        if sticky is not None:  # the weights first, the cookies in force last (see _sticky_commands)
            line = f"{line}; {self._sticky_commands(sticky, percent)}"
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
        restick = self.server_weight("canary", "restick")
        return StickyState(canary.partition(".")[2], stable.partition(".")[2], restick)

    def _sticky_commands(self, path: str, percent: int) -> str:
        """The restick split, then both cookies in force in one map entry. HAProxy runs a line's commands one by
        one, requests between them: with the weights first, a client still holding a valid cookie keeps its side
        until the cookies change, and every client split meanwhile is split at the new weights."""
        state = next_state(self.sticky_state(path), self.get_weight(), percent)
        # off: values issued to nobody (and not each other's), so no cookie reaches the canary
        canary = cookie_value("canary", state.canary) if state else f"off.{secrets.token_hex(8)}"
        stable = cookie_value("stable", state.stable) if state else f"off.{secrets.token_hex(8)}"
        restick = state.restick if state else 0
        return (f"set weight restick/stable {100 - restick}; set weight restick/canary {restick}; "
                f"set map {path} tokens {canary}/{stable}")  # fmt: skip
