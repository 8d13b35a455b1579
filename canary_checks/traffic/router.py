"""The router interface and what every router checks of the shares it is asked for."""

from __future__ import annotations

from typing import Protocol

from canary_checks.errors import RoutingError

__all__ = ["Router", "check_shares", "no_baseline"]


class Router(Protocol):
    def get_weight(self) -> int:
        """The canary's share of traffic, percent."""
        ...

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        """Give the canary ``percent`` of traffic and the baseline ``baseline`` (stable the rest); returns the
        canary's weight read back. The baseline's backend is needed only for a share above 0: weight 0 (a rollback)
        takes the baseline's share away too, wherever it has a backend."""
        ...


def check_shares(percent: int, baseline: int) -> None:
    if not 0 <= percent <= 100:
        raise RoutingError(f"a canary weight is a percent from 0 to 100; got {percent}")
    if not 0 <= baseline <= 100 - percent:
        raise RoutingError(f"a baseline weight is a percent from 0 to {100 - percent} beside a canary at {percent} %; "
                           f"got {baseline}")  # fmt: skip


def no_baseline(where: str, fix: str) -> RoutingError:
    return RoutingError("the baseline has no backend to route to", where=where, fix=fix)
