"""The ``canary-checks`` command. It parses and delegates; every option is also settable as CANARY_<OPTION>.

It stays light: at module level only click, rich's console and the errors are imported, so ``--help`` answers in a
blink; each command imports what it uses (the config's pydantic models, the Prometheus client, the sandbox, SciPy
through the comparisons, the Kubernetes client) when it runs. tests/unit/test_cli.py keeps it so.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from canary_checks.errors import CanaryError, ConfigError
from canary_checks.faults import FAULT_KINDS
from canary_checks.serve import ServeOptions, format_size, parse_size

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.sandbox import Sandbox

console = Console(stderr=True)
out = Console()


def _echo(message: str) -> None:
    """A line as it is: messages carry gate summaries with brackets ("[family-wise error rate ≤ 0.05 …]") that rich
    would take for markup, and paths that must not be broken across lines."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def _config(
    ctx: click.Context, *, sandbox: bool = False, service: str | None = None, namespace: str | None = None
) -> tuple[CanaryConfig, Path | None]:
    """The config of this command. Only the sandbox's commands run without a file (on the sandbox's defaults);
    everything else judges a real service, so no canary.yaml is an error that says to run 'canary-checks init'.
    ``service`` chooses a section of a file with ``services:`` (else it renames the service, as ``namespace``
    overrides the namespace)."""
    from canary_checks.config import flag_overrides, load_config

    path = _config_path(ctx, sandbox=sandbox)
    obj: dict[str, Any] = ctx.ensure_object(dict)
    service = service or obj.get("service")
    configs: dict[tuple[str | None, str | None], CanaryConfig] = obj.setdefault("configs", {})
    if (service, namespace) not in configs:
        configs[service, namespace] = load_config(path, flag_overrides(service=service, namespace=namespace))
    return configs[service, namespace], path


def _config_path(ctx: click.Context, *, sandbox: bool = False) -> Path | None:
    """The config file of this command (found once)."""
    from canary_checks.config import find_config, require_config

    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "path" not in obj:
        explicit, search = obj.get("config_path"), (Path.cwd(),)
        obj["path"] = find_config(explicit, search=search) if sandbox else require_config(explicit, search=search)
    path: Path | None = obj["path"]
    return path


def _service_configs(ctx: click.Context) -> dict[str, CanaryConfig]:
    """Every service's settings in a config with `services:` (each validated now); empty for one service."""
    from canary_checks.config import read_yaml, service_sections

    path = _config_path(ctx)
    sections = service_sections(read_yaml(path), where=str(path)) if path is not None else {}
    return {name: _config(ctx, service=name)[0] for name in sections}


def _sandbox(ctx: click.Context, locustfile: Path | None = None) -> Sandbox:
    from canary_checks.sandbox import Sandbox

    config, _ = _config(ctx, sandbox=True)
    return Sandbox(config, locustfile=locustfile, progress=lambda m: console.print(f"[dim]sandbox:[/] {m}"))


