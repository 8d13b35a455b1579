"""Running a stage's suite and deciding, held or not: the one rule the runner, ``canary-checks gates``, the webhook
server and ``pytest --hold-for`` share (the demo's tour still holds by its own loop).

A suite is a directory of pytest files over the plugin (``suites/gate``, ``suites/smoke``): the team's own copy
written by ``canary-checks init`` when there is one in the working directory, else the one shipped in this package
(:func:`locate`). :func:`run_suite` runs it in a new process and reads its JUnit back; :func:`decide_stage` runs it
again while it cannot decide. What a run's records mean — passed, failed, held, error — is
:func:`canary_checks.report.outcome_of`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks import forks
from canary_checks.errors import ConfigError
from canary_checks.forks import Stopper, run_pytest
from canary_checks.report import GateRecord, outcome_of, read_junit

if TYPE_CHECKING:
    from canary_checks.gates import GateResult

__all__ = [
    "SUITES",
    "StageDecision",
    "SuiteRun",
    "decide_stage",
    "locate",
    "needs",
    "packaged",
    "record_needs",
    "run_suite",
    "unreadable",
    "validate",
]

SUITES = ("gate", "smoke")
"""The suites a service has: the stage's gates, and the smoke checks through the header route."""


def packaged(kind: str) -> Path:
    """The suite shipped in this package (``pytest --pyargs canary_checks.suites.<kind>``)."""
    return Path(__file__).parent / "suites" / kind


def locate(kind: str, explicit: Path | None = None, *, option: str = "--suite") -> Path:
    """The suite to run: ``explicit`` (which must exist), else ``./suites/<kind>`` (the team's own, from
    ``canary-checks init``), else the packaged one."""
    if explicit is not None:
        if not explicit.is_dir():
            raise ConfigError(
                f"suite directory {str(explicit)!r} does not exist",
                where=option,
                fix=f"pass an existing directory, or leave {option} out to use ./suites/{kind} or the packaged "
                f"suite ('canary-checks init' writes ./suites/{kind} to edit)",
            )
        return explicit
    local = Path("suites") / kind
    return local if local.is_dir() else packaged(kind)


@dataclass(frozen=True)
class SuiteRun:
    stage: int | None
    exit_code: int
    """pytest's exit code: 0 all checks passed, 1 a check failed, errored or could not decide, others: the suite
    could not run."""
    junit: Path
    records: list[GateRecord]
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    @property
    def failing(self) -> list[GateRecord]:
        return [r for r in self.records if r.outcome in ("failed", "error")]


def _pytest(suite: Path, stage: int | None, config_path: Path | None, extra_args: Sequence[str]) -> list[str]:
    cmd = [str(suite)]
    cmd += ["--stage", str(stage)] if stage is not None else []
    # the caller owns the run's directory, its report and the holding: the suite writes no report of its own, and
    # a check that cannot decide yet fails the run (with its verdict) instead of being reported apart
    cmd += ["-p", "no:locust", "-p", "no:cacheprovider", "-q", "--no-header", "-rN", "--no-canary-report"]
    cmd += ["--fail-undecided"]
    if config_path is not None:
        cmd += ["--canary-config", str(config_path)]
    return [*cmd, *extra_args]


