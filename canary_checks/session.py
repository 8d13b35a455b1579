"""A pytest session of checks, for the plugin: its target (canary.yaml and the flags, resolved once), the header
that announces it, its run directory (a :class:`~canary_checks.rundir.RunRecord` with pytest's JUnit in it), and
the session's one evaluation of every gate and comparison — looked at again under ``--hold-for``.

Imported by :mod:`canary_checks.plugin` only once a session collects checks: an unrelated pytest run never loads it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from canary_checks.errors import CanaryError, PrometheusError
from canary_checks.rundir import RunRecord, new_run_id

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig, Gates
    from canary_checks.gates import GateResult
    from canary_checks.kube import CanaryHealth
    from canary_checks.prometheus import MetricsSource

__all__ = ["SessionReport", "Target", "evaluate_all", "finish_report", "header", "kube_reader", "resolve",
           "start_report"]  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What this pytest session checks, resolved once from canary.yaml and the flags."""

    config: CanaryConfig
    config_path: Path | None
    stage: int | None
    strict: bool
    thresholds: Gates
    evidence: Path
    """Where the comparisons' sequential evidence accumulates."""


@dataclass
class SessionReport:
    """This session's run directory (only when it runs gates or smoke checks)."""

    kind: str
    record: RunRecord
    started: float
    user_junit: Path | None
    stage: int | None
    name: str
    """The JUnit's name when there is no stage (``gate``, ``smoke-canary``)."""
    html: Path | None = None
    problem: str = ""

    @property
    def junit(self) -> Path:
        return self.record.junit(self.stage, name=self.name)


def resolve(config: pytest.Config) -> Target:
    from canary_checks.compare import evidence_path
    from canary_checks.config import flag_overrides, load_config, parse_gate_flags, require_config

    opt = config.option
    path = require_config(opt.canary_config, search=(Path.cwd(), config.rootpath))
    overrides = flag_overrides(
        service=opt.service,
        namespace=opt.namespace,
        mesh=opt.mesh,
        baseline=opt.baseline,
        prometheus_url=opt.prometheus_url,
        window=opt.window,
    )
    canary = load_config(path, overrides)
    stage = opt.stage
    try:
        canary.check_stages(*(() if stage is None else (stage,)))
    except ValueError as e:
        raise CanaryError(
            f"--stage: {e}", fix=f"pass one of the stages, or change `stages` in {path or 'canary.yaml'}"
        ) from None
    thresholds = canary.gates_for(stage, parse_gate_flags(opt.threshold))
    evidence = (
        Path(opt.canary_evidence)
        if opt.canary_evidence
        else evidence_path(canary, path.parent if path is not None else Path.cwd())
    )
    if opt.fresh_evidence:
        evidence.unlink(missing_ok=True)
    return Target(canary, path, stage, bool(opt.strict_gates), thresholds, evidence)


def header(target: Target) -> list[str]:
    c = target.config
    stage = f"stage {target.stage} %" if target.stage is not None else "no --stage"
    source = str(target.config_path)
    k = c.kubernetes
    kube = (
        f"Kubernetes API {k.api_url or 'from ' + (k.context or 'in-cluster or kubeconfig')}"
        if k.active()
        else "kube_* gates off (no Kubernetes credentials; see kubernetes: in the config)"
    )
    return [
        f"canary-checks: {c.workload('canary')} vs {c.workload(c.reference)} in namespace {c.namespace}, "
        f"mesh {c.mesh.value}, {stage}{', strict' if target.strict else ''}",
        f"canary-checks: Prometheus {c.prometheus.shown_url}, window {c.window:g}s, config {source}",
        f"canary-checks: {kube}",
        f"canary-checks: comparisons at {c.statistics.confidence:.0%} confidence, correction "
        f"{c.statistics.correction.value}, evidence {target.evidence}",
    ]


def start_report(config: pytest.Config, target: Target, kind: str) -> SessionReport:
    """The session's own reports/<run-id>/ with pytest's JUnit in it; its ``problem`` says why there is none."""
    smoke = kind == "smoke"
    user = Path(config.option.xmlpath) if config.option.xmlpath else None
    c, started = target.config, time.time()
    stage = None if smoke else target.stage
    name = f"smoke-{config.option.target}" if smoke else "gate"
    record = RunRecord(Path(config.option.canary_reports) / new_run_id(kind))
    report = SessionReport(kind, record, started, user, stage, name)
    try:
        record.meta(kind=kind, service=c.service, namespace=c.namespace, stage=target.stage,
                    target=config.option.target if smoke else None, started=started,
                    prometheus=c.prometheus.shown_url, window=c.window)  # fmt: skip
    except OSError as e:  # a read-only working directory: the checks still run, without their report
        report.problem = f"no report: cannot write {record.path} ({e.strerror}); --canary-reports DIR moves it"
        return report
    if user is None:
        # pytest's own JUnit writer, armed now that the session is known to run checks
        junitxml = config.pluginmanager.get_plugin("junitxml")
        if junitxml is None:
            report.problem = "no JUnit file: pytest's junitxml plugin is disabled (-p no:junitxml)"
        else:
            config.option.xmlpath = str(report.junit)
            junitxml.pytest_configure(config)
            config.stash[junitxml.xml_key].pytest_sessionstart()
    return report


