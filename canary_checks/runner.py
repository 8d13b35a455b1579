"""The progressive rollout, and running the gate suite for a stage (pytest in a subprocess, JUnit read back).

The runner is thin: the decisions are the gate suite's. For each stage it sets the canary's weight, waits the step
duration while polling the critical gates, runs ``pytest suites/gate --stage N``, and moves on only when that passes.
A failing gate rolls back: weight 0 first (confirmed by the router), then the canary scaled down. The rollout's
record (stage, weights, decisions) lives where it survives the runner (:class:`Platform`), so a second
``canary-checks run`` resumes it — re-running the current stage's gates, never skipping them — or rolls it back.
Every decision goes to ``reports/<run-id>/events.jsonl``. The library never imports ``suites/``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from canary_checks.compare import comparisons_of, evaluate_comparisons
from canary_checks.config import CanaryConfig, OutsideWindow, Severity, UndecidedPolicy
from canary_checks.errors import CanaryError, PrometheusError
from canary_checks.gates import GateResult, Verdict, evaluate, gates_of
from canary_checks.notify import Decision, Notifier
from canary_checks.prometheus import MetricsSource
from canary_checks.record import IN_PROGRESS, Lease, RecordConflict, holder_id, version_of
from canary_checks.report import GateRecord, build_report, new_run_id, record_series, write_run
from canary_checks.suite import SuiteRun, decide_stage, record_needs, run_suite, validate
from canary_checks.traffic import Router
from canary_checks.windows import check as check_window

__all__ = ["Platform", "Rollout", "RolloutOptions"]

log = logging.getLogger(__name__)
HELD_EXIT = 3
"""Exit code of a rollout held for a person's decision (on_undecided: hold)."""
SUPERSEDED_EXIT = 4
"""Exit code of a runner that stopped because someone else rolled its rollout back or took it over."""
LEASE_TTL = 60.0
"""Seconds of a runner's silence after which its lease has expired (run --lease-ttl)."""
KEEP_DECISIONS = 50


def _gate_fields(r: GateRecord | GateResult) -> dict[str, str]:
    """A failing gate as notifications and the event log carry it (from the suite's JUnit or a poll's result)."""
    if isinstance(r, GateResult):
        value = "" if r.value is None else f"{r.value:.6g}"
        return {"gate": r.gate, "verdict": r.verdict.value, "value": value, "threshold": f"{r.threshold:g}",
                "unit": r.unit, "summary": r.summary}  # fmt: skip
    return {"gate": r.gate or r.test.rpartition("::")[2], "verdict": r.verdict or r.outcome, "value": r.value,
            "threshold": r.threshold,
            "unit": r.unit, "summary": r.summary}  # fmt: skip


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
    def promote(self, image: str, timeout: float, progress: Callable[[str], None]) -> None: ...


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


