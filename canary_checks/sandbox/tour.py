"""``canary-checks demo``: the whole loop on the sandbox, as a newcomer's first command.

1. bring the sandbox up (or use the one running);
2. a healthy canary through every stage: set the weight, let a full window of traffic pass, run the gate suite;
3. at the first stage past 5 %, inject each fault in turn, look as the runner looks (holding while a comparison
   needs more requests) and show which gates catch it;
4. with ``--sticky``: sticky canary sessions — two stages and a rollback as Locust's users see them (which side
   answered each), on a sandbox started with ``routing.sticky``;
   with ``--baseline``: the same canary judged against old stable and against a fresh baseline, when new pods
   (the canary and the baseline alike) err more than stable's long-running ones.
5. with ``--scaling``: capacity follows weight — the canary's pods follow each stage, ready before the weight moves,
   the split holding, one pod at 50 % overloaded, a rollback emptying it (:mod:`canary_checks.sandbox.capacity`).
6. with ``--windows``: release windows — on a demo clock, a rollout held at 5 % from Thursday 17:00 until Monday
   09:00, and one held on a Thursday evening rolled back at once when its canary fails (:mod:`.weekend`).
JUnit files, the timeline and the HTML report go to ``reports/demo-<time>/``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from canary_checks import forks
from canary_checks.config import CanaryConfig, baseline_share
from canary_checks.record import Event
from canary_checks.rundir import RunRecord
from canary_checks.sandbox import Sandbox, SandboxPlatform
from canary_checks.suite import SuiteRun, decide_stage, run_suite

__all__ = ["SCENARIOS", "run_tour"]


@dataclass(frozen=True)
class Scenario:
    title: str
    faults: dict[str, float]
    expect: frozenset[str]
    """Gates that catch it (the tests check them; the tour notes it when another decided first)."""
    windows: int = 1
    """Windows of evidence its looks may take (a subtle fault needs more requests to be decided); they may hold for
    HOLDS more, as a stage's do."""


SCENARIOS = (
    Scenario("canary answers 20 % of requests with 500", {"errors": 20.0}, frozenset({"error_rate", "success_rate"})),
    Scenario("canary is 600 ms slower", {"latency_ms": 600.0}, frozenset({"latency_p95", "latency_p99"})),
    Scenario("canary crashes 2 s after each start", {"crash_after": 2.0}, frozenset({"restarts"})),
    # under the 5 % threshold: only the comparison with stable sees it
    Scenario("canary answers 3 % of requests with 500", {"errors": 3.0}, frozenset({"compare_errors"}), windows=2),
)


STABLE = "--no-baseline"
"""Scenes 2 and 3 judge the canary against stable, whatever canary.yaml says of a baseline (scene 4 shows it)."""

HOLDS = 3
"""How many more windows a healthy stage may hold for (inconclusive, as the runner would) before it counts as failed."""


