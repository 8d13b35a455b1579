"""The rollout's ownership: its record, its events, its lease and heartbeat, its status, its stop signals — and
the rollback, which always wins.

:class:`RolloutRecord` is the base the steps build on (:mod:`canary_checks.runner.stages`,
:mod:`canary_checks.runner.rollout`): everything that writes the record or decides whether this runner may still
act goes through it.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import FrameType
from typing import Any

from canary_checks.config import CanaryConfig
from canary_checks.errors import CanaryError
from canary_checks.notify import Decision, Notifier
from canary_checks.prometheus import MetricsSource
from canary_checks.record import IN_PROGRESS, Event, Lease, RecordConflict, Status, can_move, stage_of, version_of
from canary_checks.rundir import RunRecord
from canary_checks.runner.options import Interrupted, Platform, RolledBack, RolloutOptions, Superseded
from canary_checks.traffic import Router

__all__ = ["KEEP_DECISIONS", "RolloutRecord"]

log = logging.getLogger(__name__)
KEEP_DECISIONS = 50
"""The latest decisions the record keeps (it rides in an annotation); events.jsonl has all."""


class RolloutRecord:
    """A rollout's record as this runner owns it: ``state`` (the record: status, stage, weights, decisions, lease)
    written by compare-and-swap over the ``version`` last seen, the run's directory (``run``), the notifier, and
    the stop flags (a signal, or someone else's rollback or takeover)."""

    def __init__(
        self,
        config: CanaryConfig,
        platform: Platform,
        router: Router,
        options: RolloutOptions,
        *,
        source: MetricsSource | None = None,
        echo: Callable[[str], None] = print,
        controller: Callable[[], str | None] = lambda: None,
        router_problems: Callable[[], list[str]] = lambda: [],
        on_wait: Callable[[int, float, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.platform, self.router, self.options = config, platform, router, options
        self.source = source
        self.echo = echo
        self.controller = controller
        self.router_problems = router_problems
        self.on_wait = on_wait
        """Called while a stage waits: (stage, seconds of the step, seconds left); default prints a line."""
        self.clock = clock
        """The wall clock the release windows are read on."""
        self.state: dict[str, Any] = {}
        self.run_record = RunRecord(options.reports, dry_run=options.dry_run)
        """The run's directory (reports/<run-id>/ once the rollout has an id)."""
        self._stop: str | None = None
        self._event_lock = threading.RLock()  # notifications report failures, the heartbeat renews, from threads
        self.notifier = Notifier(config.notifications, on_failure=self._notification_failed)
        self._last_hold: tuple[Any, Any] | None = None
        self.version = 0
        """The record's version this runner last read or wrote: it writes only over that one."""
        self._superseded: Superseded | None = None
        self._rolling_back = False
        self._heartbeat_stop = threading.Event()

    def event(self, name: Event, **details: Any) -> None:
        """Record an event: in the record's latest decisions and events.jsonl (the record saved with it), and to the
        people who hear of decisions."""
        with self._event_lock:
            entry = {"time": time.time(), "event": name.value, **details}
            decisions = self.state.setdefault("decisions", [])
            decisions.append({k: v for k, v in entry.items() if k not in ("junit", "failing_gates")})
            # The record rides in an annotation (the API caps them at 256 KiB): keep the latest; events.jsonl has all.
            del decisions[:-KEEP_DECISIONS]
            self.state["updated"] = entry["time"]
            if not self.options.dry_run:
                self.run_record.append(entry)
                self.save()
            log.info("%s %s", name, details)
        if name is Event.HELD:  # a hold repeats every poll: tell people when it starts or its reason changes
            key = (details.get("stage"), details.get("why"))
            if key == self._last_hold:
                return
            self._last_hold = key
        if not self.options.dry_run and self.notifier.wants(name):
            stage = details.get("stage")
            self.notifier.notify(
                Decision(
                    event=name,
                    service=self.options.service,
                    namespace=self.config.namespace,
                    image=str(details.get("image") or self.options.image),
                    stage=int(stage) if stage is not None else self.current_stage(),
                    why=str(details.get("why", "")),
                    failing=tuple(details.get("failing_gates", ())),
                    time=entry["time"],
                    run_id=str(self.state.get("run_id", "")),
                )
            )

    def lease(self, *, released: bool = False) -> dict[str, Any]:
        o = self.options
        return {**Lease(o.holder, str(self.state.get("run_id", "")), time.time(), o.lease_ttl).as_dict(),
                "released": released}  # fmt: skip

    def save(self, *, released: bool = False) -> None:
        """Write the record over the version last seen, renewing the lease; a change by anyone else stops this
        runner (:meth:`lost`)."""
        with self._event_lock:
            if self._superseded is not None:
                raise self._superseded
            self.state["lease"] = self.lease(released=released)
            for _ in range(5):
                try:
                    self.version = self.platform.write_record(self.state, self.version)
                    return
                except RecordConflict as e:
                    if not self._rolling_back:
                        self.lost(e.current)
                    # a rollback wins: written over whatever was written since (a runner reads it and stops)
                    self.version = version_of(e.current)
            raise CanaryError("the rollout record kept changing under the rollback", where=self.platform.describe())

    def confirm_owner(self) -> None:
        """Read the record again: before a weight change or promotion, nobody else may have written it."""
        if self.options.dry_run:
            return
        with self._event_lock:
            if self._superseded is not None:
                raise self._superseded
            current = self.platform.read_record()
            if version_of(current) != self.version:
                self.lost(current)

    def lost(self, current: dict[str, Any] | None) -> None:
        """Someone else wrote the record: a rollback wins — the weight goes back to 0 in case this runner moved it
        after that rollback did — and a runner that took over owns it now. Either way this runner stops."""
        status = (current or {}).get("status")
        lease = Lease.of(current)
        by = lease.holder if lease else "someone else"
        if status in (Status.ROLLED_BACK, Status.ROLLING_BACK):
            why = next((d.get("why", "") for d in reversed((current or {}).get("decisions", []))
                        if d.get("event") in (Event.ROLLBACK_STARTED, Event.ROLLED_BACK)), "")  # fmt: skip
            if self.router.get_weight() != 0:
                self.router.set_weight(0)
            error = Superseded(
                f"rolled back by {by}{f' ({why})' if why else ''}: this runner stopped and changes nothing more",
                where=self.platform.describe(),
            )
        else:
            error = Superseded(
                f"the rollout is now held by {by} (status {status}): this runner stopped and changes nothing more",
                where=self.platform.describe(),
            )
        self._superseded = error
        raise error

    def _heartbeat(self) -> None:
        """Renew the lease while the runner waits on something long (a suite, a rollout, a step)."""
        while not self._heartbeat_stop.wait(max(0.5, self.options.lease_ttl / 3)):
            try:
                self.save()
            except Superseded:
                return  # the main thread sees it at its next safe point
            except CanaryError as e:  # the API or the file is unreachable: keep trying; the lease runs out if not
                log.warning("could not renew the lease: %s", e.message)

    def _notification_failed(self, target: str, error: str) -> None:
        log.warning("notification to %s failed: %s", target, error)
        try:
            self.event(Event.NOTIFICATION_FAILED, target=target, error=error)
        except Exception as e:  # the record could not be written either: the log line above remains
            log.warning("could not record the failed notification: %s", e)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = signal.Signals(signum).name
        self.echo(f"{self._stop}: stopping at the next safe point (the weight change in flight completes)")

    def _check_stop(self) -> None:
        if self._superseded is not None:
            raise self._superseded
        if self._stop:
            weight = int(self.state.get("weight") or 0)
            where = f"at stage {self.current_stage()} %" if weight else "before any traffic moved to the canary"
            raise Interrupted(
                f"stopped by {self._stop} {where} with the weights as they are",
                fix=f"run '{self.command()}' again to resume (its gates run again), or add --rollback to roll back",
            )

    def command(self, image: Any = None, *flags: str) -> str:
        """The command that acts on this rollout, as messages tell people to run it (with its router)."""
        router = f" --router {self.options.router_kind}" if self.options.router_kind else ""
        return " ".join((f"canary-checks run {self.options.service} {image or self.options.image}{router}", *flags))

    @property
    def with_baseline(self) -> bool:
        """Whether this rollout compares the canary with a baseline (recorded when it started)."""
        return bool(self.state.get("baseline"))

    def follow_record_baseline(self) -> None:
        """A resumed rollout keeps the baseline it started with, whatever this run's config says: its polls and
        suites judge the canary against what the record says it runs beside."""
        if self.with_baseline != self.config.baseline.enabled:
            self.config = self.config.with_baseline(self.with_baseline)

    def current_stage(self) -> int:
        return stage_of(self.state, self.options.steps)

    def rollback(self, why: str, failing: Sequence[Mapping[str, str]] = ()) -> None:
        """Roll back: recorded first (a rollback wins over any other writer of the record, and a live runner reads
        it before its next weight change), then weight 0 confirmed by the router, then the canary scaled down."""
        verdict_at = time.time()
        self.echo(f"rolling back: {why}")
        with self._event_lock:
            self._rolling_back, self._superseded = True, None
        self.move(Status.ROLLING_BACK)
        self.event(Event.ROLLBACK_STARTED, why=why, by=self.options.holder)
        # Traffic first: nothing else matters until the canary gets no request.
        confirmed = self.router.set_weight(0)
        weight_zero_at = time.time()
        self.state["weight"] = confirmed
        self.event(Event.WEIGHT, weight=0, rollback_seconds=round(weight_zero_at - verdict_at, 3))
        self.platform.scale_canary(0)
        self.platform.stop_baseline()  # whether or not this runner knew of one: a rollback leaves none running
        self.move(Status.ROLLED_BACK)
        self.event(
            Event.ROLLED_BACK,
            why=why,
            by=self.options.holder,
            rollback_seconds=round(weight_zero_at - verdict_at, 3),
            failing_gates=list(failing),
        )
        raise RolledBack(why)

    def _acquire(self, previous: dict[str, Any] | None) -> None:
        """Take the rollout: the first write of a new record, over what was read — a second runner started at the
        same moment loses here, before it changed anything."""
        if self.options.dry_run:
            return
        try:
            self.save()
        except Superseded:
            lease = Lease.of(self.platform.read_record())
            raise CanaryError(
                f"another runner started a rollout of {self.options.service} at the same moment: "
                f"{lease.describe() if lease else 'unknown'}",
                where=self.platform.describe(),
                fix="let that one run; nothing was changed by this one",
            ) from None
        earlier = Lease.of(previous)
        if previous is not None and previous.get("status") in IN_PROGRESS and earlier is not None:
            self.event(Event.TAKEN_OVER, previous=earlier.as_dict())

    def _release(self) -> None:
        """A deliberate stop: the lease is released, so the next run resumes at once (the watchdog still rolls
        back a rollout nobody resumes within the lease's time)."""
        if self.options.dry_run or self._superseded is not None or self.state.get("status") not in IN_PROGRESS:
            return
        lease = Lease.of(self.state)
        if lease is None or lease.holder != self.options.holder:
            return  # never took it (refused before its first write)
        try:
            self.save(released=True)
        except CanaryError as e:
            log.warning("could not release the lease: %s", e.message)

    # ---- status ----

    @property
    def status(self) -> str:
        return str(self.state.get("status", ""))

    def move(self, to: Status) -> None:
        """The rollout's status goes to ``to``, only along :data:`~canary_checks.record.TRANSITIONS` (a rollback
        from any status that is not over): a step out of order is a bug, stopped before the record says it."""
        current = self.state.get("status")
        if not can_move(current, to):
            raise CanaryError(f"a rollout {current} cannot become {to}", where=self.platform.describe())
        self.state["status"] = to.value
