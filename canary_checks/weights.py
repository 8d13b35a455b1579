"""A share of traffic as HAProxy server weights, pure: the sandbox's router gives each side several servers (one
per pod) and HAProxy weighs servers, not sides, so the canary's share is spread over its servers in service and
stable's rest over stable's — the split is the stage's weight however many pods each side has.

Seam: arithmetic and parsing only; :class:`~canary_checks.traffic.HAProxyRouter` sends the commands.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["MAX_WEIGHT", "Server", "servers_of", "share", "side_of", "spread", "spread_shares"]

MAX_WEIGHT = 256
"""HAProxy's largest server weight."""


def side_of(server: str) -> str:
    """``stable`` or ``canary`` of a server named after its side and pod (``canary``, ``canary-2``, ...)."""
    return server.split("-", 1)[0]


def spread(percent: int, servers: Iterable[str]) -> dict[str, int]:
    """Server weights (0 to 256) that send ``percent`` of a backend's requests to its canary servers together and
    the rest to its stable servers, evenly within a side (:func:`spread_shares` of the two)."""
    return spread_shares({"stable": 100 - percent, "canary": percent}, servers)


def spread_shares(shares: Mapping[str, int], servers: Iterable[str]) -> dict[str, int]:
    """Server weights (0 to 256) that give each side (``stable``, ``canary``, any other a server is named after) its
    share, percent, of a backend's requests, evenly over that side's servers. One server a side keeps the weights as
    the percents (95 and 5); more are weighed so that the sides' sums stand as their shares — exactly where that
    fits in 256, else within half a weight unit. A side with no server in service gets nothing (its share cannot be
    given: the confirmation that reads the weights back says so)."""
    names = list(servers)
    count = {side: sum(side_of(s) == side for s in names) for side in {side_of(s) for s in names}}
    # each server of a side: its share times the other sides' server counts, so that the sides' sums are in proportion
    each = {side: shares.get(side, 0) * math.prod(n for other, n in count.items() if other != side) for side in count}
    if max(each.values(), default=0) > 100:  # beyond a percent: the smallest whole weights in that proportion
        divisor = math.gcd(*each.values()) or 1
        each = {side: w // divisor for side, w in each.items()}
    if (largest := max(each.values(), default=0)) > MAX_WEIGHT:
        each = {side: _scaled(w, largest) for side, w in each.items()}
    order = sorted(names, key=lambda s: (side_of(s) != "stable", side_of(s) != "canary"))  # stable's first
    return {s: each[side_of(s)] for s in order}


def _scaled(weight: int, largest: int) -> int:
    """``weight`` scaled so that ``largest`` becomes 256; a weight above 0 stays above 0 (a side with a share keeps
    getting requests)."""
    return max(1, round(weight * MAX_WEIGHT / largest)) if weight else 0


def share(weights: Mapping[str, int], side: str = "canary") -> int:
    """``side``'s share, percent, of a backend whose servers in service have ``weights``."""
    total = sum(weights.values())
    mine = sum(w for s, w in weights.items() if side_of(s) == side)
    return round(100 * mine / total) if total else 0


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
