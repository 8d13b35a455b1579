"""What `canary-checks run` does: stages' policies when the checks cannot decide, release windows and what
happens outside them, the canary's size at each stage (scaling), and the baseline it compares the canary with.

Seam: the models only; the runner is :mod:`canary_checks.runner`, the window arithmetic :mod:`canary_checks.windows`
(imported lazily when a window is validated)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from canary_checks.config.units import PODS, Duration, _Model


class UndecidedPolicy(StrEnum):
    HOLD = "hold"
    """Keep the canary at its weight and stop (exit 3): a person decides — 'canary-checks run' again to look again,
    with --proceed to go on, or --rollback. For services where a wrong release costs more than a slow one."""
    ROLLBACK = "rollback"
    """Roll back as for a failing gate: a release must prove it is no worse than stable. For strict services with
    enough traffic that an undecided comparison is itself a warning sign."""
    PROCEED = "proceed"
    """Go on to the next stage (recorded and announced): the fixed gates passed, and the comparisons keep
    accumulating evidence at the next, larger share. For low-traffic services whose early stages cannot decide."""


class OutsideWindow(StrEnum):
    WAIT = "wait"
    """The runner stays at its stage until a window opens, polling the critical gates (a failure still rolls back),
    then goes on. For a runner that lives as long as the rollout (a Kubernetes Job, a workstation)."""
    HOLD = "hold"
    """The runner stops (exit 3) with the canary at its weight and the rollout recorded as awaiting-window;
    'canary-checks run' again inside a window goes on. For CI jobs, which cannot wait over a weekend."""


class ReleaseWindows(_Model):
    """When a rollout may move forward: deploy a canary, raise its weight, promote it. A rollback is never held."""

    timezone: str = "UTC"
    """IANA time zone the windows and blackout dates are written in (Europe/Berlin, America/New_York)."""
    allowed: tuple[str, ...] | None = None
    """Cron expressions (minute hour day-of-month month day-of-week); a minute that matches any of them is inside a
    window: '* 9-16 * * mon-thu' is Monday to Thursday 09:00-16:59. Unset: every minute not blacked out."""
    blackout: tuple[str, ...] = ()
    """Dates (2026-12-24) or inclusive ranges of dates (2026-12-20..2027-01-03) when nothing moves forward, even
    inside an allowed window."""
    outside: OutsideWindow = OutsideWindow.WAIT
    """What the runner does when the next step falls outside the windows: wait or hold."""

    @model_validator(mode="before")
    @classmethod
    def _no_empty_allowed(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and value.get("allowed") is not None and not value["allowed"]:
            raise ValueError(
                "allowed is empty, which would read as 'every minute': leave it out to allow every minute, list "
                "cron windows ('* 9-16 * * mon-thu'), or list dates under blackout to stop rollouts for a while"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from canary_checks.windows import zone

        zone(value)
        return value

    @field_validator("allowed")
    @classmethod
    def _allowed(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        from canary_checks.windows import check_cron

        for expression in value or ():
            check_cron(expression)
        return value

    @field_validator("blackout", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        """YAML reads an unquoted 2026-12-24 as a date: take it as written; one date alone is a list of one."""
        items = value if isinstance(value, list | tuple) else [value]
        return [v.isoformat() if isinstance(v, date) else v for v in items]

    @field_validator("blackout")
    @classmethod
    def _blackout(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from canary_checks.windows import blackout_range

        for text in value:
            blackout_range(text)
        return value


class ScalingMode(StrEnum):
    FIXED = "fixed"
    """The canary keeps the replicas it is deployed with (1) at every stage, as before scaling existed."""
    PROPORTIONAL = "proportional"
    """At each stage the canary gets ceil(stable's replicas x the stage's weight), within min and max, and is ready
    at that size before the weight moves (Argo Rollouts' setCanaryScale with matchTrafficWeight)."""


class Scaling(_Model):
    """The canary's size at each stage: a canary of one pod at 50 % of the traffic is overloaded, and its latency
    then says nothing about the release."""

    mode: ScalingMode = ScalingMode.FIXED
    """fixed (the canary keeps its replicas) or proportional (its replicas follow its weight)."""
    min: int | None = None
    """Fewest canary replicas at any stage with traffic (proportional; unset: 1)."""
    max: int | None = None
    """Most canary replicas at any stage (proportional; unset: as many as stable has)."""

    @model_validator(mode="after")
    def _bounds(self) -> Scaling:
        for key in ("min", "max"):
            value = getattr(self, key)
            if value is None:
                continue
            if self.mode is ScalingMode.FIXED:
                raise ValueError(
                    f"{key} applies to mode: proportional (with mode: fixed the canary keeps its replicas); set "
                    f"mode: proportional or remove {key}"
                )
            if value < 1:
                raise ValueError(f"{key}: expected a count of replicas ≥ 1 (a canary with traffic needs a pod); "
                                 f"got {value}")  # fmt: skip
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max}): no canary size is within both")
        return self

    @property
    def proportional(self) -> bool:
        return self.mode is ScalingMode.PROPORTIONAL

    def canary_replicas(self, stable: int, weight: int) -> int:
        """The canary's replicas at ``weight`` percent beside ``stable`` replicas: ceil(stable x weight / 100)
        within min and max (never fewer than one pod for any traffic); 0 at weight 0."""
        if weight <= 0:
            return 0
        wanted = -(-max(0, stable) * min(weight, 100) // 100)  # ceil in whole numbers: no float rounding
        wanted = max(wanted, self.min or 1)
        return min(wanted, self.max) if self.max is not None else wanted


class RolloutSettings(_Model):
    """What the runner (canary-checks run) does when a stage cannot decide, and when it may move forward."""

    on_undecided: UndecidedPolicy = UndecidedPolicy.HOLD
    """When every fixed gate passed but a canary-vs-stable comparison still has too few requests to decide at the
    end of the stage's extension: hold, rollback or proceed. Missing data (no traffic, Prometheus unreadable) always
    rolls back."""
    max_extension: Duration | None = None
    """How long a stage whose checks cannot decide yet may run past its step duration, looking again every poll
    interval; unset: as long again as the step."""
    release_windows: ReleaseWindows | None = None
    """When the rollout may move forward (a time zone, allowed cron windows, blackout dates); unset: at any time."""
    scaling: Scaling = Field(default_factory=Scaling)
    """The canary's replicas at each stage: fixed, or proportional to its weight
    (docs/runner.md#capacity-follows-weight)."""


class Baseline(_Model):
    """A fresh copy of stable, started with the canary and judged beside it (Kayenta's practice): the canary is
    compared with pods as new as itself, not with stable's long-running ones, whose age — warm caches, JIT, filled
    connection pools — would otherwise count against the release. The runner starts a Deployment of stable's image
    and spec (workloads.baseline), routes it the canary's share of traffic (at most what stable keeps), points every
    comparison at it, and removes it on promotion and on rollback."""

    enabled: bool = False
    """Compare the canary with a baseline Deployment instead of stable (`canary-checks run --baseline` turns it on
    for one rollout). Routers: sandbox, istio (a `baseline` subset), linkerd and gateway-api (a
    {service}-baseline Service); not with routing.sticky."""
    replicas: Annotated[int, PODS] = 1
    """Pods of the baseline: as many as the canary has, so both run at the same load per pod (with
    rollout.scaling.mode proportional it follows the canary's size at each stage)."""


def baseline_share(weight: int) -> int:
    """The baseline's share of traffic when the canary has ``weight`` percent: the same share, as long as stable
    keeps as much (at 50 % stable then carries nothing; at 100 % the baseline is gone)."""
    return min(weight, 100 - weight)
