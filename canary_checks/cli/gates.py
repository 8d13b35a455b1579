"""``canary-checks gates`` and ``canary-checks report``: one stage's gate suite until it decides, and the runs'
reports."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from canary_checks.cli.common import console, echo, load, out, reports_option, suite_option
from canary_checks.cli.types import DURATION, STAGE, check_stages, configured
from canary_checks.errors import ConfigError


@click.command("gates")
@click.option("--stage", type=STAGE, required=True, help="The stage being judged, one of the configured stages.")
@click.option(
    "--service",
    default=None,
    help="Service under release: one of `services:` in the config, or (one-service config) over `service`.",
)
@configured("--namespace", key="namespace", default=None, help="Its namespace")
@click.option(
    "--hold-for",
    type=DURATION,
    default="5m",
    show_default=True,
    help="How long gates that cannot decide yet (no data, too few requests, inconclusive) may hold the stage "
    "before that is a failure.",
)
@click.option(
    "--poll-interval",
    type=DURATION,
    default="15s",
    show_default=True,
    help="How often a held stage's suite runs again.",
)
@suite_option("--suite", "gate", "The gate suite")
@reports_option()
@configured("--canary-evidence", "evidence", key="statistics.evidence_file",
            type=click.Path(dir_okay=False, path_type=Path), default=None,
            help="Where the comparisons' evidence accumulates")  # fmt: skip
@click.option("--threshold", "thresholds", multiple=True, metavar="GATE=VALUE", help="As pytest's --threshold.")
@click.pass_context
def gates_command(
    ctx: click.Context,
    stage: int,
    service: str | None,
    namespace: str | None,
    hold_for: float,
    poll_interval: float,
    suite: Path | None,
    reports: Path,
    evidence: Path | None,
    thresholds: tuple[str, ...],
) -> None:
    """Run one stage's gate suite until it decides, as the runner does: exit 0 when every gate passes, 1 when a
    gate fails or nothing is decided within --hold-for, 2 when the gates could not be evaluated: the suite cannot
    run, or Prometheus stayed unreachable or refused the credentials for all of --hold-for.

    \b
    For controllers that run a command per stage (Argo Rollouts' Job provider, a CI step): a first look that is
    merely inconclusive (too few requests yet) holds and looks again, instead of failing the analysis.
    Writes reports/gate-<id>/ with each attempt's JUnit, the series and the HTML report.
    """
    from canary_checks.rundir import RunRecord
    from canary_checks.suite import decide_stage, locate

    config, path = load(ctx, service=service, namespace=namespace)
    suite = locate("gate", suite)
    check_stages(ctx, config, "stage", stage)
    record = RunRecord.start(reports, "gate", service=config.service, namespace=config.namespace, stage=stage,
                             started=time.time(), prometheus=config.prometheus.shown_url,
                             window=config.window)  # fmt: skip
    extra = ["--service", config.service, "--namespace", config.namespace, *(f"--threshold={t}" for t in thresholds)]
    if evidence is not None:
        extra.append(f"--canary-evidence={evidence}")

    def held(run: Any, why: str) -> None:
        console.print(f"stage {stage} %: holding ({why}); again in {poll_interval:g} s", markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip

    decision = decide_stage(suite, stage, lambda attempt: record.junit(stage, attempt),
                            deadline=time.monotonic() + hold_for, poll=poll_interval, config_path=path,
                            extra_args=extra, on_hold=held)  # fmt: skip
    finished = record.finish(config, ended=time.time(), exit_status=decision.run.exit_code)
    if finished.html is not None:
        console.print(f"report: {finished.html}", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(finished.problem, highlight=False)
    echo(decision.why)
    sys.exit({"passed": 0, "broken": 2, "unreadable": 2}.get(decision.outcome, 1))


@click.command("report")
@click.argument("run_id", required=False)
@reports_option(help="Where the runs' directories are.")
@click.option(
    "--refresh-series",
    is_flag=True,
    help="Read the run's error rate and latency series from Prometheus again before rebuilding (while it still "
    "keeps them).",
)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the report's path.")
@click.pass_context
def report_command(ctx: click.Context, run_id: str | None, reports: Path, refresh_series: bool, as_json: bool) -> None:
    """Rebuild a run's summary.json and report.html from what it recorded (JUnit files, events, series).

    \b
    Without RUN_ID: list the runs, newest first. RUN_ID is a run's directory name in --reports, or a unique
    prefix of one; nothing outside --reports is read or written.
    Every gate run (pytest suites/gate), smoke run and rollout writes reports/<run-id>/ on its own.
    """
    from canary_checks.report import find_run, list_runs
    from canary_checks.rundir import GATE_RUN_SPAN, RUN, RunRecord

    if run_id is None:
        from rich.table import Table

        runs = list_runs(reports)
        if not runs:
            out.print(f"no runs in {reports}/ yet: run the gate suite, the smoke suite or a rollout")
            return
        table = Table(title=f"runs in {reports}/")
        table.add_column("run", no_wrap=True)
        for column in ("kind", "service", "stage", "decision", "started"):
            table.add_column(column)
        for r in runs:
            started = datetime.fromtimestamp(float(r["started"]), tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if r.get(
                "started") else "-"  # fmt: skip
            stage = str(r.get("stage") if r.get("stage") is not None else "-")
            table.add_row(r["run_id"], r.get("kind", "?"), r.get("service", ""), stage, r.get("decision") or "-",
                          started)  # fmt: skip
        out.print(table)
        return
    run_dir = find_run(reports, run_id)
    record = RunRecord(run_dir)
    if refresh_series:
        from canary_checks.prometheus import MetricsSource

        config, _ = load(ctx)
        meta = json.loads((run_dir / RUN).read_text()) if (run_dir / RUN).exists() else {}
        if not meta.get("started"):
            raise ConfigError("the run recorded no start time, so its series cannot be read again", where=str(run_dir))
        end = float(meta.get("ended") or time.time())
        start = float(meta["started"]) if meta.get("kind") == "rollout" else end - GATE_RUN_SPAN
        series = record.series(config, MetricsSource(config), start, end)
        for error in series["errors"]:
            console.print(f"[yellow]series:[/] {error}", highlight=False, soft_wrap=True)
    html = record.build()
    if as_json:
        click.echo((run_dir / "summary.json").read_text(), nl=False)
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
        decision = summary["decision"]
        out.print(f"{run_dir.name}: [bold]{escape(decision['outcome'])}[/] — {escape(decision['why'])}",
                  highlight=False, soft_wrap=True)  # fmt: skip
        out.print(f"report: {html}\nsummary: {run_dir / 'summary.json'}")
