"""The rollout's record and who owns it: one owner per rollout, and a rollback always wins.

The record (stage, weights, decisions, status) lives where it survives the runner — an annotation on the canary
Deployment, a file in the sandbox — and carries

- ``version``: a counter every write raises by one. A platform's ``write_record`` writes only over the version it was
  given (compare-and-swap: the Deployment's ``resourceVersion`` in the cluster, a locked file in the sandbox);
  anything else is :class:`RecordConflict`, so no writer ever overwrites a change it has not read;
- ``lease``: the runner that holds the rollout (``holder``, ``run_id``), when it last said so (``renewed``, epoch
  seconds) and for how long that holds (``ttl``). A second runner refuses while the lease holds and takes over once
  it has expired; ``canary-checks watch`` rolls back a rollout whose lease expired (its runner died).

A rollback — by ``run --rollback``, the watchdog or the runner itself — is written to the record *before* the weight
goes to 0, and a runner reads the record again before each weight change and before promotion, and stops (changing
nothing more) when someone else rolled back or took over.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canary_checks.errors import CanaryError

__all__ = ["IN_PROGRESS", "Lease", "RecordConflict", "holder_id", "version_of"]

IN_PROGRESS = ("deploying", "progressing", "awaiting-decision", "awaiting-window", "awaiting-promotion", "rolling-back")
"""Statuses of a rollout that is not over: it has an owner, or needs one."""


def holder_id(kind: str = "runner") -> str:
    """Who writes: ``runner user@host pid 4242`` — what a person reads in a refusal."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a container without /etc/passwd entry
        user = str(os.getuid())
    return f"{kind} {user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class Lease:
    holder: str
    run_id: str
    renewed: float
    """Epoch seconds of the holder's last write or heartbeat."""
    ttl: float
    """Seconds of silence after which the lease has expired."""

    @classmethod
    def of(cls, state: Mapping[str, Any] | None) -> Lease | None:
        raw = (state or {}).get("lease")
        if not isinstance(raw, Mapping):
            return None
        try:
            return cls(str(raw["holder"]), str(raw.get("run_id", "")), float(raw["renewed"]), float(raw["ttl"]))
        except (KeyError, TypeError, ValueError):
            return None

    def expires(self) -> float:
        return self.renewed + self.ttl

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) > self.expires()

    def as_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "run_id": self.run_id, "renewed": self.renewed, "ttl": self.ttl}

    def describe(self, now: float | None = None) -> str:
        now = time.time() if now is None else now
        left = self.expires() - now
        when = f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"
        return f"{self.holder} (run {self.run_id}), last heard {now - self.renewed:.0f} s ago, {when}"


class RecordConflict(CanaryError):
    """The record changed since it was read: someone else wrote it. ``current`` is what it says now."""

    def __init__(self, what: str, current: dict[str, Any] | None, **kwargs: Any) -> None:
        self.current = current
        super().__init__(what, **kwargs)


def version_of(state: Mapping[str, Any] | None) -> int:
    """The record's version (0: no record, or one written before records had versions)."""
    try:
        return int((state or {}).get("version", 0))
    except (TypeError, ValueError):
        return 0