@click.group(context_settings={"auto_envvar_prefix": "CANARY", "help_option_names": ["-h", "--help"]})
@click.option(
    "--canary-config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: ./canary.yaml; env CANARY_CONFIG).",
)
@click.option(
    "--service",
    "service",
    default=None,
    help="With `services:` in the config: the service of every command that names none itself (the sandbox, "
    "watch, replay); env CANARY_SERVICE.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, service: str | None, verbose: bool) -> None:
    """Canary-release verification: gates over live Prometheus metrics, run as pytest.

    \b
    In a service:     canary-checks init --service S --namespace N --prometheus-url U
    The gates:        pytest suites/gate --stage 25   (or: pytest --pyargs canary_checks.suites.gate)
    Smoke checks:     pytest suites/smoke [--target stable]
    Local sandbox:    canary-checks sandbox up | status | fault | weight | down
    The whole tour:   canary-checks demo
    Watch it:         canary-checks monitor auth
    Runs' reports:    canary-checks report [RUN_ID]
    Flagger, Argo:    canary-checks serve | canary-checks gates --stage N
    A dead runner:    canary-checks watch
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.ensure_object(dict).update(config_path=config_path, service=service)


@cli.group()
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
@click.option(
    "--rps", type=click.FloatRange(min=1), default=None, help="Requests per second from Locust (default: sandbox.rps)."
)
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
    config, _ = _config(ctx, sandbox=True)
    if rps is not None:
        config = config.model_copy(update={"sandbox": config.sandbox.model_copy(update={"rps": rps})})
        ctx.obj["config"] = config
    box = _sandbox(ctx, locustfile)
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
    stopped = _sandbox(ctx).down()
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
        pods = Table(title="pods")
        for column in ("pod", "ready", "restarts", "waiting", "cpu s", "memory MiB", "faults"):
            pods.add_column(column)
        for p in status["pods"]:
            memory = f"{p['memory_bytes'] / 2**20:.0f}" if p["memory_bytes"] else "-"
            cpu = f"{p['cpu_seconds']:.1f}" if p["cpu_seconds"] is not None else "-"
            faults = ", ".join(f"{k}={v:g}" for k, v in p["faults"].items()) or "-"
            ready = "[green]yes[/]" if p["ready"] else "[red]no[/]"
            pods.add_row(p["pod"], ready, str(p["restarts"]), p["waiting"] or "-", cpu, memory, faults)
        out.print(pods)


@sandbox.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def sandbox_status(ctx: click.Context, as_json: bool) -> None:
    """Show what runs where, the canary weight, the pods and their faults."""
    box = _sandbox(ctx)
    status = box.status()
    if as_json:
        out.print_json(json.dumps(status))
    else:
        _print_status(status)
    if not any(c["running"] for c in status["components"].values()):
        sys.exit(3)


@sandbox.command("fault")
@click.argument("kind", type=click.Choice([*FAULT_KINDS, "clear"]))
@click.argument("value", type=float, required=False)
@click.option("--target", type=click.Choice(["canary", "stable"]), default="canary", show_default=True)
@click.pass_context
def sandbox_fault(ctx: click.Context, kind: str, value: float | None, target: str) -> None:
    """Inject a fault into the running canary (or stable), or clear them all.

    \b
    errors  N   answer N % of requests with 500              (default 20)
    latency N   add N ms to every request                    (default 600)
    crash   N   exit N s after each start: a restart loop    (default 2)
    memory  N   allocate and keep N MiB every second         (default 16)
    cpu     N   keep N cores busy, up to 1                   (default 0.45)
    clear       remove every fault of the target
    """
    if kind != "clear" and value is not None:
        from canary_checks.faults import FAULT_RANGES

        low, high, open_low = FAULT_RANGES[kind]
        if not (low < value <= high if open_low else low <= value <= high):
            side = "more than" if open_low else "from"
            raise click.BadParameter(
                f"{kind} takes {FAULT_KINDS[kind][1]}: {side} {low:g} to {high:g}; got {value:g}", param_hint="VALUE"
            )
    box = _sandbox(ctx)
    config, _ = _config(ctx, sandbox=True)
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
@click.pass_context
def sandbox_weight(ctx: click.Context, percent: int) -> None:
    """Send PERCENT of traffic to the canary (HAProxy runtime API; no reload, no lost request)."""
    confirmed = _sandbox(ctx).set_weight(percent)
    out.print(f"canary weight {confirmed} % (stable {100 - confirmed} %), confirmed by HAProxy")


@cli.command("init")
@click.option(
    "--service", default=None,
    help="The service under release (default: this directory's name). Where canary.yaml describes other services, "
    "it is added to them: a section of `services:`.",
)  # fmt: skip
@click.option("--namespace", default=None, help="Its Kubernetes namespace (default: default).")
@click.option(
    "--mesh", type=click.Choice(["istio", "linkerd"]), default=None,
    help="Which metric names its Prometheus has (default: istio).",
)  # fmt: skip
@click.option(
    "--prometheus-url", default=None,
    help="Prometheus (or Thanos/Mimir query frontend) base URL (default: http://prometheus.monitoring.svc:9090).",
)  # fmt: skip
@click.option(
    "--url", default=None,
    help="The service's address through the mesh, for the smoke suite (default: http://SERVICE.NAMESPACE.svc."
    "cluster.local).",
)  # fmt: skip
@click.option(
    "--ci", type=click.Choice(["github", "gitlab", "none"]), default="github", show_default=True,
    help="Which CI example to write: .github/workflows/canary.yml, or ci/canary.gitlab-ci.yml for your "
    ".gitlab-ci.yml to include.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
def init_command(
    service: str | None,
    namespace: str | None,
    mesh: str | None,
    prometheus_url: str | None,
    url: str | None,
    ci: str,
    force: bool,
    directory: Path,
) -> None:
    """Set up a service's repository (DIRECTORY, default here) for canary checks.

    \b
    Writes canary.yaml (every setting with its default and meaning), suites/gate/ and suites/smoke/ (the
    packaged suites, to extend), conftest.py (your own fixtures) and a CI example; refuses to overwrite
    without --force. Then: pytest suites/smoke, and pytest suites/gate --stage 5.

    \b
    With a canary.yaml there already, --service S adds S to it (several services in one file): a section
    services.S with what differs for S (--namespace, --mesh, --prometheus-url, --url); every other setting is
    shared. Each command then takes --service to choose one.
    """
    from canary_checks.scaffold import init

    done = init(directory, service=service, namespace=namespace, mesh=mesh, prometheus_url=prometheus_url, url=url,
                ci=ci, force=force)  # fmt: skip
    c = done.config
    if done.added:
        _echo(f"added services.{c.service} to {directory / 'canary.yaml'} (namespace {c.namespace}, {c.mesh.value}, "
              f"smoke.url {c.smoke.url}); every other setting is shared")  # fmt: skip
        _echo(f"next:\n  1. canary-checks config show --service {c.service}   # what is in force for it\n"
              f"  2. pytest suites/smoke --service {c.service}\n"
              f"  3. pytest suites/gate --stage {c.stages[0]} --service {c.service}")  # fmt: skip
        return
    _echo(f"wrote into {directory}/ for {c.service} in namespace {c.namespace} ({c.mesh.value}):")
    for path in done.written:
        _echo(f"  {path}")
    steps = [
        f"check canary.yaml: Prometheus {c.prometheus.shown_url} (a token: prometheus.bearer_token_env), smoke.url "
        f"{c.smoke.url}, the workloads {c.workload('stable')} and {c.workload('canary')}",
        "pytest suites/smoke                      # the canary through its x-canary: true route",
        "pytest suites/gate --stage 5             # the first stage's gates (--hold-for 5m waits for a decision)",
    ]
    if done.ci is not None and done.ci.name.endswith("gitlab-ci.yml"):
        steps.append(f"include {done.ci} from .gitlab-ci.yml (include: {{local: {done.ci}}}); set PROMETHEUS_TOKEN "
                     "in its CI/CD variables if Prometheus needs one")  # fmt: skip
    elif done.ci is not None:
        steps.append(f"commit {done.ci} and set its PROMETHEUS_TOKEN secret if Prometheus needs one")
    _echo("next:\n" + "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1)))


@cli.group("config")
def config_group() -> None:
    """The configuration: what is in force, and every key."""


@config_group.command("show")
@click.option("--service", default=None, help="With `services:` in the config: the service whose settings to show.")
@click.pass_context
def config_show(ctx: click.Context, service: str | None) -> None:
    """Print the configuration in force (the file merged over the defaults) as YAML.

    With `services:` in the config, it is the shared settings with the service's section merged over them; the
    keys the section sets are listed first. Every service's section is checked (a CI lint of the file); the
    other commands check only the service they act on, so one team's mistake never blocks another's rollback.
    """
    import yaml

    from canary_checks.config import SERVICES_KEY, read_yaml, service_sections

    config, path = _config(ctx, sandbox=True, service=service)
    if path is not None:  # the file's check: every service's section, not only the one shown
        from canary_checks.config import config_from

        config_from(read_yaml(path), where=str(path), service=config.service, every_service=True)
    click.echo(f"# {path or 'built-in defaults (no canary.yaml found)'}")
    from canary_checks.errors import redact_url

    sections = service_sections(read_yaml(path)) if path is not None else {}
    if sections:
        own = _leaf_keys(sections[config.service])
        click.echo(f"# service {config.service}, one of {', '.join(sections)} (--service chooses)")
        click.echo(f"# from {SERVICES_KEY}.{config.service}: {', '.join(own) or 'nothing (every setting is shared)'}")
        click.echo("# everything else: the shared (top-level) settings, then the built-in defaults")
    click.echo(redact_url(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)), nl=False)


def _leaf_keys(section: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys a raw section sets (a list or a scalar is one key; a mapping, each of its keys)."""
    keys: list[str] = []
    for key, value in section.items():
        name = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return keys


@config_group.command("reference")
def config_reference() -> None:
    """Print every configuration key with its default and meaning (docs/configuration.md)."""
    from canary_checks.config import reference_markdown

    click.echo(reference_markdown(), nl=False)


def _steps(value: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected percents separated by commas such as 5,25,50,100; got {value!r}") from None
    if not steps or list(steps) != sorted(set(steps)) or steps[-1] != 100 or steps[0] <= 0:
        raise click.BadParameter(f"steps must be ascending percents ending at 100, such as 5,25,50,100; got {value!r}")
    return steps


FC = TypeVar("FC", bound=Callable[..., Any])


def _suite_option(flag: str, kind: str, what: str) -> Callable[[FC], FC]:
    """A suite directory option: the team's ./suites/<kind> (canary-checks init) when there is one, else the
    packaged suite."""
    where = f"default: ./suites/{kind} if there is one, else the packaged suite"
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path), default=None, help=f"{what} ({where}).")