def run_suite(
    suite: Path,
    stage: int | None,
    junit: Path,
    *,
    config_path: Path | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 300.0,
    stopper: Stopper | None = None,
) -> SuiteRun:
    """``pytest SUITE [--stage N] --junitxml JUNIT --fail-undecided`` in a new process (:mod:`canary_checks.forks`;
    ``stopper`` may stop it: :class:`~canary_checks.forks.Stopped`); the JUnit file is read back."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    args = _pytest(suite, stage, config_path, [*extra_args, "--junitxml", str(junit)])
    code, output = run_pytest(args, timeout, stopper=stopper)
    records = read_junit(junit) if junit.exists() else []
    return SuiteRun(stage, code, junit, records, output)


def validate(suite: Path, stage: int | None, *, config_path: Path | None = None, extra_args: Sequence[str] = ()) -> str:
    """Collect the suite without running it (``--collect-only``): ``""`` when it would run, else why not. The runner
    asks before it deploys anything."""
    code, output = run_pytest([*_pytest(suite, stage, config_path, extra_args), "--collect-only"], 120)
    if code == 0:
        return ""
    if code == 5:
        return f"the suite {suite} has no tests (pytest collected none)"
    output = output.strip()
    lines = [line for line in output.splitlines() if line.startswith(("ERROR", "E "))] or output.splitlines()[-5:]
    return f"the suite {suite} cannot run (pytest exit {code}): " + " | ".join(lines[-5:])


@dataclass(frozen=True)
class StageDecision:
    run: SuiteRun
    """The last suite run."""
    outcome: str
    """passed; failed (a check failed); broken (the suite could not run); unreadable (checks could not read their
    source, Prometheus unreachable or refusing the credentials, until the deadline); undecided (still held at the
    deadline)."""
    why: str
    failed: list[GateRecord] = field(default_factory=list)
    """The checks that failed (outcome failed)."""
    held: list[GateRecord] = field(default_factory=list)
    """The checks that could not decide (outcome undecided)."""

    @property
    def only_comparisons_undecided(self) -> bool:
        """Every fixed gate passed; only canary-vs-stable comparisons had too few requests to decide."""
        return bool(self.held) and all(r.gate.startswith("compare_") and r.verdict == "inconclusive" for r in self.held)


def failing_fields(r: GateRecord | GateResult) -> dict[str, str]:
    """A failing check as notifications, the event log and the webhooks' answers carry it — gate, verdict, value,
    threshold, unit, summary — from a suite run's JUnit record or a poll's result."""
    if not isinstance(r, GateRecord):
        value = "" if r.value is None else f"{r.value:.6g}"
        return {"gate": r.gate, "verdict": r.verdict.value, "value": value, "threshold": f"{r.threshold:g}",
                "unit": r.unit, "summary": r.summary}  # fmt: skip
    return {"gate": r.gate or r.test.rpartition("::")[2], "verdict": r.verdict or r.outcome, "value": r.value,
            "threshold": r.threshold, "unit": r.unit,
            "summary": r.summary or (r.message.splitlines() or [""])[0]}  # fmt: skip


def needs(checks: Iterable[tuple[str, str, Mapping[str, Any]]]) -> str:
    """What the checks that cannot decide yet need, as people read it: ``(gate, verdict, details)`` each, the
    details being a result's (or a JUnit record's properties) with ``needed_requests`` and ``needed_seconds``."""
    parts = []
    for gate, verdict, details in checks:
        requests = _number(details.get("needed_requests"))
        seconds = _number(details.get("needed_seconds"))
        if requests is None:
            parts.append(f"{gate} {verdict}")
        elif math.isinf(requests):
            parts.append(f"{gate} {verdict}: no amount of traffic at these error rates would decide it")
        elif seconds is None:
            parts.append(f"{gate} {verdict}: needs {requests:,.0f} more canary requests in the window")
        else:
            when = f" (≈ {_duration(seconds)} at the observed rate)" if math.isfinite(seconds) else ""
            parts.append(f"{gate} {verdict}: needs ≈ {requests:,.0f} more canary requests{when}")
    return "; ".join(parts)


def record_needs(records: Sequence[GateRecord]) -> str:
    return needs((r.gate or r.test.rpartition("::")[2], r.verdict or r.outcome, r.properties) for r in records)


_QUERY = re.compile(r" \(query '.*?'\)(?=:)")
_FIX = re.compile(r"\s+(fix): ")


def unreadable(records: Sequence[GateRecord], *, fix: bool = False) -> str:
    """Why the checks that errored could not read their source, each cause once and without its query:
    ``Prometheus at http://prom:9090: is unreachable (connection refused)``; with ``fix``, the fix too."""
    causes = []
    for r in records:
        if r.outcome != "error":
            continue
        text = (r.properties.get("error") or r.summary or r.message or "").strip()
        # the message's second line is its fix (a JUnit attribute keeps it on the same line)
        head, _, how = [part.strip() for part in [*_FIX.split(text, maxsplit=1), "", ""]][:3]
        cause = _QUERY.sub("", head.splitlines()[0] if head else "an error")
        causes.append(f"{cause} (fix: {how})" if fix and how else cause)
    return "; ".join(dict.fromkeys(causes))


def _number(value: object) -> float | None:
    try:
        return float(value) if isinstance(value, int | float | str) and value != "" else None
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def decide_stage(
    suite: Path,
    stage: int,
    junit: Callable[[int], Path],
    *,
    deadline: float,
    poll: float,
    config_path: Path | None = None,
    extra_args: Sequence[str] = (),
    on_run: Callable[[SuiteRun], None] = lambda run: None,
    on_hold: Callable[[SuiteRun, str], None] = lambda run, why: None,
    sleep: Callable[[float], None] = time.sleep,
) -> StageDecision:
    """Run a stage's gate suite until it decides: a failing check decides at once; checks that cannot decide yet
    (no data, too few requests, inconclusive, unreadable) hold it, and the suite runs again every ``poll`` seconds
    until ``deadline`` (``time.monotonic()``), after which it is undecided — never a pass."""
    attempt = 0
    while True:
        attempt += 1
        run = run_suite(suite, stage, junit(attempt), config_path=config_path, extra_args=extra_args)
        on_run(run)
        if run.exit_code not in (0, 1):
            why = f"the gate suite could not run (pytest exit {run.exit_code}):\n{run.output[-2000:]}"
            return StageDecision(run, "broken", why)
        if not run.records and not run.passed:
            return StageDecision(run, "broken", f"the gate suite wrote no results:\n{run.output[-2000:]}")
        outcome = outcome_of({"outcome": r.outcome, "verdict": r.verdict, "gate": r.gate} for r in run.records)
        if outcome == "passed":
            return StageDecision(run, "passed", f"stage {stage} %: every gate passed")
        if outcome == "failed":
            failed = [r for r in run.failing if r.verdict == "fail" or (not r.gate and r.outcome == "failed")]
            names = "; ".join(f"{r.gate or r.test} ({r.summary or r.message.splitlines()[0]})" for r in failed)
            return StageDecision(run, "failed", f"failing gates at stage {stage} %: {names}", failed)
        held = record_needs([r for r in run.failing if r.outcome != "error"])
        broken = unreadable(run.failing)
        if time.monotonic() >= deadline:
            if outcome == "error":
                why = f"could not evaluate stage {stage} %: {unreadable(run.failing, fix=True)}"
                return StageDecision(run, "unreadable", why, held=run.failing)
            why = f"no decision by the step's deadline at stage {stage} %: {'; '.join(filter(None, (broken, held)))}"
            return StageDecision(run, "undecided", why, held=run.failing)
        on_hold(run, "; ".join(filter(None, (broken, held))))
        forks.prepare()  # looks to come: the next ones fork from a warm server, which imports during the wait
        sleep(min(poll, max(0.0, deadline - time.monotonic())))  # the deadline is not overslept by a poll
