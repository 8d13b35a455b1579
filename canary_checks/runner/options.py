"""The rollout's options, its outcomes (exit codes and the exceptions that stop it) and where its canary runs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from canary_checks.config import OutsideWindow, UndecidedPolicy
from canary_checks.errors import CanaryError
from canary_checks.record import holder_id

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
    "RolloutOptions",
    "Superseded",
]

HELD_EXIT = 3
"""Exit code of a rollout held for a person's decision (on_undecided: hold)."""
SUPERSEDED_EXIT = 4
"""Exit code of a runner that stopped because someone else rolled its rollout back or took it over."""
INTERRUPTED_EXIT = 130
"""Exit code of a runner stopped by SIGINT or SIGTERM at a safe point."""
LEASE_TTL = 60.0
"""Seconds of a runner's silence after which its lease has expired (run --lease-ttl)."""


class Platform(Protocol):
    """Where the canary runs (a Kubernetes namespace, the sandbox) and where the rollout's record is kept."""

    def describe(self) -> str: ...
    def validate(self) -> list[str]: ...
    def read_record(self) -> dict[str, Any] | None: ...
    def write_record(self, state: dict[str, Any], expected: int) -> int: ...
    def stable_image(self) -> str: ...
    def deploy_canary(self, image: str) -> None: ...
    def wait_canary_ready(self, timeout: float, progress: Callable[[str], None]) -> None: ...
    def scale_canary(self, replicas: int) -> None: ...
    def start_baseline(self, replicas: int, timeout: float, progress: Callable[[str], None]) -> None: ...
    def stop_baseline(self) -> None: ...
    def stable_replicas(self) -> int: ...
    def promote(
        self, image: str, timeout: float, progress: Callable[[str], None], *, replicas: int | None = None
    ) -> None:
        """Stable gets ``image`` (and ``replicas``, its size before the rollout, when given) and is waited for."""
        ...


class Interrupted(CanaryError):
    """SIGINT or SIGTERM arrived; the rollout stopped at a safe point with its record saved."""


class RolledBack(CanaryError):
    """A stage failed and the canary was rolled back."""


class Superseded(CanaryError):
    """Someone else rolled the rollout back or took it over: this runner stopped and changes nothing more."""


class AwaitingDecision(CanaryError):
    """A stage could not decide and the policy is to hold: the weight stays, a person decides."""


class AwaitingWindow(AwaitingDecision):
    """The next step falls outside the release windows and the policy is to hold: the weight stays until a run
    inside a window goes on."""


@dataclass
class RolloutOptions:
    """What ``canary-checks run`` (or the watchdog) asks of a rollout."""

    service: str
    image: str
    steps: tuple[int, ...] = (5, 25, 50, 100)
    step_duration: float = 300.0
    """Seconds each stage runs before its gate suite."""
    poll_interval: float = 10.0
    """Seconds between polls of the critical gates during a stage."""
    ready_timeout: float = 300.0
    suite: Path = Path("suites/gate")
    smoke_suite: Path | None = None
    """Run against the canary once it is ready, before its first weight; a failure rolls back."""
    reports: Path = Path("reports")
    config_path: Path | None = None
    thresholds: dict[str, dict[str, Any]] = field(default_factory=dict)
    """--threshold style overrides passed to the suite and the polls (--error-threshold, --latency-p95)."""
    auto_promote: bool = False
    dry_run: bool = False
    skip_validation: bool = False
    rollback: bool = False
    """Roll back the rollout in progress and stop."""
    confirm: Callable[[str], bool] | None = None
    """Asks a person (None: no terminal)."""
    suite_args: tuple[str, ...] = ()
    """More arguments for the gate suite (--service, --namespace of this run)."""
    on_undecided: UndecidedPolicy | None = None
    """What a stage whose comparisons cannot decide does at the end of its extension (None: rollout.on_undecided)."""
    max_extension: float | None = None
    """Seconds a stage that cannot decide may run past its step (None: rollout.max_extension, else the step)."""
    proceed: bool = False
    """A person's decision for a rollout awaiting one: count the held stage as passed and go on."""
    lease_ttl: float = LEASE_TTL
    """Seconds of this runner's silence after which another runner may take over, or the watchdog rolls back."""
    holder: str = field(default_factory=holder_id)
    """Who this runner is, as the lease and the messages name it."""
    rollback_why: str = "--rollback asked for it"
    """Why a rollback asked for with ``rollback`` happens (the watchdog says the runner went silent)."""
    rollback_if_silent: bool = False
    """The watchdog's rollback: only when the rollout's lease has still expired as it is read."""
    router_kind: str = ""
    """What moves the traffic (istio, linkerd, gateway-api, sandbox): recorded, so the watchdog can roll back."""
    handle_signals: bool = True
    """Stop at a safe point on SIGINT/SIGTERM; off where the caller handles them (the watchdog's own loop)."""
    outside_window: OutsideWindow | None = None
    """Wait or hold when a step falls outside the release windows (None: rollout.release_windows.outside)."""
