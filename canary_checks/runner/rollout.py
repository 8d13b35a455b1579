"""The rollout as a state machine: :class:`Rollout` runs, resumes or rolls back one service's rollout.

The statuses (:class:`~canary_checks.record.Status`) and the steps that move between them::

    (new) ── validate, windows, lease ──► deploying ── canary ready, smoke ──► progressing
    progressing ── each stage: weight, step and polls, gate suite ──► awaiting-promotion ── promote ──► promoted
    progressing ──► awaiting-decision (undecided, on_undecided: hold) or awaiting-window (outside, hold)
    awaiting-* ── run again (--proceed for a decision) ──► progressing
    any status not over ── a failing gate, --rollback, the watchdog ──► rolling-back ──► rolled-back

Every move goes through :meth:`~canary_checks.runner.ownership.RolloutRecord.move` (only along
:data:`~canary_checks.record.TRANSITIONS`), and every event through ``event`` (the record, events.jsonl and the
notifications).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

from canary_checks import forks
from canary_checks.errors import CanaryError
from canary_checks.record import IN_PROGRESS, Event, Lease, Status, stage_of, version_of
from canary_checks.report import import_plotting
from canary_checks.rundir import RunRecord, new_run_id
from canary_checks.runner.options import (
    HELD_EXIT,
    INTERRUPTED_EXIT,
    SUPERSEDED_EXIT,
    AwaitingDecision,
    Interrupted,
    RolledBack,
    Superseded,
)
from canary_checks.runner.stages import Stages
from canary_checks.suite import validate

__all__ = ["Rollout"]


class Rollout(Stages):
    """One service's progressive rollout, run by :meth:`run` to its end or a safe stop, as the exit code says: 0
    (promoted, awaiting promotion, nothing to do, or rolled back by ``--rollback``), 1 (rolled back), 3
    (:data:`~canary_checks.runner.options.HELD_EXIT`: held for a person or a release window), 4 (superseded) or 130
    (interrupted). A second runner resumes it — re-running the current stage's gates, never skipping them — or
    rolls it back; the record and the lease keep one owner at a time."""

    def run(self) -> int:
        """Run (or resume, or roll back) the rollout; returns the process exit code."""
        main = self.options.handle_signals and threading.current_thread() is threading.main_thread()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
        for s in previous:
            signal.signal(s, self._on_signal)
        heartbeat = threading.Thread(target=self._heartbeat, daemon=True, name="lease-heartbeat")
        # a rollout (not a rollback, not a dry run) imports, while the cluster is validated and the stages wait, what
        # it needs later: its stages' suites' fork server, and the plotting of its report
        plotting = threading.Thread(target=import_plotting, daemon=True, name="report-imports")
        if not (self.options.rollback or self.options.dry_run):
            forks.prepare(self.config)
            plotting.start()
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
            return INTERRUPTED_EXIT
        finally:
            self._heartbeat_stop.set()
            if heartbeat.is_alive():
                heartbeat.join(timeout=5)
            self._release()  # stopped, held or awaiting promotion: the next run may resume at once
            for s, handler in previous.items():
                signal.signal(s, handler)
            # the decisions are carried out; give the notifications still in flight their bounded time
            self.notifier.flush()
            if plotting.is_alive():  # not left importing as the interpreter ends
                plotting.join(timeout=30)
            self.write_report()

    def write_report(self) -> None:
        """``reports/<run-id>/``: what ran, the series over the run, summary.json and report.html."""
        if self.options.dry_run or not self.state.get("run_id") or not self.run_record.has_events():
            return
        now = time.time()
        # in `finally`: the report never replaces the rollout's own outcome (finish says, never raises)
        finished = self.run_record.finish(
            self.config if self.source is not None else None, self.source,
            since=float(self.state.get("started", now)), end=now, kind="rollout", service=self.options.service,
            namespace=self.config.namespace, image=self.state.get("image"), steps=self.state.get("steps"),
            started=self.state.get("started"), ended=now, status=self.state.get("status"),
        )  # fmt: skip
        if finished.html is not None:
            self.echo(f"report: {finished.html}")
        else:
            self.echo(f"{finished.problem} (events.jsonl has every decision)")

    def _run(self, heartbeat: threading.Thread) -> int:
        existing = self.platform.read_record()
        self.version = version_of(existing)
        in_progress = existing is not None and existing.get("status") in IN_PROGRESS
        if self.options.rollback:
            if existing is None or not in_progress:
                self.echo(f"no rollout of {self.options.service} is in progress: nothing to roll back")
                return 0
            lease = Lease.of(existing)
            if self.options.rollback_if_silent and lease is not None and not lease.expired():
                self.echo(f"{self.options.service}: {lease.holder} took the rollout over meanwhile; leaving it to it")
                return 0
            return self._rollback_other(existing)
        if existing is not None and in_progress:
            self._resume(existing)
        else:
            if self.options.proceed:
                raise CanaryError(
                    f"no rollout of {self.options.service} awaits a decision: --proceed has nothing to decide",
                    fix="leave out --proceed to start a rollout",
                )
            self.check_suites()
            run_id = new_run_id("rollout")
            self.run_record = RunRecord(self.options.reports / run_id, dry_run=self.options.dry_run)
            self.state = {
                "run_id": run_id,
                "service": self.options.service,
                "image": self.options.image,
                "steps": list(self.options.steps),
                "step_index": 0,
                "status": Status.DEPLOYING.value,
                "started": time.time(),
                "router": self.options.router_kind,
                "baseline": self.config.baseline.enabled,
            }
            if not self.options.skip_validation:
                self.validate()
            self.await_window(f"deploying {self.options.image}", None)
            self._acquire(existing)
        if not self.options.dry_run:
            heartbeat.start()
        if self.state["status"] == Status.DEPLOYING:  # new, or stopped while the canary was rolling out
            self.deploy()
        if self.state["status"] in (Status.DEPLOYING, Status.PROGRESSING):
            self.progress()
        return self.finish()

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
        if existing.get("status") == Status.ROLLING_BACK:  # a rollback that stopped half-way: finish it, never resume
            self.state = existing
            self.run_record = RunRecord(self.options.reports / existing["run_id"], dry_run=self.options.dry_run)
            self.rollback(f"finishing the rollback {lease.holder if lease else 'someone'} started")
        if existing.get("image") != self.options.image:
            raise CanaryError(
                f"a rollout of {existing.get('image')} (run {existing.get('run_id')}) is in progress at stage "
                f"{stage_of(existing)} % ({existing.get('status')})",
                where=self.platform.describe(),
                fix=f"resume it with '{self.command(existing.get('image'))}', or roll it back "
                f"with '{self.command(existing.get('image'), '--rollback')}'",
            )
        if self.options.proceed and existing.get("status") != Status.AWAITING_DECISION:
            raise CanaryError(
                f"the rollout of {self.options.image} is {existing.get('status')}, not awaiting a decision: "
                "--proceed has nothing to decide",
                fix="leave out --proceed to resume it",
            )
        self.state = existing
        self.follow_record_baseline()
        self.run_record = RunRecord(self.options.reports / existing["run_id"], dry_run=self.options.dry_run)
        self.check_suites()
        self._acquire(None)
        if lease is not None and lease.holder != self.options.holder:
            self.event(Event.TAKEN_OVER, previous=lease.as_dict())
        if self.state["status"] == Status.AWAITING_DECISION and self.options.proceed:
            self.event(Event.PROCEEDED_UNDECIDED, stage=self.current_stage(), why="--proceed: a person decided")
            self.echo(f"stage {self.current_stage()} % counted as passed (--proceed); going on")
            self.state["step_index"] = int(self.state["step_index"]) + 1
        else:
            self.echo(
                f"resuming run {existing['run_id']} of {self.options.image} at stage {self.current_stage()} % "
                "(its gates run again from the start of the stage)"
            )
        if self.state["status"] in (Status.AWAITING_DECISION, Status.AWAITING_WINDOW):
            self.move(Status.PROGRESSING)
        self.event(Event.RESUMED, stage=self.current_stage())

    def _rollback_other(self, existing: dict[str, Any]) -> int:
        """``--rollback`` (or the watchdog): whoever runs the rollout, alive or not, it is rolled back — recorded
        first, so a live runner stops before its next weight change, then the weight goes to 0."""
        self.state = existing
        self.run_record = RunRecord(self.options.reports / existing["run_id"], dry_run=self.options.dry_run)
        try:
            self.rollback(self.options.rollback_why)
        except RolledBack:
            self.echo(f"rolled back run {existing['run_id']} of {existing.get('image')}")
        return 0

    def check_suites(self) -> None:
        """The suites must collect before anything is deployed or any weight moves (pytest --collect-only)."""
        suites: list[tuple[Path, int | None]] = [(self.options.suite, self.options.steps[0])]
        if self.options.smoke_suite is not None:
            suites.append((self.options.smoke_suite, None))
        for suite, stage in suites:
            problem = validate(suite, stage, config_path=self.options.config_path, extra_args=self.options.suite_args)
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
        if self.config.rollout.scaling.proportional:
            self.stable_size()  # before anything changes: what the canary follows and promotion restores
        if self.options.dry_run:
            self.echo(f"would set the canary's image to {self.options.image}, scale it up and wait until it is ready")
            self.start_baseline()
            self.move(Status.PROGRESSING)
            return
        self.event(Event.DEPLOYING, image=self.options.image, stable_image=self.state["previous_image"])
        self.platform.deploy_canary(self.options.image)
        self.platform.wait_canary_ready(self.options.ready_timeout, self.echo)
        self.event(Event.DEPLOYED, image=self.options.image, **self.start_baseline())
        self.smoke()
        self.move(Status.PROGRESSING)

    def start_baseline(self) -> dict[str, Any]:
        """With a baseline: a fresh copy of stable beside the canary, ready — what every comparison judges the
        canary against. Returns what the deployed event says of it."""
        if not self.with_baseline:
            return {}
        name, replicas, image = (
            self.config.workload("baseline"),
            self.config.baseline.replicas,
            self.state["previous_image"],
        )
        what = f"the baseline {name}: {replicas} pod(s) of {image}"
        if self.options.dry_run:
            self.echo(f"would start {what}, and compare the canary with it")
            return {}
        self.confirm_owner()  # the canary took a while to be ready: a rollback since then wins, and starts nothing
        self.echo(f"starting {what}")
        self.platform.start_baseline(replicas, self.options.ready_timeout, self.echo)
        return {"baseline": name, "baseline_replicas": replicas}

    def finish(self) -> int:
        status = self.state["status"]
        self._check_stop()
        if status != "awaiting-promotion":
            return 0
        if self.options.dry_run:
            self.echo(f"would promote: set the stable image to {self.options.image}, wait until ready, "
                      f"send 100 % to stable, scale the canary{' and the baseline' if self.with_baseline else ''} "
                      "to 0")  # fmt: skip
            return 0
        promote = self.options.auto_promote
        if not promote and self.options.confirm is not None:
            promote = self.options.confirm(f"every stage passed; promote {self.options.image} to stable?")
        if not promote:
            self.echo(
                f"every stage passed; not promoting without --auto-promote or a terminal. To promote: "
                f"{self.command(None, '--auto-promote')}"
            )
            self.event(Event.AWAITING_PROMOTION)
            return 0
        self.await_window(f"promoting {self.options.image}", int(self.state["steps"][-1]))
        self.confirm_owner()
        self.event(Event.PROMOTING, image=self.options.image)
        if self.config.rollout.scaling.proportional:  # stable at its size before the traffic goes back to it
            self.platform.promote(self.options.image, self.options.ready_timeout, self.echo,
                                  replicas=self.stable_size())  # fmt: skip
        else:
            self.platform.promote(self.options.image, self.options.ready_timeout, self.echo)
        self.router.set_weight(0)
        self.platform.scale_canary(0)
        self.platform.stop_baseline()
        self.move(Status.PROMOTED)
        self.state["weight"] = 0
        self.event(Event.PROMOTED, image=self.options.image)
        self.echo(f"promoted {self.options.image}: stable runs it and gets 100 % of the traffic")
        return 0