def finish_report(report: SessionReport, target: Target, exitstatus: int) -> None:
    """After pytest wrote the JUnit file: the series of the last minutes (a gate run), the summary and the HTML
    report — or why not, in ``report.problem``; never the session's outcome."""
    if report.user_junit is not None:
        try:
            report.record.copy_junit(report.user_junit, report.stage, name=report.name)
        except OSError as e:
            report.problem = f"the report could not be written: {e.__class__.__name__}: {e}"
            return
    series = target.config if report.kind == "gate" else None
    finished = report.record.finish(series, ended=time.time(), exit_status=int(exitstatus))
    report.html, report.problem = finished.html, finished.problem


def kube_reader(target: Target) -> Callable[[], CanaryHealth] | None:
    settings = target.config.kubernetes
    if not settings.active():
        return None
    from canary_checks.kube import api_client, canary_health

    def read() -> CanaryHealth:
        api = api_client(settings.api_url, context=settings.context, verify_tls=settings.verify_tls)
        return canary_health(api, target.config.namespace, target.config.workload("canary"))

    return read


def evaluate_all(
    config: pytest.Config, target: Target, source: MetricsSource, names: Sequence[str]
) -> dict[str, GateResult | CanaryError]:
    """Every gate and comparison ``names`` says, evaluated once: queries run concurrently at one instant, the
    Kubernetes API read once, the comparisons' evidence advanced once. With ``--hold-for``, evaluated again every
    ``--hold-interval`` while a critical check cannot decide (the runner's rule)."""
    from canary_checks.compare import comparisons_of
    from canary_checks.gates import evaluate, gates_of
    from canary_checks.report import outcome_of
    from canary_checks.suite import needs

    gates, comparisons = gates_of(target.thresholds), comparisons_of(target.config.statistics)
    deadline = time.monotonic() + config.option.hold_for
    while True:
        try:
            results = evaluate(
                target.config,
                source,
                [n for n in names if n in gates],
                stage=target.stage,
                gates=target.thresholds,
                kube=kube_reader(target),
            )
            results.update(_compare(target, source, [n for n in names if n in comparisons]))
        except CanaryError as e:
            pytest.fail(e.message, pytrace=False)
        checks = [_as_record(name, r, target.strict) for name, r in results.items()]
        left = deadline - time.monotonic()
        if outcome_of(checks) not in ("held", "error") or left <= 0:
            return results
        waiting = [(c["gate"], c["verdict"], c["details"]) for c in checks if c["outcome"] not in ("passed", "error")]
        # an unreadable source is said as such at each look, not as "error" per gate
        unread = [_headline(r) for r in results.values() if isinstance(r, CanaryError)]
        why = "; ".join(filter(None, (*dict.fromkeys(unread), needs(waiting))))
        pause = min(config.option.hold_interval, left)
        _say(config, f"canary-checks: holding ({why}); looking again in {pause:.0f} s, {left:.0f} s left "
                     "of --hold-for")  # fmt: skip
        time.sleep(pause)


def _headline(error: CanaryError) -> str:
    return error.headline if isinstance(error, PrometheusError) else error.message.splitlines()[0]


def _as_record(name: str, result: GateResult | CanaryError, strict: bool) -> dict[str, Any]:
    """A result as the hold rule (:func:`canary_checks.report.outcome_of`) reads a suite run's JUnit record."""
    from canary_checks.gates import GateResult

    if not isinstance(result, GateResult):
        return {"gate": name, "outcome": "error", "verdict": "error", "details": {}}
    fails = result.fails(strict=strict)
    return {"gate": name, "outcome": "failed" if fails else "passed", "verdict": result.verdict.value,
            "details": result.details}  # fmt: skip


def _say(config: pytest.Config, line: str) -> None:
    """A progress line on the terminal now, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _compare(target: Target, source: MetricsSource, names: list[str]) -> dict[str, GateResult | CanaryError]:
    if not names:
        return {}
    from canary_checks.compare import evaluate_comparisons

    return evaluate_comparisons(target.config, source, names, evidence_file=target.evidence)
