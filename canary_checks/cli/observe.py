"""``canary-checks monitor``, ``canary-checks watch`` and ``canary-checks replay`` (export, run): watching a rollout
live, rolling back one whose runner died, and judging a past release from its recorded metrics."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape

from canary_checks.cli.common import console, echo, load, out, reports_option
from canary_checks.cli.types import DURATION, INSTANT, STAGE, check_stages, fail


@click.group()
def replay() -> None:
    """Replay a past release from recorded metrics: would the gates have caught it?

    \b
    canary-checks replay export --start now-2h --end now release.json   (from the live Prometheus)
    canary-checks replay run release.json --every 30s                   (gates + comparisons over time)
    """


@replay.command("export")
@click.option("--start", "start", type=INSTANT, required=True, help="First instant: epoch, ISO time, or now-2h.")
@click.option("--end", "end", type=INSTANT, default="now", show_default=True, help="Last instant.")
@click.option(
    "--step", type=DURATION, default="5s", show_default=True, help="Sample spacing (at most half the window)."
)
@click.argument("out_file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def replay_export(ctx: click.Context, start: float, end: float, step: float, out_file: Path) -> None:
    """Write the query_range answer of every series the gates read (this service's namespace) to OUT_FILE: the
    built-in gates' and comparisons', and what the custom gates' and comparisons' own queries select."""
    from canary_checks.replay import export

    config, _ = load(ctx)
    if end - start < step:  # `--start now-30s --end now-30s` as well: the two are read a moment apart
        fail(ctx, "start", f"{_utc(start)} is not a --step ({step:g}s) before --end ({_utc(end)})")
    if step > config.window / 2:  # rate() over a window needs two samples in it
        half = config.window / 2
        fail(ctx, "step", f"{step:g}s is more than half the window ({config.window:g}s): the gates' rates over a "
                          f"window would have no two samples to read; use --step {half:g}s or less")  # fmt: skip

    def progress(message: str) -> None:
        console.print(message, style="dim", markup=False, highlight=False, soft_wrap=True)

    answer = export(config, start, end, step, progress=progress)
    out_file.write_text(json.dumps(answer))
    count = len(answer["data"]["result"])
    console.print(f"wrote {count} series, {(end - start) / 60:.0f} min every {step:g}s, to {out_file}")


def _cut(text: str, length: int) -> str:
    """``text``, at most ``length`` characters, cut at a word with an ellipsis."""
    return text if len(text) <= length else text[: length - 1].rsplit(" ", 1)[0] + "…"


def _utc(instant: float) -> str:
    return datetime.fromtimestamp(instant, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@replay.command("run")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--every", type=DURATION, default="30s", show_default=True, help="Evaluate every this often along the recording."
)
@click.option("--stage", type=STAGE, default=None, help="Stage the traffic-split gate judges against.")
@click.option("--start", "start", type=INSTANT, default=None, help="First instant to evaluate (default: a window in).")
@click.option(
    "--end", "end", type=INSTANT, default=None, help="Last instant to evaluate (default: the recording's end)."
)
@click.option("--strict-gates", is_flag=True, help="Warning gates count as failures too.")
@click.pass_context
def replay_run(
    ctx: click.Context,
    export_file: Path,
    every: float,
    stage: int | None,
    start: float | None,
    end: float | None,
    strict_gates: bool,
) -> None:
    """Evaluate the gates and the comparisons along EXPORT_FILE; exit 1 if the release would have rolled back, 2 if
    it would not but a gate could not be evaluated (a query the recording's Prometheus refused): no answer then."""
    from canary_checks.errors import CanaryError
    from canary_checks.replay import ReplayStep
    from canary_checks.replay import replay as run_replay

    config, _ = load(ctx)
    first_failure: ReplayStep | None = None
    errors: dict[str, CanaryError] = {}  # gates that could not be evaluated (a query Prometheus refused): the last

    def show(step: ReplayStep) -> None:
        nonlocal first_failure
        failing = step.failing(strict=strict_gates)
        held = step.held(strict=strict_gates)
        for name, result in step.results.items():
            if isinstance(result, CanaryError):
                errors[name] = result
        when = datetime.fromtimestamp(step.at, tz=UTC).strftime("%H:%M:%S")
        if failing:
            first_failure = first_failure or step
            text = "; ".join(f"{r.gate} ({_cut(r.summary, 140)})" for r in failing)
            out.print(f"{when}  [red]FAIL[/] {escape(text)}", highlight=False, soft_wrap=True)
        elif held:
            # an error's gist (what Prometheus answered); where, with the query, is said once at the end
            said = [f"{n} (error: {_cut(errors[n].what, 100)})" if isinstance(step.results.get(n), CanaryError) else n
                    for n in held]  # fmt: skip
            out.print(f"{when}  [yellow]hold[/] {escape(', '.join(said))}", highlight=False, soft_wrap=True)
        else:
            out.print(f"{when}  [green]pass[/] {len(step.results)} gates and comparisons", highlight=False)

    steps = run_replay(
        config,
        export_file,
        every=every,
        stage=stage,
        start=start,
        end=end,
        on_step=show,
    )
    if first_failure is not None:
        minutes = (first_failure.at - steps[0].at) / 60
        names = ", ".join(r.gate for r in first_failure.failing(strict=strict_gates))
        out.print(f"would have rolled back {minutes:.1f} min into the replay: {names}", markup=False, soft_wrap=True)
        sys.exit(1)
    if errors:  # a check that could not be read is not one that passed: the replay cannot answer
        for name, error in errors.items():
            why = f"{error.where}: {error.what}" if error.where else error.what
            console.print(f"error: {name} could not be evaluated: {why}", markup=False, soft_wrap=True)
        console.print(f"no gate failed over {len(steps)} evaluations, but {len(errors)} could not be evaluated: the "
                      "replay cannot tell whether this release would have been rolled back", markup=False,
                      soft_wrap=True)  # fmt: skip
        sys.exit(2)
    out.print(f"no gate failed over {len(steps)} evaluations: this release would not have been rolled back")


@click.command("monitor")
@click.argument("service", required=False)
@click.option("--namespace", default=None, help="Its namespace (default: namespace in the config).")
@click.option(
    "--interval", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="Seconds between samples."
)
@click.option(
    "--duration", type=DURATION, default=None, help="Stop after this long (30s, 10m, 1h; default: until Ctrl-C)."
)
@click.option(
    "--export-metrics",
    "export",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append every sample to this CSV (one row per side; values and statuses).",
)
@click.option(
    "--stage",
    type=STAGE,
    default=None,
    help="Judge against this stage's thresholds (default: the configured stage nearest the traffic split).",
)
@click.option(
    "--no-compare", is_flag=True, help="Leave out the sequential canary-vs-stable comparisons (and their evidence)."
)
@click.option("--plain", is_flag=True, help="One line per sample even on a terminal.")
@click.option(
    "--baseline",
    is_flag=True,
    help="Show the baseline between stable and canary, and compare the canary with it (default: baseline.enabled).",
)
@click.pass_context
def monitor_command(
    ctx: click.Context,
    service: str | None,
    namespace: str | None,
    interval: float,
    duration: float | None,
    export: Path | None,
    stage: int | None,
    no_compare: bool,
    plain: bool,
    baseline: bool,
) -> None:
    """Watch stable and canary (and a baseline) side by side: error rate, request rate, p50/p95/p99, success
    rate, CPU, memory, pods ready, traffic split — each coloured OK / WARNING / CRITICAL by the gate suite's own
    thresholds — and a recommendation: promote, hold or roll back, with the reason.

    \b
    SERVICE defaults to `service` in the config; with `services:` in it, SERVICE chooses one of them. On a
    terminal the dashboard redraws in place; piped or with --plain it prints one line per sample. If Prometheus
    goes away the dashboard says so and keeps sampling. The comparisons' evidence is the one `pytest suites/gate`
    uses (statistics.evidence_file).
    """
    from canary_checks.compare import evidence_path
    from canary_checks.monitor import CsvExport, Monitor, run

    config, path = load(ctx, service=service, namespace=namespace, baseline=baseline)
    if stage is not None:
        check_stages(ctx, config, "stage", stage)
    evidence = None if no_compare else evidence_path(config, path.parent if path else Path.cwd())
    exporter = CsvExport(export) if export else None
    monitor = Monitor(config, stage=stage, evidence=evidence)
    taken = 0
    try:
        taken = run(monitor, interval=interval, duration=duration, console=out, export=exporter,
                    live=False if plain else None)  # fmt: skip
    except KeyboardInterrupt:
        taken = monitor.number
    console.print(
        f"monitor: {taken} sample(s)" + (f"; CSV {export} ({exporter.rows} rows)" if exporter else ""),
        highlight=False,
    )


@click.command("watch")
@click.option(
    "--platform", type=click.Choice(["kubernetes", "sandbox"]), default="kubernetes", show_default=True,
    help="Where the rollouts are: the annotated canary Deployments of the config's namespace, or the local sandbox.",
)  # fmt: skip
@click.option("--interval", type=DURATION, default="10s", show_default=True, help="How often to look.")
@click.option("--once", is_flag=True, help="Look once and exit (a CronJob's schedule does the repeating).")
@reports_option()
@click.pass_context
def watch_command(ctx: click.Context, platform: str, interval: float, once: bool, reports: Path) -> None:
    """Roll back rollouts whose runner died: in progress, but its lease expired (run --lease-ttl).

    \b
    A runner renews its lease every third of its TTL. One killed, on a lost node, or cut off from the record
    stops renewing; once the lease has expired the rollout is rolled back, weight 0 first, as 'run --rollback'
    does, and the decision recorded and announced. Held and awaiting-promotion rollouts wait for a person and
    are left alone. Runs as a Deployment in the cluster (manifests/checks/watch.yaml) or beside the sandbox.
    """
    import signal
    import threading

    from canary_checks.watch import Watchdog, kube_candidates, sandbox_candidates

    config, path = load(ctx, sandbox=platform == "sandbox")
    if platform == "sandbox":
        from canary_checks.sandbox import Sandbox

        scan = sandbox_candidates(Sandbox(config))
    else:
        from canary_checks.kube import api_client

        k = config.kubernetes
        scan = kube_candidates(api_client(k.api_url, context=k.context, verify_tls=k.verify_tls), config, path)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    Watchdog(config, path, scan, echo=echo, reports=reports).run(interval, stop, once=once)
