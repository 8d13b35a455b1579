"""A share of traffic as HAProxy server weights, pure: the sandbox's router gives each side several servers (one
per pod) and HAProxy weighs servers, not sides, so the canary's share is spread over its servers in service and
stable's rest over stable's — the split is the stage's weight however many pods each side has.

Seam: arithmetic and parsing only; :class:`~canary_checks.traffic.HAProxyRouter` sends the commands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MAX_WEIGHT", "Server", "servers_of", "share", "side_of", "spread"]

MAX_WEIGHT = 256
"""HAProxy's largest server weight."""


def side_of(server: str) -> str:
    """``stable`` or ``canary`` of a server named after its side and pod (``canary``, ``canary-2``, ...)."""
    return server.split("-", 1)[0]


def spread(percent: int, servers: Iterable[str]) -> dict[str, int]:
    """Server weights (0 to 256) that send ``percent`` of a backend's requests to its canary servers together and
    the rest to its stable servers, evenly within a side. One server a side keeps the weights as a percent (95 and
    5); more are weighed so that the sides' sums stand as percent to 100 − percent — exactly where that fits in
    256, else within half a weight unit."""
    names = list(servers)
    canary = [s for s in names if side_of(s) == "canary"]
    stable = [s for s in names if side_of(s) != "canary"]
    if not canary or not stable:  # one side has no server in service: it cannot be given a share
        return dict.fromkeys(names, 0 if not stable else 100 - percent) | dict.fromkeys(canary, percent)
    each_canary, each_stable = percent * len(stable), (100 - percent) * len(canary)
    if max(each_canary, each_stable) > 100:  # beyond a percent: the smallest whole weights in that proportion
        divisor = math.gcd(each_canary, each_stable) or 1
        each_canary, each_stable = each_canary // divisor, each_stable // divisor
    if (largest := max(each_canary, each_stable)) > MAX_WEIGHT:
        each_canary = _scaled(each_canary, largest)
        each_stable = _scaled(each_stable, largest)
    return {**dict.fromkeys(stable, each_stable), **dict.fromkeys(canary, each_canary)}


def _scaled(weight: int, largest: int) -> int:
    """``weight`` scaled so that ``largest`` becomes 256; a weight above 0 stays above 0 (a side with a share keeps
    getting requests)."""
    return max(1, round(weight * MAX_WEIGHT / largest)) if weight else 0


def share(weights: Mapping[str, int]) -> int:
    """The canary's share, percent, of a backend whose servers in service have ``weights``."""
    total = sum(weights.values())
    canary = sum(w for s, w in weights.items() if side_of(s) == "canary")
    return round(100 * canary / total) if total else 0


@dataclass(frozen=True)
class Server:
    """One server of an HAProxy backend as ``show stat`` reports it."""

    backend: str
    name: str
    status: str
    """UP, DOWN, MAINT, no check, ... (with a transition, e.g. "UP 1/2")."""
    weight: int

    @property
    def in_service(self) -> bool:
        """Not taken out for maintenance (a pod that does not exist): it has a weight, up or down."""
        return not self.status.startswith("MAINT")

    @property
    def up(self) -> bool:
        return self.status.startswith("UP")


def servers_of(stat: str) -> list[Server]:
    """The servers in HAProxy's ``show stat`` CSV (every backend's; not the frontend and backend rows)."""
    rows = stat.lstrip("# ").splitlines()
    header = rows[0].split(",") if rows else []
    found = []
    for row in rows[1:]:
        fields = dict(zip(header, row.split(","), strict=False))
        if fields.get("svname") in ("FRONTEND", "BACKEND", None) or not fields.get("pxname"):
            continue
        weight = fields.get("weight") or "0"
        found.append(Server(fields["pxname"], fields["svname"], fields.get("status", ""),
                            int(weight) if weight.isdigit() else 0))  # fmt: skip
    return found
