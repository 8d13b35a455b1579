"""Which side answered each Locust user: read from the sandbox locustfile's record (``sides.json``) and summed
over a stretch of time — how many users saw both sides, and the canary's share of users and of requests.

Seam: pure arithmetic over the record; the locustfile writes it, :meth:`Sandbox.sides` reads it."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Sides", "sides_between"]


@dataclass(frozen=True)
class Sides:
    """What the users saw between two instants."""

    users: int
    """Users with at least one answer in the stretch."""
    both: int
    """Users answered by the canary and by stable within the stretch (sticky sessions: none)."""
    canary_users: int
    """Users answered by the canary only."""
    requests: int
    """Answers in the stretch (whole seconds)."""
    canary_requests: int
    """Of which the canary's."""
    canary_before: frozenset[str]
    """Users the canary answered last before the stretch (or an instant given)."""
    moved_back: int
    """Of those, users the stable side answered within the stretch (sticky sessions: none unless the weight fell)."""

    @property
    def user_share(self) -> float:
        """The canary's share of the users, percent."""
        return 100 * self.canary_users / self.users if self.users else float("nan")

    @property
    def request_share(self) -> float:
        """The canary's share of the requests, percent."""
        return 100 * self.canary_requests / self.requests if self.requests else float("nan")

    def describe(self) -> str:
        return (
            f"{self.users} users, {self.both} saw both sides; canary: {self.canary_users} users "
            f"({self.user_share:.1f} %), {self.canary_requests} of {self.requests} requests "
            f"({self.request_share:.1f} %); {self.moved_back} of {len(self.canary_before)} earlier canary users "
            "back on stable"
        )


def sides_between(
    record: Mapping[str, Any], start: float, end: float, canary_pods: Collection[str], *, before: float | None = None
) -> Sides:
    """The users' sides between ``start`` and ``end`` (Unix seconds, by each request's start); the request counts
    over the whole seconds inside the stretch; ``canary_before`` as of ``before`` (default: ``start``)."""
    before = start if before is None else before
    both = canary_users = users = moved_back = 0
    canary_before: set[str] = set()
    for user, runs in record.get("users", {}).items():
        inside = {pod in canary_pods for pod, first, last, _ in runs if last >= start and first <= end}
        earlier = [pod in canary_pods for pod, first, _, _ in runs if first < before]
        if earlier and earlier[-1]:
            canary_before.add(user)
            moved_back += False in inside
        if not inside:
            continue
        users += 1
        both += len(inside) == 2
        canary_users += inside == {True}
    requests = canary_requests = 0
    for second, pods in record.get("seconds", {}).items():
        if start <= int(second) and int(second) + 1 <= end:
            requests += sum(pods.values())
            canary_requests += sum(n for pod, n in pods.items() if pod in canary_pods)
    return Sides(users, both, canary_users, requests, canary_requests, frozenset(canary_before), moved_back)