def _duration(value: str, option: str) -> float:
    """A duration option's value in seconds; a mistake names the option."""
    from canary_checks.config import parse_duration

    try:
        return parse_duration(value)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


class _StageBar:
    """A progress bar per stage wait, in a terminal."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=out)
        self.tasks: dict[int, Any] = {}
        self.progress.start()

    def update(self, stage: int, total: float, left: float) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(f"stage {stage} %, polling critical gates", total=total)
        self.progress.update(self.tasks[stage], completed=total - left)

    def stop(self) -> None:
        self.progress.stop()


@cli.command()
@click.argument("service")
@click.argument("image")
@click.option("--namespace", default=None, help="Namespace (default: `namespace` in canary.yaml, orion).")
@click.option(
    "--mesh",
    type=click.Choice(["istio", "linkerd", "gateway-api", "sandbox"]),
    default=None,
    help="What moves the traffic: the VirtualService, TrafficSplit or HTTPRoute named SERVICE, or the sandbox "
    "(default: linkerd for a service whose `mesh` is linkerd, else istio).",
)
@click.option("--error-threshold", type=click.FloatRange(0, 100), default=None, help="Error rate gate, percent (5).")
@click.option("--latency-p95", type=click.FloatRange(min=0), default=None, help="p95 latency gate, ms (500).")
@click.option(
    "--traffic-steps",
    default=None,
    help="Canary percent at each stage (default: the service's `stages` in the config, 5,25,50,100).",
)
@click.option(
    "--step-duration", default="5m", show_default=True, help="How long each stage runs before its gates: 30s, 5m."
)
@click.option(
    "--poll-interval", default="10s", show_default=True, help="How often critical gates are polled in a stage."
)
@click.option("--ready-timeout", default="5m", show_default=True, help="How long a Deployment may take to be ready.")
@click.option("--dry-run", is_flag=True, help="Print every change it would make, and make none.")
@click.option("--skip-validation", is_flag=True, help="Do not check Deployments, routing and Prometheus first.")
@click.option("--auto-promote", is_flag=True, help="Promote after the last stage without asking.")
@click.option(
    "--rollback", "rollback_now", is_flag=True, help="Roll back the rollout of SERVICE in progress, and stop."
)
@click.option(
    "--on-undecided",
    type=click.Choice(["hold", "rollback", "proceed"]),
    default=None,
    help="When only canary-vs-stable comparisons are still undecided at the end of a stage's extension: hold the "
    "weight for a person (exit 3), roll back, or go on (default: rollout.on_undecided, hold).",
)
@click.option(
    "--max-extension",
    default=None,
    help="How long a stage that cannot decide may run past --step-duration (default: rollout.max_extension, "
    "else as long again as the step).",
)
@click.option(
    "--outside-window",
    type=click.Choice(["wait", "hold"]),
    default=None,
    help="When the next step (deploy, a higher weight, promotion) falls outside rollout.release_windows: wait "
    "there polling the critical gates, or hold (exit 3, the weight stays) for a run inside a window (default: "
    "rollout.release_windows.outside, wait). A rollback is never held.",
)
@click.option(
    "--lease-ttl",
    default="60s",
    show_default=True,
    help="How long this runner may go unheard before another 'run' may take over and 'canary-checks watch' rolls "
    "the rollout back (the runner renews it every third of that).",
)
@click.option(
    "--proceed",
    is_flag=True,
    help="A person's decision for a rollout held on undecided comparisons: count its stage as passed and go on.",
)
@_suite_option("--suite", "gate", "The gate suite each stage passes")
@click.option(
    "--smoke-suite",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run this smoke suite against the canary once it is ready, before any traffic moves; a failing smoke "
    "check rolls back. Off unless given ('--smoke-suite suites/smoke').",
)
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.pass_context
def run(
    ctx: click.Context,
    service: str,
    image: str,
    namespace: str | None,
    mesh: str | None,
    error_threshold: float | None,
    latency_p95: float | None,
    traffic_steps: str | None,
    step_duration: str,
    poll_interval: str,
    ready_timeout: str,
    dry_run: bool,
    skip_validation: bool,
    auto_promote: bool,
    rollback_now: bool,
    on_undecided: str | None,
    max_extension: str | None,
    outside_window: str | None,
    proceed: bool,
    lease_ttl: str,
    suite: Path | None,
    smoke_suite: Path | None,
    reports: Path,
) -> None:
    """Progressive rollout of IMAGE as the canary of SERVICE: each stage passes its gate suite, or it rolls back.
    With `services:` in the config, SERVICE is one of them, judged on its own settings.

    \b
    1. validate: Deployments, routing resource (not managed by Flagger/Argo), Prometheus;
    2. deploy the canary with IMAGE and wait until it is ready (then --smoke-suite, through the header route);
    3. each step: set the weight, wait --step-duration polling critical gates, run pytest suites/gate --stage N;
       outside rollout.release_windows nothing moves forward (--outside-window: wait there, or hold);
    4. a failing gate: weight 0 first, then the canary scaled down, exit 1 naming the gates;
       checks that cannot decide yet extend the stage (--max-extension); if only comparisons are still
       undecided then, --on-undecided: hold (exit 3, the weight stays), rollback, or proceed;
    5. after 100 %: promote (stable gets IMAGE) with --auto-promote, or when you confirm.
    Run it again after a stop to resume (the stage's gates run again), with --proceed to go on past a held
    stage, or with --rollback to undo.
    """
    from canary_checks.config import OutsideWindow, UndecidedPolicy
    from canary_checks.prometheus import MetricsSource
    from canary_checks.runner import Rollout, RolloutOptions
    from canary_checks.suite import locate

    config, path = _config(ctx, sandbox=mesh == "sandbox", service=service, namespace=namespace)
    router_kind = mesh or ("linkerd" if config.mesh.value == "linkerd" else "istio")
    steps = _steps(traffic_steps) if traffic_steps is not None else config.stages
    unknown = [step for step in steps if step not in config.stages]
    if unknown:  # each step's gate suite judges that stage's thresholds: it must be one of the stages
        raise click.BadParameter(
            f"{', '.join(map(str, unknown))} {'is' if len(unknown) == 1 else 'are'} not among the stages "
            f"{list(config.stages)} of {config.service} in {path or 'the config'}; leave --traffic-steps out to "
            "take those, or add the steps to `stages`",
            param_hint="--traffic-steps",
        )
    thresholds: dict[str, dict[str, Any]] = {}
    if error_threshold is not None:
        thresholds["error_rate"] = {"threshold": error_threshold}
    if latency_p95 is not None:
        thresholds["latency_p95"] = {"threshold": latency_p95}
    options = RolloutOptions(
        service=service,
        image=image,
        steps=steps,
        step_duration=_duration(step_duration, "--step-duration"),
        poll_interval=_duration(poll_interval, "--poll-interval"),
        ready_timeout=_duration(ready_timeout, "--ready-timeout"),
        suite=locate("gate", suite),
        smoke_suite=locate("smoke", smoke_suite, option="--smoke-suite") if smoke_suite is not None else None,
        reports=reports,
        config_path=path,
        thresholds=thresholds,
        auto_promote=auto_promote,
        dry_run=dry_run,
        skip_validation=skip_validation,
        rollback=rollback_now,
        confirm=(lambda q: click.confirm(q, default=False)) if sys.stdin.isatty() else None,
        on_undecided=UndecidedPolicy(on_undecided) if on_undecided else None,
        max_extension=_duration(max_extension, "--max-extension") if max_extension is not None else None,
        outside_window=OutsideWindow(outside_window) if outside_window else None,
        proceed=proceed,
        lease_ttl=_duration(lease_ttl, "--lease-ttl"),
        router_kind=router_kind,
        suite_args=("--service", config.service, "--namespace", config.namespace),
    )
    bar = _StageBar() if out.is_terminal else None
    on_wait = bar.update if bar else None
    if router_kind == "sandbox":
        from canary_checks.sandbox import Sandbox, SandboxPlatform

        box = Sandbox(config)
        rollout = Rollout(
            config,
            SandboxPlatform(box, service),
            box.router,
            options,
            source=MetricsSource(config),
            echo=_echo,
            on_wait=on_wait,
        )
    else:
        from canary_checks.kube import KubePlatform, api_client
        from canary_checks.traffic import kube_router

        k = config.kubernetes
        api = api_client(k.api_url, context=k.context, verify_tls=k.verify_tls)
        router = kube_router(router_kind, api, config.namespace, service)
        platform = KubePlatform(api, config.namespace, config.workload("stable"), config.workload("canary"))
        rollout = Rollout(
            config,
            platform,
            router,
            options,
            source=MetricsSource(config),
            echo=_echo,
            controller=router.controller,
            router_problems=router.problems,
            on_wait=on_wait,
        )
    try:
        code = rollout.run()
    finally:
        if bar:
            bar.stop()
    sys.exit(code)


def _instant(value: str) -> float:
    """An instant: epoch seconds, an ISO 8601 time (UTC unless it says), 'now', or 'now-10m'."""
    from canary_checks.config import parse_duration

    text = value.strip()
    try:
        if text == "now" or text.startswith("now-"):
            return time.time() - (parse_duration(text[4:]) if text != "now" else 0.0)
        try:
            return float(text)
        except ValueError:
            moment = datetime.fromisoformat(text)
            return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"expected epoch seconds, an ISO time such as 2026-11-27T10:00:00Z, 'now' or 'now-30m'; got {value!r}"
        ) from None


@cli.group()
def replay() -> None:
    """Replay a past release from recorded metrics: would the gates have caught it?

    \b
    canary-checks replay export --start now-2h --end now release.json   (from the live Prometheus)
    canary-checks replay run release.json --every 30s                   (gates + comparisons over time)
    """


@replay.command("export")
@click.option("--start", "start", required=True, help="First instant: epoch, ISO time, or now-2h.")
@click.option("--end", "end", default="now", show_default=True, help="Last instant.")
@click.option("--step", default="5s", show_default=True, help="Sample spacing (at most half the window).")
@click.argument("out_file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def replay_export(ctx: click.Context, start: str, end: str, step: str, out_file: Path) -> None:
    """Write the query_range answer of every series the gates read (this service's namespace) to OUT_FILE."""
    from canary_checks.replay import export

    config, _ = _config(ctx)
    first, last, every = _instant(start), _instant(end), _duration(step, "--step")
    if first >= last:
        raise click.BadParameter(f"--start must be before --end ({start} is not before {end})")
    answer = export(config, first, last, every, progress=lambda m: console.print(f"[dim]{m}[/]"))
    out_file.write_text(json.dumps(answer))
    count = len(answer["data"]["result"])
    console.print(f"wrote {count} series, {(last - first) / 60:.0f} min every {every:g}s, to {out_file}")


@replay.command("run")
@click.argument("export_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--every", default="30s", show_default=True, help="Evaluate every this often along the recording.")
@click.option("--stage", type=int, default=None, help="Stage the traffic-split gate judges against.")
@click.option("--start", "start", default=None, help="First instant to evaluate (default: a window in).")
@click.option("--end", "end", default=None, help="Last instant to evaluate (default: the recording's end).")
@click.option("--strict-gates", is_flag=True, help="Warning gates count as failures too.")
@click.pass_context
def replay_run(
    ctx: click.Context,
    export_file: Path,
    every: str,
    stage: int | None,
    start: str | None,
    end: str | None,
    strict_gates: bool,
) -> None:
    """Evaluate the gates and the comparisons along EXPORT_FILE; exit 1 if the release would have rolled back."""
    from canary_checks.replay import ReplayStep
    from canary_checks.replay import replay as run_replay

    config, _ = _config(ctx)
    first_failure: ReplayStep | None = None

    def show(step: ReplayStep) -> None:
        nonlocal first_failure
        failing = step.failing(strict=strict_gates)
        held = step.held(strict=strict_gates)
        when = datetime.fromtimestamp(step.at, tz=UTC).strftime("%H:%M:%S")
        if failing:
            first_failure = first_failure or step
            text = "; ".join(f"{r.gate} ({r.summary[:140]})" for r in failing)
            out.print(f"{when}  [red]FAIL[/] {text}", highlight=False, soft_wrap=True)
        elif held:
            out.print(f"{when}  [yellow]hold[/] {', '.join(held)}", highlight=False)
        else:
            out.print(f"{when}  [green]pass[/] {len(step.results)} gates and comparisons", highlight=False)

    steps = run_replay(
        config,
        export_file,
        every=_duration(every, "--every"),
        stage=stage,
        start=_instant(start) if start else None,
        end=_instant(end) if end else None,
        on_step=show,
    )
    if first_failure is not None:
        minutes = (first_failure.at - steps[0].at) / 60
        names = ", ".join(r.gate for r in first_failure.failing(strict=strict_gates))
        out.print(f"would have rolled back {minutes:.1f} min into the replay: {names}")
        sys.exit(1)
    out.print(f"no gate failed over {len(steps)} evaluations: this release would not have been rolled back")


@cli.group()
def manifests() -> None:
    """Kubernetes manifests and Prometheus alert rules for your services."""


def _service_image(value: str) -> tuple[str, str]:
    name, sep, image = value.partition("=")
    if not sep or not name or not image:
        raise click.BadParameter(f"expected NAME=IMAGE such as cart=registry.example/cart:1.2; got {value!r}")
    return name.strip(), image.strip()


def _values_keys() -> str:
    """Every key of the values file, as the help's last block."""
    import textwrap

    from canary_checks.manifests import values_reference

    lines = ["\b", "Every key of the values file (default):"]
    for key, default, meaning in values_reference():
        lines.append(f"  {key} ({default})")
        lines.extend(textwrap.wrap(meaning, 100, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


_VALUES_EXAMPLE = """\b
    namespace: shop                          # where everything goes
    checks_image: registry.example/canary-checks:0.1.0   # docker/checks.Dockerfile, pushed
    services:
      - name: cart
        image: registry.example/cart:1.2     # the stable Deployment's image
        port: 8080                           # optional, with the keys below
        cpu_limit: "1"
        memory_limit: 512Mi
"""


class _ValuesHelp(click.Command):
    """``--help`` ends with every key of the values file, read from the models only when help is asked for (the
    models load pydantic: the rest of the CLI's help stays fast)."""

    keys_added = False

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.help is not None and not self.keys_added:
            self.help, self.keys_added = f"{self.help}\n\n{_values_keys()}\n", True
        super().format_help_text(ctx, formatter)


@manifests.command(
    "render",
    cls=_ValuesHelp,
    help=f"""Write the manifests of your services: per service base.yaml (stable and canary Deployments,
Services, ServiceMonitors, NetworkPolicy, PodDisruptionBudgets) and routing for Istio, Linkerd and Gateway API;
the runner's RBAC, the checks in the cluster (Flagger webhook, Argo AnalysisTemplate), the alert rules and the
Grafana dashboard.

Say what to render with a values file (--values) and/or flags (--namespace, --service NAME=IMAGE, repeatable;
flags win over the file). With neither, it renders the demo's four services in namespace orion (this
repository's manifests/). A values file:

{_VALUES_EXAMPLE}
Distributed Locust (load/locust.yaml) is written only with a locustfile: --locustfile, load.locustfile in the
values file, ./load/locustfile.py if it exists, or for the demo's services the sandbox's own.

\b
Examples:
    canary-checks manifests render --values deploy/values.yaml --out deploy/manifests
    canary-checks manifests render --namespace shop --service cart=registry.example/cart:1.2 --out k8s
""",
)
@click.option(
    "--values",
    "values_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Values file: namespace, services (name, image, ...) and more; see above.",
)
@click.option("--namespace", default=None, help="Namespace of everything rendered (over the values file's).")
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="NAME=IMAGE",
    type=_service_image,
    help="A service and its stable image; repeatable. Sets the image of a service of the values file, or adds one.",
)
@click.option(
    "--locustfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Ship this locustfile to a distributed Locust (default: ./load/locustfile.py if it exists; for the demo's "
    "services the sandbox's own; else none).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("manifests"), show_default=True)
def manifests_render(
    values_file: Path | None,
    namespace: str | None,
    services: tuple[tuple[str, str], ...],
    locustfile: Path | None,
    out: Path,
) -> None:
    from canary_checks.manifests import load_values, write_all

    values = load_values(values_file, namespace=namespace, services=services)
    if locustfile is None and values.load.locustfile is None:
        from canary_checks.sandbox import LOCUSTFILE

        own = Path("load/locustfile.py")
        demo = values_file is None and not namespace and not services
        locustfile = own if own.is_file() else LOCUSTFILE if demo else None
    written = write_all(out, values, locustfile)
    out_text = "\n".join(f"  {p}" for p in written)
    click.echo(f"wrote {len(written)} files for namespace {values.namespace}:\n{out_text}")
    if locustfile is None and values.load.locustfile is None:
        click.echo("no locustfile: load/locust.yaml not written (pass --locustfile to add a distributed Locust)")
    if "checks_image" not in values.model_fields_set:
        click.echo(
            f"checks/ and argo/ run the image {values.checks_image}: build docker/checks.Dockerfile, push it to "
            "your registry and set checks_image in the values file"
        )


@cli.command("monitor")
@click.argument("service", required=False)
@click.option("--namespace", default=None, help="Its namespace (default: namespace in the config).")
@click.option(
    "--interval", type=click.FloatRange(min=0.5), default=10.0, show_default=True, help="Seconds between samples."
)
@click.option(
    "--duration",
    default=None,
    metavar="DURATION",
    help="Stop after this long (30s, 10m, 1h; default: until Ctrl-C).",
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
    type=int,
    default=None,
    help="Judge against this stage's thresholds (default: the configured stage nearest the traffic split).",
)
@click.option(
    "--no-compare", is_flag=True, help="Leave out the sequential canary-vs-stable comparisons (and their evidence)."
)
@click.option("--plain", is_flag=True, help="One line per sample even on a terminal.")
@click.pass_context
def monitor_command(
    ctx: click.Context,
    service: str | None,
    namespace: str | None,
    interval: float,
    duration: str | None,
    export: Path | None,
    stage: int | None,
    no_compare: bool,
    plain: bool,
) -> None:
    """Watch stable and canary side by side: error rate, request rate, p50/p95/p99, success rate, CPU, memory,
    pods ready, traffic split — each coloured OK / WARNING / CRITICAL by the gate suite's own thresholds — and a
    recommendation: promote, hold or roll back, with the reason.

    \b
    SERVICE defaults to `service` in the config; with `services:` in it, SERVICE chooses one of them. On a
    terminal the dashboard redraws in place; piped or with --plain it prints one line per sample. If Prometheus
    goes away the dashboard says so and keeps sampling. The comparisons' evidence is the one `pytest suites/gate`
    uses (statistics.evidence_file).
    """
    from canary_checks.compare import evidence_path
    from canary_checks.config import parse_duration
    from canary_checks.monitor import CsvExport, Monitor, run

    config, path = _config(ctx, service=service, namespace=namespace)
    if stage is not None and stage not in config.stages:
        raise click.BadParameter(f"{stage} is not one of the stages {list(config.stages)}", param_hint="--stage")
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--duration") from None
    evidence = None if no_compare else evidence_path(config, path.parent if path else Path.cwd())
    exporter = CsvExport(export) if export else None
    monitor = Monitor(config, stage=stage, evidence=evidence)
    taken = 0
    try:
        taken = run(monitor, interval=interval, duration=seconds, console=out, export=exporter,
                    live=False if plain else None)  # fmt: skip
    except KeyboardInterrupt:
        taken = monitor.number
    console.print(
        f"monitor: {taken} sample(s)" + (f"; CSV {export} ({exporter.rows} rows)" if exporter else ""),
        highlight=False,
    )


@cli.command("gates")
@click.option("--stage", type=int, required=True, help="The stage being judged, one of the configured stages.")
@click.option(
    "--service",
    default=None,
    help="Service under release: one of `services:` in the config, or (one-service config) over `service`.",
)
@click.option("--namespace", default=None, help="Its namespace (default: `namespace`).")
@click.option(
    "--hold-for",
    default="5m",
    show_default=True,
    help="How long gates that cannot decide yet (no data, too few requests, inconclusive) may hold the stage "
    "before that is a failure.",
)
@click.option("--poll-interval", default="15s", show_default=True, help="How often a held stage's suite runs again.")
@_suite_option("--suite", "gate", "The gate suite")
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.option(
    "--canary-evidence",
    "evidence",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the comparisons' evidence accumulates (default: statistics.evidence_file).",
)
@click.option("--threshold", "thresholds", multiple=True, metavar="GATE=VALUE", help="As pytest's --threshold.")
@click.pass_context
def gates_command(
    ctx: click.Context,
    stage: int,
    service: str | None,
    namespace: str | None,
    hold_for: str,
    poll_interval: str,
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
    from canary_checks.prometheus import MetricsSource
    from canary_checks.report import build_report, new_run_id, record_series, write_run
    from canary_checks.suite import decide_stage, locate

    config, path = _config(ctx, service=service, namespace=namespace)
    suite = locate("gate", suite)
    if stage not in config.stages:
        raise click.BadParameter(f"{stage} is not one of the stages {list(config.stages)}", param_hint="--stage")
    hold, poll = _duration(hold_for, "--hold-for"), _duration(poll_interval, "--poll-interval")
    run_dir = reports / new_run_id("gate")
    started = time.time()
    write_run(run_dir, kind="gate", service=config.service, namespace=config.namespace, stage=stage, started=started,
              prometheus=config.prometheus.shown_url, window=config.window)  # fmt: skip
    extra = ["--service", config.service, "--namespace", config.namespace, *(f"--threshold={t}" for t in thresholds)]
    if evidence is not None:
        extra.append(f"--canary-evidence={evidence}")

    def junit(attempt: int) -> Path:
        return run_dir / (f"stage-{stage}.xml" if attempt == 1 else f"stage-{stage}-retry{attempt - 1}.xml")

    def held(run: Any, why: str) -> None:
        console.print(f"stage {stage} %: holding ({why}); again in {poll:g} s", markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip

    decision = decide_stage(suite, stage, junit, deadline=time.monotonic() + hold, poll=poll, config_path=path,
                            extra_args=extra, on_hold=held)  # fmt: skip
    write_run(run_dir, ended=time.time(), exit_status=decision.run.exit_code)
    try:
        record_series(config, MetricsSource(config), run_dir, time.time() - 900, time.time())
        console.print(f"report: {build_report(run_dir)}", markup=False, highlight=False, soft_wrap=True)
    except (CanaryError, OSError) as e:
        console.print(f"the report could not be written: {getattr(e, 'message', e)}", highlight=False)
    _echo(decision.why)
    sys.exit({"passed": 0, "broken": 2, "unreadable": 2}.get(decision.outcome, 1))


@cli.command("watch")
@click.option(
    "--platform", type=click.Choice(["kubernetes", "sandbox"]), default="kubernetes", show_default=True,
    help="Where the rollouts are: the annotated canary Deployments of the config's namespace, or the local sandbox.",
)  # fmt: skip
@click.option("--interval", default="10s", show_default=True, help="How often to look.")
@click.option("--once", is_flag=True, help="Look once and exit (a CronJob's schedule does the repeating).")
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.pass_context
def watch_command(ctx: click.Context, platform: str, interval: str, once: bool, reports: Path) -> None:
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

    every = _duration(interval, "--interval")
    config, path = _config(ctx, sandbox=platform == "sandbox")
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
    Watchdog(config, path, scan, echo=_echo, reports=reports).run(every, stop, once=once)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a Pod).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--token-env",
    default="CANARY_WEBHOOK_TOKEN",
    show_default=True,
    help="Environment variable holding the shared token every call must carry.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Or a file holding it (a mounted Secret).",
)
@click.option(
    "--service-token-env",
    "service_tokens",
    multiple=True,
    metavar="SERVICE=VARIABLE",
    help="Calls for SERVICE must carry the token in this environment variable instead of the shared one; "
    "repeatable. The shared token may then be left unset if every service has its own.",
)
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.option(
    "--suite-timeout",
    default=f"{ServeOptions.suite_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest a suite may run before the call answers 504 (keep it under the webhook's timeout in the Canary).",
)
@click.option(
    "--max-runs",
    type=click.IntRange(1, 64),
    default=ServeOptions.max_runs,
    show_default=True,
    help="Suites running at once across all services (one per service always); more calls get 429.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(2, 10000),
    default=ServeOptions.max_connections,
    show_default=True,
    help="Connections open at once (more than --max-runs, so the probes always get one). At the cap, the one that "
    "has been sending its request the longest is closed (408) to make room; when every one waits for a suite, the "
    "new one gets 503.",
)
@click.option(
    "--header-timeout",
    default=f"{ServeOptions.header_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest from connecting to the end of a request's headers; a slower client gets 408 and is closed.",
)
@click.option(
    "--request-timeout",
    default=f"{ServeOptions.request_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest from connecting to the end of a request's body (at least --header-timeout); then 408.",
)
@click.option(
    "--keep-reports",
    type=click.IntRange(min=1),
    default=ServeOptions.keep_reports,
    show_default=True,
    help="Webhook runs kept in --reports; the oldest beyond are deleted after each call.",
)
@click.option(
    "--reports-max-size",
    default=format_size(ServeOptions.reports_max_bytes),
    show_default=True,
    metavar="SIZE",
    help="Disk the webhook runs in --reports may take (bytes, or with Ki, Mi, Gi); the oldest are deleted first. "
    "Keep it well under the volume's size (the manifest's emptyDir: 256Mi).",
)
@_suite_option("--gate-suite", "gate", "The gate suite")
@_suite_option("--smoke-suite", "smoke", "The smoke suite")
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    token_env: str,
    token_file: Path | None,
    service_tokens: tuple[str, ...],
    reports: Path,
    suite_timeout: str,
    max_runs: int,
    max_connections: int,
    header_timeout: str,
    request_timeout: str,
    keep_reports: int,
    reports_max_size: str,
    gate_suite: Path | None,
    smoke_suite: Path | None,
) -> None:
    """Answer Flagger's webhooks with the gate and smoke suites.

    \b
    POST /flagger/pre-rollout               smoke suite against the canary (header route)
    POST /flagger/rollout                   gate suite (every analysis interval)
    POST /flagger/confirm-traffic-increase  gate suite, before each weight step
    POST /flagger/confirm-promotion         gate suite, before promotion
    GET  /healthz                           liveness/readiness (no token)

    200 passed; 412 a gate failed or could not decide (the body names them); 401 without the token
    (Authorization: Bearer TOKEN, or metadata.token in the Canary's webhook); 429 while a suite of the same service
    runs; 504 past --suite-timeout. The payload's name and namespace pick the service (with `services:` in the
    config, one of them: another name gets 404); metadata.stage picks the stage's thresholds (default: the
    configured stage nearest the observed split). See docs/integrations.md.

    What a client may cost: headers within --header-timeout, a body of at most 64 KiB with its Content-Length
    (else 411, 400 or 413, before any of it is read) within --request-timeout, one of --max-connections.
    Every option can be set as CANARY_SERVE_<OPTION>, e.g. CANARY_SERVE_MAX_CONNECTIONS=128.
    """
    import os
    import signal
    import threading

    from canary_checks.config import parse_duration
    from canary_checks.serve import WebhookServer
    from canary_checks.suite import locate

    durations: dict[str, float] = {}
    for flag, text in (("--suite-timeout", suite_timeout), ("--header-timeout", header_timeout),
                       ("--request-timeout", request_timeout)):  # fmt: skip
        try:
            durations[flag] = parse_duration(text)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint=flag) from None
    if durations["--request-timeout"] < durations["--header-timeout"]:
        raise click.UsageError(
            f"--request-timeout ({request_timeout}) is shorter than --header-timeout ({header_timeout}): a request "
            "cannot end before its headers; raise --request-timeout or lower --header-timeout"
        )
    if max_connections <= max_runs:
        raise click.UsageError(
            f"--max-connections ({max_connections}) must be more than --max-runs ({max_runs}): while the suites run, "
            "the probes and the other calls' 429 answers need connections too; raise --max-connections"
        )
    try:
        reports_max_bytes = parse_size(reports_max_size)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--reports-max-size") from None
    gate_suite = locate("gate", gate_suite, option="--gate-suite")
    smoke_suite = locate("smoke", smoke_suite, option="--smoke-suite")

    services = _service_configs(ctx)
    config, path = _config(ctx, service=next(iter(services), None))
    served = list(services) or [config.service]
    own = _service_tokens(service_tokens, served)
    token = token_file.read_text().strip() if token_file else os.environ.get(token_env, "").strip()
    without = [name for name in served if name not in own]
    if not token and without:
        raise ConfigError(
            "no webhook token: every call must be authenticated"
            + (f" (the calls for {', '.join(without)})" if own else ""),
            where=str(token_file) if token_file else f"${token_env}",
            fix=f"export {token_env}=<a long random string> (the same as the Canary's webhook sends), or --token-file"
            + (", or --service-token-env SERVICE=VARIABLE for each of them" if own else ""),
        )
    options = ServeOptions(token=token, host=host, port=port, reports=reports, gate_suite=gate_suite,
                           smoke_suite=smoke_suite, suite_timeout=durations["--suite-timeout"], config_path=path,
                           max_runs=max_runs, max_connections=max_connections,
                           header_timeout=durations["--header-timeout"],
                           request_timeout=durations["--request-timeout"], keep_reports=keep_reports,
                           reports_max_bytes=reports_max_bytes, service_tokens=own)  # fmt: skip
    try:
        httpd = WebhookServer(config, options, services).http_server()
    except OSError as e:
        raise CanaryError(f"cannot listen on {host}:{port}: {e.strerror}", fix="pick another --port") from None
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    console.print(f"serve: listening on http://{host}:{httpd.server_address[1]} for Flagger's webhooks "
                  f"(config {path or 'built-in defaults'}, reports in {reports}/)", highlight=False)  # fmt: skip
    if services:
        console.print(f"serve: services {', '.join(services)}", highlight=False)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    console.print("serve: stopped")


def _service_tokens(values: tuple[str, ...], served: list[str]) -> dict[str, str]:
    """``--service-token-env SERVICE=VARIABLE`` → service → its token, read now."""
    import os

    tokens: dict[str, str] = {}
    for value in values:
        service, sep, variable = (part.strip() for part in value.partition("="))
        if not sep or not service or not variable:
            raise click.BadParameter(f"expected SERVICE=VARIABLE; got {value!r}", param_hint="--service-token-env")
        if service not in served:
            raise click.BadParameter(
                f"{service!r} is not a service of the config; it has {', '.join(served)}",
                param_hint="--service-token-env",
            )
        tokens[service] = os.environ.get(variable, "").strip()
        if not tokens[service]:
            raise ConfigError(
                f"environment variable {variable} is empty or unset",
                where=f"--service-token-env {value}",
                fix=f"export {variable}=<a long random string> (what {service}'s Canary webhook sends)",
            )
    return tokens


@cli.command("report")
@click.argument("run_id", required=False)
@click.option(
    "--reports",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("reports"),
    show_default=True,
    help="Where the runs' directories are.",
)
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
    from canary_checks.report import build_report, find_run, list_runs, record_series

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
    if refresh_series:
        from canary_checks.prometheus import MetricsSource

        config, _ = _config(ctx)
        meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
        if not meta.get("started"):
            raise ConfigError("the run recorded no start time, so its series cannot be read again", where=str(run_dir))
        end = float(meta.get("ended") or time.time())
        start = float(meta["started"]) if meta.get("kind") == "rollout" else end - 900
        series = record_series(config, MetricsSource(config), run_dir, start, end)
        for error in series["errors"]:
            console.print(f"[yellow]series:[/] {error}", highlight=False, soft_wrap=True)
    html = build_report(run_dir)
    if as_json:
        click.echo((run_dir / "summary.json").read_text(), nl=False)
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
        decision = summary["decision"]
        out.print(f"{run_dir.name}: [bold]{escape(decision['outcome'])}[/] — {escape(decision['why'])}",
                  highlight=False, soft_wrap=True)  # fmt: skip
        out.print(f"report: {html}\nsummary: {run_dir / 'summary.json'}")


@cli.command()
@_suite_option("--suite", "gate", "The gate suite")
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.option("--keep", is_flag=True, help="Leave the sandbox running afterwards.")
@click.pass_context
def demo(ctx: click.Context, suite: Path | None, reports: Path, keep: bool) -> None:
    """The whole loop on the sandbox: a healthy canary through every stage, then faults and the gates that catch
    them. Starts the sandbox unless it runs, and stops it after unless --keep."""
    from canary_checks.sandbox.tour import run_tour
    from canary_checks.suite import locate

    config, path = _config(ctx, sandbox=True)
    ok = run_tour(_sandbox(ctx), config, path, suite=locate("gate", suite), reports=reports, keep=keep, console=out)
    sys.exit(0 if ok else 1)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        console.print(f"[red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except CanaryError as e:
        console.print(f"[red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
