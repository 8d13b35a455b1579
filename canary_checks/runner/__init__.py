"""The progressive rollout, and running the gate suite for a stage (pytest in a subprocess, JUnit read back).

The runner is thin: the decisions are the gate suite's. For each stage it sets the canary's weight, waits the step
duration while polling the critical gates, runs ``pytest suites/gate --stage N``, and moves on only when that passes.
A failing gate rolls back: weight 0 first (confirmed by the router), then the canary scaled down. The rollout's
record (stage, weights, decisions) lives where it survives the runner (:class:`Platform`), so a second
``canary-checks run`` resumes it — re-running the current stage's gates, never skipping them — or rolls it back.
Every decision goes to ``reports/<run-id>/events.jsonl``. The library never imports ``suites/``.

The package: ``options`` (what a rollout is asked, its exit codes and stops, its :class:`Platform`), ``ownership``
(the record, events, lease, heartbeat, status moves and the rollback), ``stages`` (a stage's weight, wait, polls
and gate suite, the release windows) and ``rollout`` (:class:`Rollout`: start, resume, deploy, promote).
"""

from canary_checks.runner.options import (
    HELD_EXIT,
    INTERRUPTED_EXIT,
    LEASE_TTL,
    SUPERSEDED_EXIT,
    AwaitingDecision,
    AwaitingWindow,
    Interrupted,
    Platform,
    RolledBack,
    RolloutOptions,
    Superseded,
)
from canary_checks.runner.rollout import Rollout

__all__ = [
    "HELD_EXIT",
    "INTERRUPTED_EXIT",
    "LEASE_TTL",
    "SUPERSEDED_EXIT",
    "AwaitingDecision",
    "AwaitingWindow",
    "Interrupted",
    "Platform",
    "RolledBack",
    "Rollout",
    "RolloutOptions",
    "Superseded",
]
