"""A rollout's steps through its stages: the weight, the step's wait with its polls of the critical gates and
comparisons, the stage's gate suite until it decides, a stage that cannot decide, and the release windows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from canary_checks.compare import comparisons_of
from canary_checks.config import OutsideWindow, Severity, UndecidedPolicy, baseline_share
from canary_checks.errors import CanaryError, PrometheusError
from canary_checks.gates import GateResult, Verdict, evaluate, gates_of
from canary_checks.record import Event, Status
from canary_checks.report import GateRecord
from canary_checks.runner.options import AwaitingDecision, AwaitingWindow, Interrupted, RolledBack, Superseded
from canary_checks.runner.ownership import RolloutRecord
from canary_checks.suite import SuiteRun, decide_stage, failing_fields, record_needs, run_suite
from canary_checks.windows import check as check_window

__all__ = ["Stages"]

log = logging.getLogger(__name__)

READINESS_GATES = frozenset({"pods_ready"})
"""The polled gates a scale-up's wait judges itself: while new pods start, fewer are ready than desired, as expected
(``kube_pods_ready`` reads the Kubernetes API, which the polls never do)."""


class Stages(RolloutRecord):
    """The steps of a rollout that has its canary: each stage's weight, wait, polls and gate suite."""

    def set_weight(self, percent: int) -> None:
        """The canary's weight for a stage, and the baseline's share beside it when the rollout has one."""
        baseline = baseline_share(percent) if self.with_baseline else 0
        if self.options.dry_run:
            beside = f", the baseline {baseline} %" if self.with_baseline else ""
            self.echo(f"would set the canary weight to {percent} %{beside} (stable {100 - percent - baseline} %)")
            return
        self.confirm_owner()
        confirmed = self.router.set_weight(percent, baseline)
        self.state["weight"] = confirmed
        more = {"baseline_weight": baseline} if self.with_baseline else {}
        self.event(Event.WEIGHT, weight=confirmed, stage=self.current_stage(), **more)

    def scale_for(self, stage: int) -> None:
        """With proportional scaling, the canary (and a baseline, at the same size) at its size for ``stage`` and
        ready before the weight moves there; a canary that does not get there in time rolls back with the weight
        where it was (never half-moved)."""
        scaling = self.config.rollout.scaling
        if not scaling.proportional:
            return
        stable = self.stable_size()
        replicas = scaling.canary_replicas(stable, stage)
        if self.options.dry_run:
            self.echo(f"would scale the canary to {replicas} replicas (stable {stable}) and wait until they are ready")
            return
        self.confirm_owner()  # someone else's rollback wins: no pod is started for a rollout that is over
        weight = int(self.state.get("weight") or 0)
        try:
            self.platform.scale_canary(replicas)
            self.platform.wait_canary_ready(self.options.ready_timeout, self._polling(weight))
            if self.with_baseline:  # the baseline is the canary's size: the same load per pod
                self.platform.start_baseline(replicas, self.options.ready_timeout, self._polling(weight))
        except (RolledBack, Superseded, Interrupted):
            raise
        except CanaryError as e:
            self.rollback(f"stage {stage} %: the canary was not ready at {replicas} replicas ({e.what}); the weight "
                          f"stayed at {weight} % and never moved to {stage} %")  # fmt: skip
        self.state["canary_replicas"] = replicas
        said = f"the canary is ready at {replicas} replicas (stable {stable})"
        self.event(Event.SCALED, stage=stage, replicas=replicas, stable_replicas=stable, why=said)
        self.echo(f"stage {stage} %: {said}")

    def _polling(self, weight: int) -> Callable[[str], None]:
        """Progress while the canary scales: said, and every poll interval the record read again and (while the
        canary has traffic) the critical gates polled, so a failure or someone's rollback acts at once. Pods ready
        is not among them: the new pods are starting, and the wait judges them itself (ready_timeout)."""
        next_poll = time.monotonic() + self.options.poll_interval

        def progress(message: str) -> None:
            nonlocal next_poll
            self.echo(message)
            self._check_stop()
            if time.monotonic() < next_poll:
                return
            next_poll = time.monotonic() + self.options.poll_interval
            if weight:
                self.poll_critical(weight, but=READINESS_GATES)
            else:
                self.confirm_owner()

        return progress

    def stable_size(self) -> int:
        """Stable's replicas when the rollout started (recorded: a resumed rollout scales against the same size)."""
        if self.state.get("stable_replicas") is None:
            self.state["stable_replicas"] = self.platform.stable_replicas()
        return int(self.state["stable_replicas"])

    def smoke(self) -> None:
        """The smoke suite through the header route, while the canary has no weighted traffic."""
        if self.options.smoke_suite is None:
            return
        o, suite = self.options, self.options.smoke_suite
        run = run_suite(suite, None, self.run_record.junit(None, name="smoke-canary"), config_path=o.config_path,
                        extra_args=["--target=canary", *o.suite_args])  # fmt: skip
        self.event(Event.SMOKE, passed=run.passed, exit_code=run.exit_code, junit=str(run.junit),
                   failing={r.test.rpartition("::")[2]: r.summary for r in run.failing})  # fmt: skip
        if run.passed:
            self.echo(f"smoke: all {len(run.records)} checks passed against the canary")
            return
        why = "; ".join(f"{r.test.rpartition('::')[2]} ({r.summary or r.message.splitlines()[0]})" for r in run.failing)
        self.rollback(f"smoke checks failed before any traffic moved: {why or run.output[-500:]}",
                      failing=[failing_fields(r) for r in run.failing])  # fmt: skip

    def progress(self) -> None:
        steps = [int(s) for s in self.state["steps"]]
        while int(self.state["step_index"]) < len(steps):
            self._check_stop()
            index = int(self.state["step_index"])
            stage = steps[index]
            if stage > int(self.state.get("weight") or 0):
                self.await_window(f"raising the weight to {stage} %", steps[index - 1] if index else None)
            self.scale_for(stage)
            self.set_weight(stage)
            self.stage(stage)
            self.state["step_index"] = int(self.state["step_index"]) + 1
            if not self.options.dry_run:
                self.event(Event.STAGE_PASSED, stage=stage)
        self.move(Status.AWAITING_PROMOTION)
        if not self.options.dry_run:
            self.event(Event.ALL_STAGES_PASSED)

    def stage(self, stage: int) -> None:
        extra = [f"--threshold={g}.{f}={v}" for g, fields in self.options.thresholds.items() for f, v in fields.items()]
        extra += [f"--canary-evidence={self.evidence_file}", *self.options.suite_args]
        if self.with_baseline:  # the suite judges the canary against the baseline, as the polls do
            extra.append("--baseline")
        if self.options.dry_run:
            o = self.options
            self.echo(f"would wait {o.step_duration:g} s, polling the critical gates every {o.poll_interval:g} s")
            against = " --baseline" if self.with_baseline else ""
            self.echo(f"would run: pytest {self.options.suite} --stage {stage}{against} --junitxml "
                      f"{self.run_record.junit(stage)}")  # fmt: skip
            return
        if self.options.step_duration < self.config.window:
            log.warning(
                "step duration %gs is shorter than the window %gs", self.options.step_duration, self.config.window
            )
        start = time.monotonic()
        self.wait_and_poll(stage, start + self.options.step_duration)
        self._check_stop()

        def ran(run: SuiteRun) -> None:
            verdicts = {r.gate: r.verdict or r.outcome for r in run.failing}
            self.event(Event.GATES, stage=stage, passed=run.passed, exit_code=run.exit_code, failing=verdicts,
                       junit=str(run.junit))  # fmt: skip

        def held(run: SuiteRun, why: str) -> None:
            self.echo(f"stage {stage} %: holding ({why}); trying again in {self.options.poll_interval:g} s")
            self.event(Event.HELD, stage=stage, why=why, failing_gates=[failing_fields(r) for r in run.failing])

        # The stage's deadline for a verdict: the step plus its extension; then the policy (or a rollback).
        extension = self.extension
        decision = decide_stage(
            self.options.suite, stage, lambda attempt: self.run_record.junit(stage, attempt),
            deadline=start + self.options.step_duration + extension, poll=self.options.poll_interval,
            config_path=self.options.config_path, extra_args=extra, on_run=ran, on_hold=held, sleep=self._sleep,
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
        self.rollback(why, failing=[failing_fields(r) for r in decision.failed or decision.held])

    @property
    def extension(self) -> float:
        """Seconds a stage that cannot decide may run past its step."""
        configured = self.config.rollout.max_extension
        chosen = self.options.max_extension if self.options.max_extension is not None else configured
        return self.options.step_duration if chosen is None else chosen

    def undecided(self, stage: int, extension: float, needs: str, held: Sequence[GateRecord]) -> None:
        """Every fixed gate passed, but comparisons could not decide in the step and its extension: the policy."""
        policy = self.options.on_undecided or self.config.rollout.on_undecided
        why = (
            f"stage {stage} %: every fixed gate passed, but after the step and {extension:g} s more the comparisons "
            f"could not decide: {needs}"
        )
        failing = [failing_fields(r) for r in held]
        if policy is UndecidedPolicy.PROCEED:
            self.echo(f"{why}; proceeding (rollout.on_undecided: proceed)")
            self.event(Event.PROCEEDED_UNDECIDED, stage=stage, why=why, failing_gates=failing)
            return
        if policy is UndecidedPolicy.ROLLBACK:
            self.rollback(f"{why} (rollout.on_undecided: rollback)", failing=failing)
        self.move(Status.AWAITING_DECISION)
        self.event(Event.AWAITING_DECISION, stage=stage, why=why, failing_gates=failing)
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
        next_poll = time.monotonic() + self.options.poll_interval
        while (left := until - time.monotonic()) > 0:
            if self.on_wait is not None:
                self.on_wait(stage, self.options.step_duration, left)
            else:
                self.echo(f"stage {stage} %: {left:.0f} s left in the step")
            self._sleep(min(1.0 if self.on_wait else 5.0, left, max(0.05, next_poll - time.monotonic())))
            if time.monotonic() < next_poll or time.monotonic() >= until:
                continue
            next_poll = time.monotonic() + self.options.poll_interval
            self.poll_critical(stage)

    def poll_critical(self, stage: int, but: frozenset[str] = frozenset()) -> None:
        """One poll: nobody else wrote the record (a rollback by anyone stops this runner within a poll), and no
        critical gate (but those named) or comparison fails (one that does rolls back at once)."""
        self.confirm_owner()
        if self.source is None:
            return
        thresholds = self.thresholds(stage)
        critical = [
            name
            for name, gate in gates_of(thresholds).items()  # the built-in gates and the config's custom ones
            if gate.source == "prometheus"
            and name not in but
            and gate.settings(thresholds).enabled
            and gate.settings(thresholds).severity is Severity.CRITICAL
        ]
        results = evaluate(self.config, self.source, critical, stage=stage, gates=thresholds)
        results.update(self.compare())
        unread = {e.headline for e in results.values() if isinstance(e, PrometheusError)}
        for cause in sorted(unread):  # said at each poll: a silent step would look like a healthy one
            self.echo(f"stage {stage} %: {cause}; looking again in {self.options.poll_interval:g} s")
        failed = [r for r in results.values() if isinstance(r, GateResult) and r.verdict is Verdict.FAIL]
        if failed:
            self.rollback(
                f"critical gates failed during stage {stage} %: "
                + "; ".join(f"{r.gate} ({r.summary})" for r in failed),
                failing=[failing_fields(r) for r in failed],
            )

    def await_window(self, step: str, stage: int | None) -> None:
        """Go on only inside the release windows. Outside them: hold (exit 3, the weight as it is), or wait —
        polling the critical gates when the canary has traffic (``stage``), so a failure still rolls back at once."""
        windows = self.config.rollout.release_windows
        if windows is None or (state := check_window(windows, self.clock())).open:
            return
        policy = self.options.outside_window or windows.outside
        where = f"stage {stage} %: " if stage is not None else ""
        why = f"{where}{step} is outside the release windows ({state.why}); they open {state.until()}"
        if self.options.dry_run:
            self.echo(f"would {policy.value}: {why}")
            return
        recorded = bool(self.state.get("lease"))  # before the first write (a new rollout) there is nothing to keep
        if policy is OutsideWindow.HOLD:
            if recorded:
                self.move(Status.AWAITING_WINDOW)
                self.event(Event.OUTSIDE_WINDOW, stage=stage, why=why, opens=state.opens and state.opens.isoformat())
            nothing = "" if recorded else "; nothing was deployed"
            raise AwaitingWindow(
                f"{why}. Holding (rollout.release_windows.outside: hold){nothing}",
                fix=f"run '{self.command()}' again inside a window to go on, or "
                f"add --rollback to roll back (a rollback is never held)",
            )
        if recorded:
            self.event(Event.OUTSIDE_WINDOW, stage=stage, why=why, opens=state.opens and state.opens.isoformat())
        polling = f", polling the critical gates every {self.options.poll_interval:g} s" if stage is not None else ""
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
            left = (state.opens.timestamp() - self.clock()) if state.opens else self.options.poll_interval
            self._sleep(min(self.options.poll_interval, max(0.05, left)))
        self.echo(f"{where}inside the release windows: {step}")

    @property
    def evidence_file(self) -> Path:
        """The rollout's own sequential evidence: polls and stage suites add to it from the canary's start."""
        return self.run_record.path / "evidence.json"

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
        from canary_checks.compare import evaluate_comparisons  # the statistics: imported by the first poll

        try:
            return evaluate_comparisons(self.config, self.source, names, evidence_file=self.evidence_file)
        except CanaryError as e:
            log.warning("the comparisons could not be polled: %s", e.message)
            return {}

    def thresholds(self, stage: int) -> Any:
        return self.config.gates_for(stage, self.options.thresholds)