def _wait(console: Console, seconds: float, what: str) -> None:
    with Progress(
        TextColumn("  {task.description}"), BarColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task(what, total=seconds)
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            progress.update(task, completed=elapsed)
            time.sleep(0.2)


def _table(run: SuiteRun, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("gate", no_wrap=True)
    for column in ("outcome", "verdict", "value", "threshold", "severity"):
        table.add_column(column)
    colors = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
    for r in run.records:
        outcome = f"[{colors.get(r.outcome, 'white')}]{r.outcome}[/]"
        value = f"{float(r.value):.4g} {r.unit}".strip() if r.value else "-"
        threshold = f"{r.threshold} {r.unit}".strip() if r.threshold else "-"
        table.add_row(r.gate or r.test, outcome, r.verdict, value, threshold, r.severity)
    return table


def run_tour(
    box: Sandbox,
    config: CanaryConfig,
    config_path: Path | None,
    *,
    suite: Path,
    reports: Path,
    keep: bool,
    console: Console,
    sticky: bool = False,
    baseline: bool = False,
    scaling: bool = False,
    windows: bool = False,
) -> bool:
    """Run the tour; True when every healthy stage passed and a critical check caught every fault (and,
    with ``sticky``, no user saw both sides within a stage and the split held; with ``baseline``, the comparison
    with stable raised the false alarm the one with the baseline did not)."""
    started = time.time()
    # a suite per stage and per fault: they fork from a warm server
    forks.prepare(config)
    # the tour's timeline (weights and faults) goes to events.jsonl, as a rollout's: the report marks them
    record = RunRecord.start(reports, "demo", run_id=time.strftime("demo-%Y%m%d-%H%M%S"), service=config.service,
                             namespace=config.namespace, started=started)  # fmt: skip
    started_here = not box.is_up()
    try:
        if started_here:
            console.rule("[bold]1. the sandbox")
            box.up(weight=config.stages[0])
            box.wait_for_data()
        console.print(
            f"service {box.service_url} → HAProxy → {config.workload('stable')} / {config.workload('canary')}; "
            f"Prometheus {box.prometheus_url}; Locust at {config.sandbox.rps:g} req/s"
        )
        ok = _healthy_stages(box, config, config_path, suite, record, console)
        ok &= _faults(box, config, config_path, suite, record, console)
        if sticky:
            ok &= _sticky(box, config, record, console)
        if baseline:
            ok &= _baseline(box, config, config_path, suite, record, console)
        if scaling:
            from canary_checks.sandbox.capacity import SCENE_SECONDS, capacity_scene

            ok &= capacity_scene(box, record, console, partial(_wait, console, SCENE_SECONDS))
        if windows:
            from canary_checks.sandbox.weekend import windows_scene

            ok &= windows_scene(box, config, config_path, suite, record, console)
        console.rule("[bold]done")
        console.print(f"JUnit files: {record.path}/")
        why = "every healthy stage passed and every fault was caught" if ok else "see the tables: not as expected"
        decision = {"outcome": "passed" if ok else "failed", "why": why}
        finished = record.finish(config, since=started, ended=time.time(), decision=decision)
        console.print(f"report: {finished.html}" if finished.html else finished.problem, markup=False, highlight=False,
                      soft_wrap=True)  # fmt: skip
        console.print("[green]every healthy stage passed and every fault was caught[/]" if ok else "[red]see above[/]")
    finally:
        if started_here and not keep:
            box.down()
            console.print("sandbox stopped ('canary-checks demo --keep' leaves it running)")
    return ok


def settle_seconds(config: CanaryConfig) -> float:
    """Seconds for one window of traffic to reach Prometheus' instant queries (two scrapes and a second)."""
    return config.window + 2 * config.sandbox.scrape_interval + 1


def _weight(box: Sandbox, record: RunRecord, stage: int, share: int = 0) -> None:
    """The canary at ``stage`` % (and the baseline at ``share`` %, in scene 4), recorded for the report."""
    box.set_weight(stage, share)
    record.event(Event.WEIGHT, weight=stage, stage=stage, **({"baseline_weight": share} if share else {}))


def _held(console: Console, what: str, run: SuiteRun, why: str) -> None:
    console.print(_table(run, f"{what}: held ({why})"))


def _holding(console: Console, what: str, seconds: float) -> None:
    _wait(console, seconds, f"{what}: holding for one more window of evidence")


def _healthy_stages(
    box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, record: RunRecord, console: Console
) -> bool:
    """Step 2: a healthy canary through every stage, held as the runner holds; True when every stage passed."""
    settle = settle_seconds(config)
    ok = True
    console.rule("[bold]2. a healthy canary through every stage")
    for stage in config.stages:
        _weight(box, record, stage)
        _wait(console, settle, f"stage {stage} %: one {config.window:g}s window of traffic at the new split")
        # the comparisons' evidence accumulates over the healthy canary's stages, as in a rollout; not enough evidence
        # yet is a hold, not a failure: the runner's rule, for up to HOLDS more windows
        decision = decide_stage(
            suite, stage, partial(record.junit, stage), deadline=time.monotonic() + (HOLDS + 1) * settle, poll=settle,
            config_path=config_path, extra_args=[f"--canary-evidence={record.path / 'evidence-healthy.json'}", STABLE],
            on_hold=partial(_held, console, f"stage {stage} %"), sleep=partial(_holding, console, f"stage {stage} %"),
        )  # fmt: skip
        passed = decision.outcome == "passed"
        console.print(_table(decision.run, f"stage {stage} %: {'PASSED' if passed else 'FAILED'}"))
        ok &= passed
        if not passed:
            console.print(decision.why, markup=False, highlight=False)
            console.print(decision.run.output[-3000:], markup=False, highlight=False)
    return ok


def _faults(
    box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, record: RunRecord, console: Console
) -> bool:
    """Step 3: each fault in the canary at an early stage; True when a critical check caught every one."""
    settle = settle_seconds(config)
    ok = True
    stage = next((s for s in config.stages if s > 5), config.stages[0])
    console.rule(f"[bold]3. faults in the canary, at stage {stage} %")
    _weight(box, record, stage)
    for number, scenario in enumerate(SCENARIOS, 1):
        box.set_faults("canary", scenario.faults)
        record.event(Event.FAULT, why=scenario.title, stage=stage)
        _wait(console, settle + 2, f"fault: {scenario.title}")
        # looked at as the runner looks at a stage: a comparison without enough requests yet holds for another window
        # of evidence (a new canary's); the fault is caught when a critical check fails, as the runner rolls back
        what = f"fault: {scenario.title}"
        decision = decide_stage(
            suite, stage, partial(record.junit, None, name=f"fault-{number}"),
            deadline=time.monotonic() + (HOLDS + scenario.windows) * settle, poll=settle, config_path=config_path,
            extra_args=[f"--canary-evidence={record.path / f'evidence-fault-{number}.json'}", STABLE],
            on_hold=partial(_held, console, what), sleep=partial(_holding, console, what),
        )  # fmt: skip
        console.print(_table(decision.run, what))
        if decision.outcome != "failed":
            ok = False
            console.print(f"not caught: {decision.why}", style="red", markup=False, highlight=False)
        else:
            caught = {r.gate: r.severity for r in decision.run.records if r.verdict == "fail"}  # warnings as well
            names = ", ".join(f"{g} ({s})" for g, s in sorted(caught.items()))
            console.print(f"[green]caught by {names}[/] → the runner would roll back")
            if missed := scenario.expect - set(caught):  # another gate decided first (a window read over a threshold)
                console.print(f"(before {', '.join(sorted(missed))} decided)", style="dim", markup=False)
        box.set_faults("canary", {})
        box.wait_ready(60)  # a crashed canary comes back after its back-off
        # no clean window between two faults: the next one's window (waited above) holds none of this one's traffic
    return ok


STICKY_SECONDS = 10.0
"""How long scene 4 lets each stage's traffic run before it counts who saw what."""


def _sticky(box: Sandbox, config: CanaryConfig, record: RunRecord, console: Console) -> bool:
    """Step 4: two stages and a rollback with sticky sessions, as Locust's users saw them; True when nobody saw
    both sides within a stage, the canary's users stayed on it, the split by users held within 2 points, and no
    user reached the canary after the rollback (when the weight was raised; lowering it chooses afresh)."""
    from canary_checks.sandbox.sides import sides_between

    console.rule(f"[bold]4. sticky canary sessions (cookie {config.routing.sticky.cookie!r})")
    canary = {p["pod"] for p in box.pods() if p["workload"] == config.workload("canary")}
    ok = True
    for stage in [*[s for s in config.stages if 5 < s < 100][:2], 0]:
        raised = stage >= box.router.get_weight()  # lowered: every client chooses again, at the new share
        before = time.time() - 1.0  # surely routed before the change: Locust's users fire in bursts a second apart
        box.set_weight(stage)
        start = time.time()
        record.event(Event.WEIGHT, weight=stage, stage=stage or None)
        what = f"stage {stage} %" if stage else "rolled back (weight 0)"
        _wait(console, STICKY_SECONDS, f"{what}: each Locust user carries its cookie")
        sides = sides_between(box.sides(), start, time.time(), canary, before=before)
        fine = sides.users > 0 and sides.both == 0
        if stage:
            fine &= sides.moved_back == 0 or not raised
        else:
            fine &= sides.canary_users == 0 and sides.canary_requests == 0
        fine &= abs(sides.user_share - stage) <= 2
        ok &= fine
        console.print(f"[{'green' if fine else 'red'}]{what}:[/] {sides.describe()}", highlight=False)
    _weight(box, record, config.stages[0])
    console.print("the split is by users, not requests; the gates and comparisons judge the same windows as before")
    return ok


NEW_PODS = {"errors": 2.0}
"""What scene 4 (--baseline) gives the new pods, the canary and the baseline alike: 2 % of requests answered 500
(cold caches, connection pools still filling) — well under the 5 % error_rate gate, whose window of a few hundred
requests would now and then read 3 % over it; stable's long-running pod answers none."""
BASELINE_LOOKS = 6
"""Windows scene 4 looks at, as the runner holds a stage, before it says the comparison with stable did not fail."""


def _baseline(
    box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, record: RunRecord, console: Console
) -> bool:
    """Step 4 with --baseline: the canary — the same build as stable, but new pods — judged against stable and
    against a baseline as new as itself, on the same windows, a look a window as the runner holds a stage (the
    evidence of each growing); True when the comparison with stable failed and the one with the baseline never."""
    stage = next((s for s in config.stages if s > 5), config.stages[0])
    share, settle = baseline_share(stage), settle_seconds(config)
    console.rule(f"[bold]4. a fresh baseline beside the canary, at stage {stage} % (baseline {share} %)")
    SandboxPlatform(box, config.service).start_baseline(1, 60, console.print)  # a rollout's rollback stops it
    for side in ("canary", "baseline"):
        box.set_faults(side, NEW_PODS)
    _weight(box, record, stage, share)
    record.event(Event.FAULT, why=f"new pods (canary and baseline) answer {NEW_PODS['errors']:g} % with 500",
                 stage=stage)  # fmt: skip
    failed: dict[str, list[str]] = {"stable": [], "baseline": []}
    for look in range(1, BASELINE_LOOKS + 1):
        _wait(console, settle, f"canary {stage} %, baseline {share} %: a window of traffic (look {look})")
        for reference, flag in (("stable", "--no-baseline"), ("baseline", "--baseline")):
            evidence = f"--canary-evidence={record.path / f'evidence-vs-{reference}.json'}"  # grows look by look
            run = run_suite(suite, stage, record.junit(None, name=f"vs-{reference}-{look}"), config_path=config_path,
                            extra_args=[flag, evidence])  # fmt: skip
            failed[reference] = sorted(r.gate for r in run.failing if r.verdict == "fail")
            console.print(_table(run, f"look {look}: the canary against {reference}"))
        if failed["stable"] or failed["baseline"]:
            break  # the runner would roll back here
    box.set_faults("canary", {})
    box.set_faults("baseline", {})
    _weight(box, record, config.stages[0])
    ok = bool(failed["stable"]) and not failed["baseline"]
    alarm = "nothing failed"
    if failed["stable"]:
        alarm = f"{', '.join(failed['stable'])} failed — a false alarm: the canary runs stable's build"
    console.print(
        f"[{'green' if ok else 'red'}]against stable: {alarm}; against the baseline: "
        f"{', '.join(failed['baseline']) or 'nothing'} failed[/] — new pods compared with new pods "
        "(baseline.enabled, canary-checks run --baseline)",
        highlight=False,
    )
    return ok
