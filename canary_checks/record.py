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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from canary_checks.errors import CanaryError

__all__ = [
    "IN_PROGRESS",
    "TRANSITIONS",
    "Event",
    "Lease",
    "RecordConflict",
    "Status",
    "can_move",
    "holder_id",
    "stage_of",
    "version_of",
]


class Status(StrEnum):
    """Where a rollout is: the record's ``status``, as the runner, the watchdog and ``run --rollback`` read it."""

    DEPLOYING = "deploying"
    """The canary's image is being set and waited for (no weighted traffic yet)."""
    PROGRESSING = "progressing"
    """Moving through the stages: a weight, its step, its gate suite."""
    AWAITING_DECISION = "awaiting-decision"
    """A stage could not decide and the policy is to hold: a person decides (run --proceed or --rollback)."""
    AWAITING_WINDOW = "awaiting-window"
    """The next step falls outside the release windows and the policy is to hold."""
    AWAITING_PROMOTION = "awaiting-promotion"
    """Every stage passed; promotion waits for --auto-promote or a person."""
    ROLLING_BACK = "rolling-back"
    """Recorded before the weight goes to 0: a rollback always wins, and one stopped half-way is finished."""
    ROLLED_BACK = "rolled-back"
    PROMOTED = "promoted"


IN_PROGRESS = tuple(s for s in Status if s not in (Status.ROLLED_BACK, Status.PROMOTED))
"""Statuses of a rollout that is not over: it has an owner, or needs one."""

_HELD = (Status.AWAITING_DECISION, Status.AWAITING_WINDOW)
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.DEPLOYING: frozenset({Status.PROGRESSING, *_HELD}),
    Status.PROGRESSING: frozenset({Status.AWAITING_PROMOTION, *_HELD}),
    Status.AWAITING_DECISION: frozenset({Status.PROGRESSING}),
    Status.AWAITING_WINDOW: frozenset({Status.PROGRESSING}),
    Status.AWAITING_PROMOTION: frozenset({Status.PROMOTED, Status.AWAITING_WINDOW}),
    Status.ROLLING_BACK: frozenset({Status.ROLLED_BACK}),
    Status.ROLLED_BACK: frozenset(),
    Status.PROMOTED: frozenset(),
}
"""Where a rollout may go from each status, besides rolling back (from any status that is not over) and staying."""


class Event(StrEnum):
    """What ``events.jsonl`` records (its ``event``), the record's latest decisions carry, notifications name (the
    decisions among them, :data:`canary_checks.config.DECISIONS`) and the report reads."""

    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    SMOKE = "smoke"
    WEIGHT = "weight"
    SCALED = "scaled"
    """The canary is ready at its size for a stage (rollout.scaling proportional), before the weight moves."""
    GATES = "gates"
    """A stage's gate suite ran (one per attempt)."""
    HELD = "held"
    STAGE_PASSED = "stage passed"
    ALL_STAGES_PASSED = "all stages passed"
    PROCEEDED_UNDECIDED = "proceeded undecided"
    AWAITING_DECISION = "awaiting decision"
    OUTSIDE_WINDOW = "outside window"
    RESUMED = "resumed"
    TAKEN_OVER = "taken over"
    ROLLBACK_STARTED = "rollback started"
    ROLLED_BACK = "rolled back"
    AWAITING_PROMOTION = "awaiting promotion"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    NOTIFICATION_FAILED = "notification failed"
    FAULT = "fault"
    """The demo tour's injected fault."""


def can_move(current: str | None, to: Status) -> bool:
    """Whether a rollout in ``current`` may move to ``to`` (None: a new rollout, which starts deploying)."""
    if current is None:
        return to is Status.DEPLOYING
    if to is Status.ROLLING_BACK:
        return current in IN_PROGRESS
    known = current in Status.__members__.values()
    return to == current or (known and to in TRANSITIONS[Status(current)])


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


def stage_of(state: Mapping[str, Any], steps: Sequence[int] = ()) -> int:
    """The stage (percent) the record's rollout is at: its current step's weight, the last one once every step has
    passed (awaiting promotion); ``steps`` where the record has none; 0 without any."""
    recorded = list(state.get("steps") or steps)
    if not recorded:
        return 0
    return int(recorded[max(0, min(int(state.get("step_index", 0)), len(recorded) - 1))])


def version_of(state: Mapping[str, Any] | None) -> int:
    """The record's version (0: no record, or one written before records had versions)."""
    try:
        return int((state or {}).get("version", 0))
    except (TypeError, ValueError):
        return 0
