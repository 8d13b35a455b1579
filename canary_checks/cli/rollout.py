"""``canary-checks run``: the progressive rollout of an image, each stage passing its gate suite, or rolled back."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from canary_checks.cli.common import FC, console, echo, load, out, reports_option, suite_option
from canary_checks.cli.types import DURATION, STEPS, check_stages, configured

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.runner import Rollout, RolloutOptions

ROUTERS = ("istio", "linkerd", "gateway-api", "sandbox")
"""What moves the traffic: the VirtualService, TrafficSplit or HTTPRoute named SERVICE, or the sandbox's HAProxy."""


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


def _what_moves_traffic(f: FC) -> FC:
    """``--router``, and ``--mesh``: its old name, kept working (hidden) with a notice: in every other command
    `mesh` names the metric names, not what moves the traffic."""
    f = click.option("--mesh", type=click.Choice(ROUTERS), default=None, hidden=True)(f)
    return click.option(
        "--router",
        type=click.Choice(ROUTERS),
        default=None,
        help="What moves the traffic: the VirtualService, TrafficSplit or HTTPRoute named SERVICE, or the sandbox "
        "(default: linkerd for a service whose `mesh` is linkerd, else istio). Formerly --mesh.",
    )(f)


def _thresholds_and_stages(f: FC) -> FC:
    options = [
        configured("--error-threshold", key="gates.error_rate.threshold", type=click.FloatRange(0, 100),
                   default=None, help="Error rate gate, percent"),
        configured("--latency-p95", key="gates.latency_p95.threshold", type=click.FloatRange(min=0), default=None,
                   help="p95 latency gate, ms"),
        configured("--traffic-steps", key="stages", type=STEPS, default=None,
                   help="Canary percent at each stage, among the service's stages"),
        click.option("--step-duration", type=DURATION, default="5m", show_default=True,
                     help="How long each stage runs before its gates: 30s, 5m."),
        click.option("--poll-interval", type=DURATION, default="10s", show_default=True,
                     help="How often critical gates are polled in a stage."),
        click.option("--ready-timeout", type=DURATION, default="5m", show_default=True,
                     help="How long a Deployment may take to be ready."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _decisions(f: FC) -> FC:
    options = [
        click.option("--dry-run", is_flag=True, help="Print every change it would make, and make none."),
        click.option("--skip-validation", is_flag=True, help="Do not check Deployments, routing and Prometheus first."),
        click.option("--auto-promote", is_flag=True, help="Promote after the last stage without asking."),
        click.option("--rollback", "rollback_now", is_flag=True,
                     help="Roll back the rollout of SERVICE in progress, and stop."),
        configured("--on-undecided", key="rollout.on_undecided", type=click.Choice(["hold", "rollback", "proceed"]),
                   default=None,
                   help="When only canary-vs-stable comparisons are still undecided at the end of a stage's "
                   "extension: hold the weight for a person (exit 3), roll back, or go on"),
        configured("--max-extension", key="rollout.max_extension", unset="else as long again as the step",
                   type=DURATION, default=None,
                   help="How long a stage that cannot decide may run past --step-duration"),
        configured("--outside-window", key="rollout.release_windows.outside", type=click.Choice(["wait", "hold"]),
                   default=None,
                   help="When the next step (deploy, a higher weight, promotion) falls outside "
                   "rollout.release_windows: wait there polling the critical gates, or hold (exit 3, the weight "
                   "stays) for a run inside a window. A rollback is never held"),
        click.option("--lease-ttl", type=DURATION, default="60s", show_default=True,
                     help="How long this runner may go unheard before another 'run' may take over and 'canary-checks "
                     "watch' rolls the rollout back (the runner renews it every third of that)."),
        click.option("--baseline", "baseline", is_flag=True,
                     help="Start a baseline beside the canary (a fresh copy of stable, workloads.baseline) and "
                     "compare the canary with it instead of stable; as baseline.enabled in canary.yaml."),
        click.option("--proceed", is_flag=True,
                     help="A person's decision for a rollout held on undecided comparisons: count its stage as "
                     "passed and go on."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


@click.command()
@click.argument("service")
@click.argument("image")
@configured("--namespace", key="namespace", default=None, help="Namespace")
@_what_moves_traffic
@_thresholds_and_stages
@_decisions
@suite_option("--suite", "gate", "The gate suite each stage passes")
@click.option(
    "--smoke-suite",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run this smoke suite against the canary once it is ready, before any traffic moves; a failing smoke "
    "check rolls back. Off unless given ('--smoke-suite suites/smoke').",
)
@reports_option()
@click.pass_context
def run(ctx: click.Context, /, service: str, image: str, namespace: str | None, router: str | None,
        mesh: str | None, traffic_steps: tuple[int, ...] | None, **given: Any) -> None:  # fmt: skip
    """Progressive rollout of IMAGE as the canary of SERVICE: each stage passes its gate suite, or it rolls back.
    With `services:` in the config, SERVICE is one of them, judged on its own settings.

    \b
    1. validate: Deployments, routing resource (not managed by Flagger/Argo), Prometheus;
    2. deploy the canary with IMAGE and wait until it is ready (then --smoke-suite, through the header route);
       with --baseline, a fresh copy of stable beside it, given the canary's share: the comparisons judge
       the canary against it, not stable's long-running pods;
    3. each step: set the weight, wait --step-duration polling critical gates, run pytest suites/gate --stage N;
       outside rollout.release_windows nothing moves forward (--outside-window: wait there, or hold);
    4. a failing gate: weight 0 first, then the canary scaled down, exit 1 naming the gates;
       checks that cannot decide yet extend the stage (--max-extension); if only comparisons are still
       undecided then, --on-undecided: hold (exit 3, the weight stays), rollback, or proceed;
    5. after 100 %: promote (stable gets IMAGE) with --auto-promote, or when you confirm.
    Run it again after a stop to resume (the stage's gates run again), with --proceed to go on past a held
    stage, or with --rollback to undo.
    """
    router = _router_given(router, mesh)
    config, path = load(ctx, sandbox=router == "sandbox", service=service, namespace=namespace,
                        baseline=given.pop("baseline"))  # fmt: skip
    steps = traffic_steps if traffic_steps is not None else config.stages
    check_stages(ctx, config, "traffic_steps", *steps,  # each step's gate suite judges that stage's thresholds
                 fix="leave --traffic-steps out to take them all, or add the steps to `stages`")  # fmt: skip
    router_kind = router or ("linkerd" if config.mesh.value == "linkerd" else "istio")
    options = _options(config, path, service, image, steps, router_kind, given)
    bar = _StageBar() if out.is_terminal else None
    rollout = _rollout(config, options, on_wait=bar.update if bar else None)
    try:
        code = rollout.run()
    finally:
        if bar:
            bar.stop()
    sys.exit(code)


def _router_given(router: str | None, mesh: str | None) -> str | None:
    """--router, or the deprecated --mesh (with a notice on stderr); both, differing, is a mistake."""
    if mesh is None:
        return router
    console.print("run: --mesh is deprecated, use --router (the traffic router; elsewhere `mesh` names the metric "
                  "names)", markup=False, highlight=False, soft_wrap=True)  # fmt: skip
    if router is not None and router != mesh:
        raise click.UsageError(f"--router {router} and --mesh {mesh} disagree: --mesh is the old name of --router; "
                               "drop --mesh")  # fmt: skip
    return mesh


def _options(
    config: CanaryConfig,
    path: Path | None,
    service: str,
    image: str,
    steps: tuple[int, ...],
    router_kind: str,
    given: dict[str, Any],
) -> RolloutOptions:
    """The runner's options from the command's."""
    from canary_checks.config import OutsideWindow, UndecidedPolicy
    from canary_checks.runner import RolloutOptions
    from canary_checks.suite import locate

    thresholds: dict[str, dict[str, Any]] = {}
    if given["error_threshold"] is not None:
        thresholds["error_rate"] = {"threshold": given["error_threshold"]}
    if given["latency_p95"] is not None:
        thresholds["latency_p95"] = {"threshold": given["latency_p95"]}
    smoke: Path | None = given["smoke_suite"]
    return RolloutOptions(
        service=service,
        image=image,
        steps=steps,
        step_duration=given["step_duration"],
        poll_interval=given["poll_interval"],
        ready_timeout=given["ready_timeout"],
        suite=locate("gate", given["suite"]),
        smoke_suite=locate("smoke", smoke, option="--smoke-suite") if smoke is not None else None,
        reports=given["reports"],
        config_path=path,
        thresholds=thresholds,
        auto_promote=given["auto_promote"],
        dry_run=given["dry_run"],
        skip_validation=given["skip_validation"],
        rollback=given["rollback_now"],
        confirm=(lambda q: click.confirm(q, default=False)) if sys.stdin.isatty() else None,
        on_undecided=UndecidedPolicy(given["on_undecided"]) if given["on_undecided"] else None,
        max_extension=given["max_extension"],
        outside_window=OutsideWindow(given["outside_window"]) if given["outside_window"] else None,
        proceed=given["proceed"],
        lease_ttl=given["lease_ttl"],
        router_kind=router_kind,
        suite_args=("--service", config.service, "--namespace", config.namespace),
    )


def _rollout(
    config: CanaryConfig, options: RolloutOptions, on_wait: Callable[[int, float, float], None] | None
) -> Rollout:
    """The rollout on the sandbox or on Kubernetes, its router the one ``options`` names."""
    from canary_checks.prometheus import MetricsSource
    from canary_checks.runner import Rollout

    controller: Callable[[], str | None] = lambda: None  # noqa: E731
    problems: Callable[[], list[str]] = lambda: []  # noqa: E731
    if options.router_kind == "sandbox":
        from canary_checks.sandbox import Sandbox, SandboxPlatform

        box = Sandbox(config)
        platform: Any = SandboxPlatform(box, options.service)
        router: Any = box.router
    else:
        from canary_checks.kube import KubePlatform, api_client
        from canary_checks.traffic import kube_router

        k = config.kubernetes
        api = api_client(k.api_url, context=k.context, verify_tls=k.verify_tls)
        sticky = config.routing.sticky
        router = kube_router(options.router_kind, api, config.namespace, options.service,
                             sticky_cookie=sticky.cookie if sticky.enabled else None)  # fmt: skip
        platform = KubePlatform(api, config.namespace, config.workload("stable"), config.workload("canary"),
                                baseline=config.workload("baseline"))  # fmt: skip
        controller = router.controller
        problems = functools.partial(router.problems, baseline=config.baseline.enabled)
    return Rollout(config, platform, router, options, source=MetricsSource(config), echo=echo, controller=controller,
                   router_problems=problems, on_wait=on_wait)  # fmt: skip
