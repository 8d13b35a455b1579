"""``canary-checks sandbox`` (up, down, status, fault, weight) and ``canary-checks demo``: the local sandbox."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from canary_checks.cli.common import console, load, out, reports_option, sandbox_of, suite_option
from canary_checks.cli.types import configured
from canary_checks.faults import FAULT_EFFECTS, FAULT_KINDS


@click.group()
def sandbox() -> None:
    """A local canary environment on real parts: Prometheus, HAProxy, demo pods, Locust."""


def _parse_faults(values: tuple[str, ...]) -> dict[str, float]:
    faults: dict[str, float] = {}
    for value in values:
        kind, _, number = value.partition("=")
        if kind not in FAULT_KINDS:
            raise click.BadParameter(f"unknown fault {kind!r}; one of: {', '.join(FAULT_KINDS)}", param_hint="--fault")
        field, _, default = FAULT_KINDS[kind]
        try:
            faults[field] = float(number) if number else default
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: expected KIND=NUMBER such as errors=20", param_hint="--fault"
            ) from None
    return faults


@sandbox.command("up")
@click.option(
    "--weight", type=click.IntRange(0, 100), default=5, show_default=True, help="Initial canary traffic, percent."
)
@configured("--rps", key="sandbox.rps", type=click.FloatRange(min=1), default=None,
            help="Requests per second from Locust")  # fmt: skip
@click.option(
    "--fault",
    "faults",
    multiple=True,
    metavar="KIND[=N]",
    help="Start the canary with a fault: "
    + ", ".join(f"{k} ({v[1]}, default {v[2]:g})" for k, v in FAULT_KINDS.items()),
)
@click.option("--locustfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option("--no-wait", is_flag=True, help="Return once everything runs, before Prometheus has data.")
@click.pass_context
def sandbox_up(
    ctx: click.Context, weight: int, rps: float | None, faults: tuple[str, ...], locustfile: Path | None, no_wait: bool
) -> None:
    """Start the sandbox in its state directory (sandbox.state_dir)."""
    config, _ = load(ctx, sandbox=True)
    if rps is not None:
        config = config.model_copy(update={"sandbox": config.sandbox.model_copy(update={"rps": rps})})
    box = sandbox_of(ctx, locustfile, config)
    canary_faults = _parse_faults(faults)
    box.up(weight=weight, faults={config.workload("canary"): canary_faults} if canary_faults else None)
    if not no_wait:
        console.print("[dim]sandbox:[/] waiting for Prometheus to scrape the first requests")
        box.wait_for_data()
    _print_status(box.status())
    stage = weight if weight in config.stages else config.stages[0]
    out.print(f"\nRun the gates: [bold]pytest suites/gate --stage {stage}[/]")


@sandbox.command("down")
@click.pass_context
def sandbox_down(ctx: click.Context) -> None:
    """Stop everything the sandbox started (its state directory stays, for the logs)."""
    stopped = sandbox_of(ctx).down()
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


def _print_status(status: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"sandbox in {status['state_dir']}")
    for column in ("component", "state", "pid", "log"):
        table.add_column(column)
    for name, c in status["components"].items():
        state = "[green]running[/]" if c["running"] else "[red]stopped[/]"
        table.add_row(name, state, str(c["pid"] or "-"), c["log"] or "-")
    out.print(table)
    for name, url in status["addresses"].items():
        out.print(f"  {name:<14} {url}")
    if "load" in status:
        load = status["load"]
        out.print(
            f"  load           {load['rps']:.0f} req/s from Locust "
            f"({load['requests']} requests, {load['failures']} failures so far)"
        )
    if "canary_weight" in status:
        out.print(f"  canary weight  {status['canary_weight']} %  (stable {100 - status['canary_weight']} %)")
    if "alerts" in status:
        firing = status["alerts"]
        out.print(f"  alerts         {len(firing)} firing in Alertmanager" + (":" if firing else ""))
        for a in firing:
            color = "red" if a["severity"] == "critical" else "yellow"
            out.print(f"    [{color}]{a['name']}[/] ({a['severity']}) {a['summary']}", highlight=False, soft_wrap=True)
    if status.get("pods"):
        _print_pods(status["pods"])


def _print_pods(pods: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="pods")
    for column in ("pod", "ready", "restarts", "waiting", "cpu s", "memory MiB", "faults"):
        table.add_column(column)
    for p in pods:
        memory = f"{p['memory_bytes'] / 2**20:.0f}" if p["memory_bytes"] else "-"
        cpu = f"{p['cpu_seconds']:.1f}" if p["cpu_seconds"] is not None else "-"
        faults = ", ".join(f"{k}={v:g}" for k, v in p["faults"].items()) or "-"
        ready = "[green]yes[/]" if p["ready"] else "[red]no[/]"
        table.add_row(p["pod"], ready, str(p["restarts"]), p["waiting"] or "-", cpu, memory, faults)
    out.print(table)


@sandbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def sandbox_status(ctx: click.Context, as_json: bool) -> None:
    """Show what runs where, the canary weight, the pods and their faults."""
    box = sandbox_of(ctx)
    status = box.status()
    if as_json:
        out.print_json(json.dumps(status))
    else:
        _print_status(status)
    if not any(c["running"] for c in status["components"].values()):
        sys.exit(3)


_FAULT_HELP = "\n".join(
    [
        "Inject a fault into the running canary (or stable), or clear them all.",
        "",
        "\b",
        *(f"{kind:<7} N   {FAULT_EFFECTS[kind]:<44} (default {FAULT_KINDS[kind][2]:g})" for kind in FAULT_KINDS),
        f"{'clear':<11} remove every fault of the target",
    ]
)


@sandbox.command("fault", help=_FAULT_HELP)
@click.argument("kind", type=click.Choice([*FAULT_KINDS, "clear"]))
@click.argument("value", type=float, required=False)
@click.option("--target", type=click.Choice(["canary", "stable", "baseline"]), default="canary", show_default=True,
              help="Whose pod: the canary's, stable's, or the baseline's (baseline.enabled).")  # fmt: skip
@click.pass_context
def sandbox_fault(ctx: click.Context, kind: str, value: float | None, target: str) -> None:
    if kind != "clear" and value is not None:
        from canary_checks.faults import FAULT_RANGES

        low, high, open_low = FAULT_RANGES[kind]
        if not (low < value <= high if open_low else low <= value <= high):
            side = "more than" if open_low else "from"
            raise click.BadParameter(
                f"{kind} takes {FAULT_KINDS[kind][1]}: {side} {low:g} to {high:g}; got {value:g}", param_hint="VALUE"
            )
    box = sandbox_of(ctx)
    config, _ = load(ctx, sandbox=True)
    current = box.faults().get(config.workload(target), {})
    if kind == "clear":
        faults: dict[str, float] = {}
    else:
        field, _, default = FAULT_KINDS[kind]
        faults = {**current, field: default if value is None else value}
    box.set_faults(target, faults)
    shown = ", ".join(f"{k}={v:g}" for k, v in faults.items()) or "none"
    out.print(f"{config.workload(target)} faults: {shown}")


@sandbox.command("weight")
@click.argument("percent", type=click.IntRange(0, 100))
@click.option("--baseline", "baseline", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Percent of traffic to the baseline pod (baseline.enabled), beside the canary's.")  # fmt: skip
@click.pass_context
def sandbox_weight(ctx: click.Context, percent: int, baseline: int) -> None:
    """Send PERCENT of traffic to the canary (HAProxy runtime API; no reload, no lost request)."""
    if baseline > 100 - percent:
        raise click.BadParameter(f"{baseline} beside a canary at {percent} % is more than the {100 - percent} % left",
                                 param_hint="--baseline")  # fmt: skip
    confirmed = sandbox_of(ctx).set_weight(percent, baseline)
    beside = f", baseline {baseline} %" if baseline else ""
    out.print(f"canary weight {confirmed} %{beside} (stable {100 - confirmed - baseline} %), confirmed by HAProxy")


@click.command()
@suite_option("--suite", "gate", "The gate suite")
@reports_option()
@click.option("--keep", is_flag=True, help="Leave the sandbox running afterwards.")
@click.option("--sticky", is_flag=True, help="Add a scene: sticky canary sessions (routing.sticky), two stages and "
              "a rollback as Locust's users see them.")  # fmt: skip
@click.option("--baseline", is_flag=True, help="Add a scene: a fresh baseline (baseline.enabled) — new pods that err "
              "more than stable's old ones, judged against stable and against the baseline.")  # fmt: skip
@click.option("--scaling", is_flag=True, help="Add a scene: capacity follows weight (rollout.scaling proportional, "
              "4 stable pods), the canary's pods at each stage, an overloaded one, a rollback.")  # fmt: skip
@click.option("--windows", is_flag=True, help="Add a scene: release windows (rollout.release_windows) on a demo "
              "clock — held from Thursday 17:00 to Monday 09:00, and a rollback never held.")  # fmt: skip
@click.pass_context
def demo(
    ctx: click.Context, suite: Path | None, reports: Path, keep: bool, sticky: bool, baseline: bool, scaling: bool,
    windows: bool,
) -> None:  # fmt: skip
    """The whole loop on the sandbox: a healthy canary through every stage, then faults and the gates that catch
    them. Starts the sandbox unless it runs, and stops it after unless --keep."""
    from canary_checks.sandbox import SandboxPlatform
    from canary_checks.sandbox.tour import run_tour
    from canary_checks.suite import locate

    if sticky and baseline:
        raise click.UsageError("--sticky and --baseline: a sticky client's cookie names canary or stable, and a "
                               "baseline would take clients of neither; run the demo once with each")  # fmt: skip
    config, path = load(ctx, sandbox=True, baseline=baseline)  # the sandbox this demo starts runs a baseline pod
    if sticky:  # the sandbox this demo starts writes HAProxy's cookie routes
        on = config.routing.sticky.model_copy(update={"enabled": True})
        config = config.model_copy(update={"routing": config.routing.model_copy(update={"sticky": on})})
    if scaling:  # the sandbox this demo starts runs several stable pods and a canary slot for each
        from canary_checks.sandbox.capacity import scaling_config

        config = scaling_config(config)
    box = sandbox_of(ctx, config=config)
    if box.is_up():  # a running sandbox must have what the scenes asked for
        platform = SandboxPlatform(box, config.service)
        running: dict[str, tuple[bool, Callable[[], bool], str, str]] = {
            "--scaling": (scaling, lambda: platform.canary_slots() >= 2, "several pods for the canary",
                          "rollout.scaling.mode: proportional and sandbox.stable_replicas: 4"),
            "--sticky": (sticky, lambda: box.router.sticky_map() is not None, "sticky sessions",
                         "routing.sticky.enabled: true"),
            "--baseline": (config.baseline.enabled, platform.has_baseline_pod, "a baseline pod",
                           "baseline.enabled: true"),
        }  # fmt: skip
        for flag, (asked, has, what, setting) in running.items():
            if asked and not has():
                raise click.UsageError(
                    f"{flag}: the sandbox running from {box.state_dir} was started without {what}; stop it with "
                    f"'canary-checks sandbox down' (the demo then starts one with them), or set {setting} in "
                    "canary.yaml and start it again"
                )
    ok = run_tour(box, config, path, suite=locate("gate", suite), reports=reports, keep=keep, console=out,
                  sticky=sticky, baseline=config.baseline.enabled, scaling=scaling, windows=windows)  # fmt: skip
    sys.exit(0 if ok else 1)