class Rollout:
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
        self.config, self.platform, self.router, self.o = config, platform, router, options
        self.source = source
        self.echo = echo
        self.controller = controller
        self.router_problems = router_problems
        self.on_wait = on_wait
        """Called while a stage waits: (stage, seconds of the step, seconds left); default prints a line."""
        self.clock = clock
        """The wall clock the release windows are read on."""
        self.state: dict[str, Any] = {}
        self.run_dir = options.reports
        self._stop: str | None = None
        self._event_lock = threading.RLock()  # notifications report failures, the heartbeat renews, from threads
        self.notifier = Notifier(config.notifications, on_failure=self._notification_failed)
        self._last_hold: tuple[Any, Any] | None = None
        self.version = 0
        """The record's version this runner last read or wrote: it writes only over that one."""
        self._superseded: Superseded | None = None
        self._rolling_back = False
        self._heartbeat_stop = threading.Event()

    # ---- record and events ----

    def event(self, name: str, **details: Any) -> None:
        with self._event_lock:
            entry = {"time": time.time(), "event": name, **details}
            decisions = self.state.setdefault("decisions", [])
            decisions.append({k: v for k, v in entry.items() if k not in ("junit", "failing_gates")})
            # The record rides in an annotation (the API caps them at 256 KiB): keep the latest; events.jsonl has all.
            del decisions[:-KEEP_DECISIONS]
            self.state["updated"] = entry["time"]
            if not self.o.dry_run:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with open(self.run_dir / "events.jsonl", "a") as f:
                    f.write(json.dumps(entry, sort_keys=True) + "\n")
                self.save()
            log.info("%s %s", name, details)
        if name == "held":  # a hold repeats every poll: tell people when it starts or its reason changes
            key = (details.get("stage"), details.get("why"))
            if key == self._last_hold:
                return
            self._last_hold = key
        if not self.o.dry_run and self.notifier.wants(name):
            stage = details.get("stage")
            self.notifier.notify(
                Decision(
                    event=name,
                    service=self.o.service,
                    namespace=self.config.namespace,
                    image=str(details.get("image") or self.o.image),
                    stage=int(stage) if stage is not None else self.current_stage(),
                    why=str(details.get("why", "")),
                    failing=tuple(details.get("failing_gates", ())),
                    time=entry["time"],
                    run_id=str(self.state.get("run_id", "")),
                )
            )

    # ---- ownership: the record is written by compare-and-swap, the lease renewed with every write ----

    def lease(self, *, released: bool = False) -> dict[str, Any]:
        return {**Lease(self.o.holder, str(self.state.get("run_id", "")), time.time(), self.o.lease_ttl).as_dict(),
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
        if self.o.dry_run:
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
        if status in ("rolled-back", "rolling-back"):
            why = next((d.get("why", "") for d in reversed((current or {}).get("decisions", []))
                        if d.get("event") in ("rollback started", "rolled back")), "")  # fmt: skip
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
        while not self._heartbeat_stop.wait(max(0.5, self.o.lease_ttl / 3)):
            try:
                self.save()
            except Superseded:
                return  # the main thread sees it at its next safe point
            except CanaryError as e:  # the API or the file is unreachable: keep trying; the lease runs out if not
                log.warning("could not renew the lease: %s", e.message)

    def _notification_failed(self, target: str, error: str) -> None:
        log.warning("notification to %s failed: %s", target, error)
        try:
            self.event("notification failed", target=target, error=error)
        except Exception as e:  # the record could not be written either: the log line above remains
            log.warning("could not record the failed notification: %s", e)

    # ---- signals ----

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = signal.Signals(signum).name
        self.echo(f"{self._stop}: stopping at the next safe point (the weight change in flight completes)")

    def _check_stop(self) -> None:
        if self._superseded is not None:
            raise self._superseded
        if self._stop:
            raise Interrupted(
                f"stopped by {self._stop} at stage {self.current_stage()} % with the weights as they are",
                fix=f"run '{self.command()}' again to resume (its gates run again), or add --rollback to roll back",
            )

    # ---- steps ----

    def command(self, image: Any = None, *flags: str) -> str:
        """The command that acts on this rollout, as messages tell people to run it (with its router)."""
        router = f" --router {self.o.router_kind}" if self.o.router_kind else ""
        return " ".join((f"canary-checks run {self.o.service} {image or self.o.image}{router}", *flags))

    def current_stage(self) -> int:
        steps = self.state.get("steps") or list(self.o.steps)
        index = min(int(self.state.get("step_index", 0)), len(steps) - 1)
        return int(steps[index])

    def set_weight(self, percent: int) -> None:
        if self.o.dry_run:
            self.echo(f"would set the canary weight to {percent} % (stable {100 - percent} %)")
            return
        self.confirm_owner()
        confirmed = self.router.set_weight(percent)
        self.state["weight"] = confirmed
        self.event("weight", weight=confirmed, stage=self.current_stage())

    def run(self) -> int:
        """Run (or resume, or roll back) the rollout; returns the process exit code."""
        main = self.o.handle_signals and threading.current_thread() is threading.main_thread()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        for s in previous:
            signal.signal(s, self._on_signal)
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True, name="lease-heartbeat")
        try:
            return self._run(heartbeat)
        except RolledBack as e:
            self.echo(f"rolled back: {e.what}")
            return 1
        except Superseded as e:
            self.echo(e.message)
            return SUPERSEDED_EXIT
        except AwaitingDecision as e:
            self.echo(e.message)
            return HELD_EXIT
        except Interrupted as e:
            self.echo(e.message)
            return 130
        finally:
            self._heartbeat_stop.set()
            if heartbeat.is_alive():
                heartbeat.join(timeout=5)
            self._release()  # stopped, held or awaiting promotion: the next run may resume at once
            for s, handler in previous.items():
                signal.signal(s, handler)
            # the decisions are carried out; give the notifications still in flight their bounded time
            self.notifier.flush()
            self.write_report()

    def write_report(self) -> None:
        """``reports/<run-id>/``: what ran, the series over the run, summary.json and report.html."""
        if self.o.dry_run or not self.state.get("run_id") or not (self.run_dir / "events.jsonl").exists():
            return
        now = time.time()
        try:
            write_run(self.run_dir, kind="rollout", service=self.o.service, namespace=self.config.namespace,
                      image=self.state.get("image"), steps=self.state.get("steps"),
                      started=self.state.get("started"), ended=now, status=self.state.get("status"))  # fmt: skip
            if self.source is not None:
                record_series(self.config, self.source, self.run_dir, float(self.state.get("started", now)), now)
            self.echo(f"report: {build_report(self.run_dir)}")
        except Exception as e:  # in `finally`: the report must never replace the rollout's own outcome
            what = e.message if isinstance(e, CanaryError) else f"{e.__class__.__name__}: {e}"
            self.echo(f"the report could not be written: {what} (events.jsonl has every decision)")

    def _run(self, heartbeat: threading.Thread) -> int:
        existing = self.platform.read_record()
        self.version = version_of(existing)
        in_progress = existing is not None and existing.get("status") in IN_PROGRESS
        if self.o.rollback:
            if existing is None or not in_progress:
                self.echo(f"no rollout of {self.o.service} is in progress: nothing to roll back")
                return 0
            lease = Lease.of(existing)
            if self.o.rollback_if_silent and lease is not None and not lease.expired():
                self.echo(f"{self.o.service}: {lease.holder} took the rollout over meanwhile; leaving it to it")
                return 0
            return self._rollback_other(existing)
        if existing is not None and in_progress:
            self._resume(existing)
        else:
            if self.o.proceed:
                raise CanaryError(
                    f"no rollout of {self.o.service} awaits a decision: --proceed has nothing to decide",
                    fix="leave out --proceed to start a rollout",
                )
            self.check_suites()
            run_id = new_run_id("rollout")
            self.run_dir = self.o.reports / run_id
            self.state = {
                "run_id": run_id,
                "service": self.o.service,
                "image": self.o.image,
                "steps": list(self.o.steps),
                "step_index": 0,
                "status": "deploying",
                "started": time.time(),
                "router": self.o.router_kind,
            }
            if not self.o.skip_validation:
                self.validate()
            self.await_window(f"deploying {self.o.image}", None)
            self._acquire(existing)
        if not self.o.dry_run:
            heartbeat.start()
        if self.state["status"] == "deploying":  # new, or stopped while the canary was rolling out
            self.deploy()
        if self.state["status"] in ("deploying", "progressing"):
            self.progress()
        return self.finish()

    def _acquire(self, previous: dict[str, Any] | None) -> None:
        """Take the rollout: the first write of a new record, over what was read — a second runner started at the
        same moment loses here, before it changed anything."""
        if self.o.dry_run:
            return
        try:
            self.save()
        except Superseded:
            lease = Lease.of(self.platform.read_record())
            raise CanaryError(
                f"another runner started a rollout of {self.o.service} at the same moment: "
                f"{lease.describe() if lease else 'unknown'}",
                where=self.platform.describe(),
                fix="let that one run; nothing was changed by this one",
            ) from None
        earlier = Lease.of(previous)
        if previous is not None and previous.get("status") in IN_PROGRESS and earlier is not None:
            self.event("taken over", previous=earlier.as_dict())

    def _resume(self, existing: dict[str, Any]) -> None:
        lease = Lease.of(existing)
        if lease is not None and not lease.expired() and not existing["lease"].get("released"):
            raise CanaryError(
                f"the rollout of {existing.get('image')} (run {existing.get('run_id')}) is being run by "
                f"{lease.describe()}",
                where=self.platform.describe(),
                fix=f"let it finish; stop it (Ctrl-C or SIGTERM to that process) and run this again to resume; or roll "
                f"it back now with '{self.command(existing.get('image'), '--rollback')}'. If that "
                f"runner died, this command takes over once its lease expires ({lease.ttl:g} s after it was last "
                "heard from), and 'canary-checks watch' rolls it back",
            )
        if existing.get("status") == "rolling-back":  # a rollback that stopped half-way: finish it, never resume
            self.state = existing
            self.run_dir = self.o.reports / existing["run_id"]
            self.rollback(f"finishing the rollback {lease.holder if lease else 'someone'} started")
        if existing.get("image") != self.o.image:
            raise CanaryError(
                f"a rollout of {existing.get('image')} (run {existing.get('run_id')}) is in progress at stage "
                f"{existing.get('steps', [0])[existing.get('step_index', 0)]} %",
                where=self.platform.describe(),
                fix=f"resume it with '{self.command(existing.get('image'))}', or roll it back "
                f"with '{self.command(existing.get('image'), '--rollback')}'",
            )
        if self.o.proceed and existing.get("status") != "awaiting-decision":
            raise CanaryError(
                f"the rollout of {self.o.image} is {existing.get('status')}, not awaiting a decision: --proceed has "
                "nothing to decide",
                fix="leave out --proceed to resume it",
            )
        self.state = existing
        self.run_dir = self.o.reports / existing["run_id"]
        self.check_suites()
        self._acquire(None)
        if lease is not None and lease.holder != self.o.holder:
            self.event("taken over", previous=lease.as_dict())
        if self.state["status"] == "awaiting-decision" and self.o.proceed:
            self.event("proceeded undecided", stage=self.current_stage(), why="--proceed: a person decided")
            self.echo(f"stage {self.current_stage()} % counted as passed (--proceed); going on")
            self.state["step_index"] = int(self.state["step_index"]) + 1
        else:
            self.echo(
                f"resuming run {existing['run_id']} of {self.o.image} at stage {self.current_stage()} % "
                "(its gates run again from the start of the stage)"
            )
        if self.state["status"] in ("awaiting-decision", "awaiting-window"):
            self.state["status"] = "progressing"
        self.event("resumed", stage=self.current_stage())

    def _rollback_other(self, existing: dict[str, Any]) -> int:
        """``--rollback`` (or the watchdog): whoever runs the rollout, alive or not, it is rolled back — recorded
        first, so a live runner stops before its next weight change, then the weight goes to 0."""
        self.state = existing
        self.run_dir = self.o.reports / existing["run_id"]
        try:
            self.rollback(self.o.rollback_why)
        except RolledBack:
            self.echo(f"rolled back run {existing['run_id']} of {existing.get('image')}")
        return 0

    def _release(self) -> None:
        """A deliberate stop: the lease is released, so the next run resumes at once (the watchdog still rolls
        back a rollout nobody resumes within the lease's time)."""
        if self.o.dry_run or self._superseded is not None or self.state.get("status") not in IN_PROGRESS:
            return
        lease = Lease.of(self.state)
        if lease is None or lease.holder != self.o.holder:
            return  # never took it (refused before its first write)
        try:
            self.save(released=True)
        except CanaryError as e:
            log.warning("could not release the lease: %s", e.message)

    def check_suites(self) -> None:
        """The suites must collect before anything is deployed or any weight moves (pytest --collect-only)."""
        suites: list[tuple[Path, int | None]] = [(self.o.suite, self.o.steps[0])]
        if self.o.smoke_suite is not None:
            suites.append((self.o.smoke_suite, None))
        for suite, stage in suites:
            problem = validate(suite, stage, config_path=self.o.config_path, extra_args=self.o.suite_args)
            if problem:
                raise CanaryError(
                    problem,
                    where=str(suite),
                    fix="fix the suite (try 'pytest --collect-only' on it), or point --suite at another; nothing "
                    "was deployed",
                )

    def validate(self) -> None:
        problems = list(self.platform.validate())
        owner = self.controller()
        if owner:
            problems.append(
                f"the routing resource is managed by {owner}: two controllers would fight over the weights; "
                "let that controller run the rollout (see docs) or remove it from the resource"
            )
        if self.source is not None:
            try:
                self.source.query("vector(1)")
            except CanaryError as e:
                problems.append(e.message)
        try:
            self.router.get_weight()
            problems.extend(self.router_problems())
        except CanaryError as e:
            problems.append(e.message)
        if problems:
            raise CanaryError(
                "cannot start the rollout:\n  - " + "\n  - ".join(problems),
                fix="fix the above, or pass --skip-validation if you know better",
            )
        self.echo(f"validated: {self.platform.describe()}, routing, Prometheus")

    def deploy(self) -> None:
        self.state["previous_image"] = self.platform.stable_image()
        if self.o.dry_run:
            self.echo(f"would set the canary's image to {self.o.image}, scale it up and wait until it is ready")
            self.state["status"] = "progressing"
            return
        self.event("deploying", image=self.o.image, stable_image=self.state["previous_image"])
        self.platform.deploy_canary(self.o.image)
        self.platform.wait_canary_ready(self.o.ready_timeout, self.echo)
        self.event("deployed", image=self.o.image)
        self.smoke()
        self.state["status"] = "progressing"

    def smoke(self) -> None:
        """The smoke suite through the header route, while the canary has no weighted traffic."""
        if self.o.smoke_suite is None:
            return
        run = run_suite(self.o.smoke_suite, None, self.run_dir / "smoke-canary.xml", config_path=self.o.config_path,
                        extra_args=["--target=canary", *self.o.suite_args])  # fmt: skip
        self.event("smoke", passed=run.passed, exit_code=run.exit_code, junit=str(run.junit),
                   failing={r.test.rpartition("::")[2]: r.summary for r in run.failing})  # fmt: skip
        if run.passed:
            self.echo(f"smoke: all {len(run.records)} checks passed against the canary")
            return
        why = "; ".join(f"{r.test.rpartition('::')[2]} ({r.summary or r.message.splitlines()[0]})" for r in run.failing)
        self.rollback(f"smoke checks failed before any traffic moved: {why or run.output[-500:]}",
                      failing=[_gate_fields(r) for r in run.failing])  # fmt: skip

    def progress(self) -> None:
        steps = [int(s) for s in self.state["steps"]]
        while int(self.state["step_index"]) < len(steps):
            self._check_stop()
            index = int(self.state["step_index"])
            stage = steps[index]
            if stage > int(self.state.get("weight") or 0):
                self.await_window(f"raising the weight to {stage} %", steps[index - 1] if index else None)
            self.set_weight(stage)
            self.stage(stage)
            self.state["step_index"] = int(self.state["step_index"]) + 1
            if not self.o.dry_run:
                self.event("stage passed", stage=stage)
        self.state["status"] = "awaiting-promotion"
        if not self.o.dry_run:
            self.event("all stages passed")

    def _junit(self, stage: int, attempt: int) -> Path:
        return self.run_dir / (f"stage-{stage}.xml" if attempt == 1 else f"stage-{stage}-retry{attempt - 1}.xml")

    def stage(self, stage: int) -> None:
        extra = [f"--threshold={g}.{f}={v}" for g, fields in self.o.thresholds.items() for f, v in fields.items()]
        extra += [f"--canary-evidence={self.evidence_file}", *self.o.suite_args]
        if self.o.dry_run:
            self.echo(
                f"would wait {self.o.step_duration:g} s, polling the critical gates every {self.o.poll_interval:g} s"
            )
            self.echo(f"would run: pytest {self.o.suite} --stage {stage} --junitxml {self.run_dir}/stage-{stage}.xml")
            return
        if self.o.step_duration < self.config.window:
            log.warning("step duration %gs is shorter than the window %gs", self.o.step_duration, self.config.window)
        start = time.monotonic()
        self.wait_and_poll(stage, start + self.o.step_duration)
        self._check_stop()

        def ran(run: SuiteRun) -> None:
            verdicts = {r.gate: r.verdict or r.outcome for r in run.failing}
            self.event("gates", stage=stage, passed=run.passed, exit_code=run.exit_code, failing=verdicts,
                       junit=str(run.junit))  # fmt: skip

        def held(run: SuiteRun, why: str) -> None:
            self.echo(f"stage {stage} %: holding ({why}); trying again in {self.o.poll_interval:g} s")
            self.event("held", stage=stage, why=why, failing_gates=[_gate_fields(r) for r in run.failing])

        # The stage's deadline for a verdict: the step plus its extension; then the policy (or a rollback).
        extension = self.extension
        decision = decide_stage(
            self.o.suite, stage, lambda attempt: self._junit(stage, attempt),
            deadline=start + self.o.step_duration + extension, poll=self.o.poll_interval,
            config_path=self.o.config_path, extra_args=extra, on_run=ran, on_hold=held, sleep=self._sleep,
        )  # fmt: skip
        if decision.outcome == "passed":
            self.echo(decision.why)
            return
        if decision.outcome == "undecided" and decision.only_comparisons_undecided:
            self.undecided(stage, extension, record_needs(decision.held), decision.held)
            return
        why = decision.why
        if decision.outcome in ("undecided", "unreadable"):
            why += "; missing data never promotes"
        self.rollback(why, failing=[_gate_fields(r) for r in decision.failed or decision.held])

    @property
    def extension(self) -> float:
        """Seconds a stage that cannot decide may run past its step."""
        configured = self.config.rollout.max_extension
        chosen = self.o.max_extension if self.o.max_extension is not None else configured
        return self.o.step_duration if chosen is None else chosen

    def undecided(self, stage: int, extension: float, needs: str, held: Sequence[GateRecord]) -> None:
        """Every fixed gate passed, but comparisons could not decide in the step and its extension: the policy."""
        policy = self.o.on_undecided or self.config.rollout.on_undecided
        why = (
            f"stage {stage} %: every fixed gate passed, but after the step and {extension:g} s more the comparisons "
            f"could not decide: {needs}"
        )
        failing = [_gate_fields(r) for r in held]
        if policy is UndecidedPolicy.PROCEED:
            self.echo(f"{why}; proceeding (rollout.on_undecided: proceed)")
            self.event("proceeded undecided", stage=stage, why=why, failing_gates=failing)
            return
        if policy is UndecidedPolicy.ROLLBACK:
            self.rollback(f"{why} (rollout.on_undecided: rollback)", failing=failing)
        self.state["status"] = "awaiting-decision"
        self.event("awaiting decision", stage=stage, why=why, failing_gates=failing)
        raise AwaitingDecision(
            f"{why}. Holding the canary at {stage} % for a person's decision (rollout.on_undecided: hold)",
            fix=f"look again with '{self.command()}' (the stage's gates run again on more traffic), go on with "
            f"'{self.command(None, '--proceed')}', or roll back with '{self.command(None, '--rollback')}'",
        )

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._check_stop()
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def wait_and_poll(self, stage: int, until: float) -> None:
        """Wait out the step, polling the critical gates; a critical failure rolls back at once."""
        next_poll = time.monotonic() + self.o.poll_interval
        while (left := until - time.monotonic()) > 0:
            if self.on_wait is not None:
                self.on_wait(stage, self.o.step_duration, left)
            else:
                self.echo(f"stage {stage} %: {left:.0f} s left in the step")
            self._sleep(min(1.0 if self.on_wait else 5.0, left, max(0.05, next_poll - time.monotonic())))
            if time.monotonic() < next_poll or time.monotonic() >= until:
                continue
            next_poll = time.monotonic() + self.o.poll_interval
            self.poll_critical(stage)

    def poll_critical(self, stage: int) -> None:
        """One poll: nobody else wrote the record (a rollback by anyone stops this runner within a poll), and no
        critical gate or comparison fails (one that does rolls back at once)."""
        self.confirm_owner()
        if self.source is None:
            return
        thresholds = self.thresholds(stage)
        critical = [
            name
            for name, gate in gates_of(thresholds).items()  # the built-in gates and the config's custom ones
            if gate.source == "prometheus"
            and gate.settings(thresholds).enabled
            and gate.settings(thresholds).severity is Severity.CRITICAL
        ]
        results = evaluate(self.config, self.source, critical, stage=stage, gates=thresholds)
        results.update(self.compare())
        unread = {e.headline for e in results.values() if isinstance(e, PrometheusError)}
        for cause in sorted(unread):  # said at each poll: a silent step would look like a healthy one
            self.echo(f"stage {stage} %: {cause}; looking again in {self.o.poll_interval:g} s")
        failed = [r for r in results.values() if isinstance(r, GateResult) and r.verdict is Verdict.FAIL]
        if failed:
            self.rollback(
                f"critical gates failed during stage {stage} %: "
                + "; ".join(f"{r.gate} ({r.summary})" for r in failed),
                failing=[_gate_fields(r) for r in failed],
            )

    def await_window(self, step: str, stage: int | None) -> None:
        """Go on only inside the release windows. Outside them: hold (exit 3, the weight as it is), or wait —
        polling the critical gates when the canary has traffic (``stage``), so a failure still rolls back at once."""
        windows = self.config.rollout.release_windows
        if windows is None or (state := check_window(windows, self.clock())).open:
            return
        policy = self.o.outside_window or windows.outside
        where = f"stage {stage} %: " if stage is not None else ""
        why = f"{where}{step} is outside the release windows ({state.why}); they open {state.until()}"
        if self.o.dry_run:
            self.echo(f"would {policy.value}: {why}")
            return
        recorded = bool(self.state.get("lease"))  # before the first write (a new rollout) there is nothing to keep
        if policy is OutsideWindow.HOLD:
            if recorded:
                self.state["status"] = "awaiting-window"
                self.event("outside window", stage=stage, why=why, opens=state.opens and state.opens.isoformat())
            nothing = "" if recorded else "; nothing was deployed"
            raise AwaitingWindow(
                f"{why}. Holding (rollout.release_windows.outside: hold){nothing}",
                fix=f"run '{self.command()}' again inside a window to go on, or "
                f"add --rollback to roll back (a rollback is never held)",
            )
        if recorded:
            self.event("outside window", stage=stage, why=why, opens=state.opens and state.opens.isoformat())
        polling = f", polling the critical gates every {self.o.poll_interval:g} s" if stage is not None else ""
        self.echo(f"{why}; waiting{polling}")
        said = time.monotonic()
        while not (state := check_window(windows, self.clock())).open:
            if time.monotonic() - said >= 600:
                self.echo(f"{where}still outside the release windows; they open {state.until()}")
                said = time.monotonic()
            if stage is not None:
                self.poll_critical(stage)
            elif recorded:
                self.confirm_owner()
            left = (state.opens.timestamp() - self.clock()) if state.opens else self.o.poll_interval
            self._sleep(min(self.o.poll_interval, max(0.05, left)))
        self.echo(f"{where}inside the release windows: {step}")

    @property
    def evidence_file(self) -> Path:
        """The rollout's own sequential evidence: polls and stage suites add to it from the canary's start."""
        return self.run_dir / "evidence.json"

    def compare(self) -> dict[str, GateResult | CanaryError]:
        """Advance the critical canary-vs-stable comparisons (anytime-valid: checking at every poll is sound)."""
        stats = self.config.statistics
        names = [
            name
            for name, c in comparisons_of(stats).items()
            if c.family != "resources" and c.settings(stats).enabled and c.settings(stats).severity is Severity.CRITICAL
        ]
        if self.source is None or not names:
            return {}
        try:
            return evaluate_comparisons(self.config, self.source, names, evidence_file=self.evidence_file)
        except CanaryError as e:
            log.warning("the comparisons could not be polled: %s", e.message)
            return {}

    def thresholds(self, stage: int) -> Any:
        return self.config.gates_for(stage, self.o.thresholds)

    def rollback(self, why: str, failing: Sequence[Mapping[str, str]] = ()) -> None:
        """Roll back: recorded first (a rollback wins over any other writer of the record, and a live runner reads
        it before its next weight change), then weight 0 confirmed by the router, then the canary scaled down."""
        verdict_at = time.time()
        self.echo(f"rolling back: {why}")
        with self._event_lock:
            self._rolling_back, self._superseded = True, None
        self.state["status"] = "rolling-back"
        self.event("rollback started", why=why, by=self.o.holder)
        # Traffic first: nothing else matters until the canary gets no request.
        confirmed = self.router.set_weight(0)
        weight_zero_at = time.time()
        self.state["weight"] = confirmed
        self.event("weight", weight=0, rollback_seconds=round(weight_zero_at - verdict_at, 3))
        self.platform.scale_canary(0)
        self.state["status"] = "rolled-back"
        self.event(
            "rolled back",
            why=why,
            by=self.o.holder,
            rollback_seconds=round(weight_zero_at - verdict_at, 3),
            failing_gates=list(failing),
        )
        raise RolledBack(why)

    def finish(self) -> int:
        status = self.state["status"]
        self._check_stop()
        if status != "awaiting-promotion":
            return 0
        if self.o.dry_run:
            self.echo(f"would promote: set the stable image to {self.o.image}, wait until ready, "
                      "send 100 % to stable, scale the canary to 0")  # fmt: skip
            return 0
        promote = self.o.auto_promote
        if not promote and self.o.confirm is not None:
            promote = self.o.confirm(f"every stage passed; promote {self.o.image} to stable?")
        if not promote:
            self.echo(
                f"every stage passed; not promoting without --auto-promote or a terminal. To promote: "
                f"{self.command(None, '--auto-promote')}"
            )
            self.event("awaiting promotion")
            return 0
        self.await_window(f"promoting {self.o.image}", int(self.state["steps"][-1]))
        self.confirm_owner()
        self.event("promoting", image=self.o.image)
        self.platform.promote(self.o.image, self.o.ready_timeout, self.echo)
        self.router.set_weight(0)
        self.platform.scale_canary(0)
        self.state["status"] = "promoted"
        self.state["weight"] = 0
        self.event("promoted", image=self.o.image)
        self.echo(f"promoted {self.o.image}: stable runs it and gets 100 % of the traffic")
        return 0
