"""The demo's release-windows scene (``canary-checks demo --windows``): two real rollouts on the sandbox under
``rollout.release_windows`` allowing Monday to Thursday, 09:00-16:59 UTC, read on a demo clock the scene moves.

1. Thursday, 14:00: a healthy canary is deployed and gets 5 %; the clock moves to 17:00:05. Raising it to 25 % is
   then outside: the runner waits there, polling the critical gates, saying when the windows open. The clock moves
   to Monday 08:59:55; at 09:00 the runner raises the weight and goes on to the end (awaiting promotion); the demo
   then rolls it back.
2. The Thursday before, the same to 5 %, then 17:00:05: held until Monday, the canary starts answering 30 % of
   requests with 500. The runner rolls back at its next poll: a rollback is never held by a window.

Seam: drives :class:`~canary_checks.runner.Rollout` in this process on the sandbox's platform and router, its clock
the demo's (the parameter the runner reads release windows on); everything it decides is the runner's own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from canary_checks.config import CanaryConfig, OutsideWindow, ReleaseWindows, UndecidedPolicy
from canary_checks.prometheus import MetricsSource
from canary_checks.record import Event
from canary_checks.rundir import RunRecord
from canary_checks.runner import Rollout, RolloutOptions
from canary_checks.sandbox import Sandbox, SandboxPlatform
from canary_checks.sandbox.tour import settle_seconds

__all__ = ["WINDOWS", "windows_scene"]

WINDOWS = ReleaseWindows(timezone="UTC", allowed=("* 9-16 * * mon-thu",), outside=OutsideWindow.WAIT)
"""Monday to Thursday, 09:00-16:59 UTC: no release on a Friday afternoon or over the weekend."""
THURSDAY, THURSDAY_EVENING = datetime(2026, 11, 26, 14, tzinfo=UTC), datetime(2026, 11, 26, 17, 0, 5, tzinfo=UTC)
AGAIN, AGAIN_EVENING = datetime(2026, 11, 19, 14, tzinfo=UTC), datetime(2026, 11, 19, 17, 0, 5, tzinfo=UTC)
MONDAY = datetime(2026, 11, 30, 8, 59, 55, tzinfo=UTC)
SAID_WITHIN = 240.0
"""Seconds the scene waits for the runner to say each thing it expects (a busy machine is slow)."""


@dataclass
class DemoClock:
    """Wall-clock seconds since ``start`` (a datetime), moved forward by :meth:`jump`."""

    start: datetime
    _t0: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self) -> float:
        with self._lock:
            return self.start.timestamp() + time.monotonic() - self._t0

    def jump(self, to: datetime) -> None:
        with self._lock:
            self.start, self._t0 = to, time.monotonic()


@dataclass
class Run:
    """A rollout running in a thread, its lines as it says them."""

    rollout: Rollout
    lines: list[str]
    thread: threading.Thread
    code: list[int]

    def said(self, text: str, console: Console, within: float = SAID_WITHIN) -> str:
        """The first line containing ``text`` (printed as they come), or AssertionError after ``within`` s."""
        deadline, shown = time.monotonic() + within, 0
        while time.monotonic() < deadline:
            for line in self.lines[shown:]:
                console.print(f"  [dim]run:[/] {line}", markup=True, highlight=False, soft_wrap=True)
            shown = len(self.lines)
            if found := next((line for line in self.lines if text in line), None):
                return found
            if not self.thread.is_alive():
                break
            time.sleep(0.2)
        raise AssertionError(f"the runner did not say {text!r}")

    def reached(self, weight: int, within: float = SAID_WITHIN) -> None:
        """Wait until the runner has given the canary ``weight`` % (its record says so)."""
        deadline = time.monotonic() + within
        while self.rollout.state.get("weight") != weight:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise AssertionError(f"the runner did not give the canary {weight} %: {self.lines[-3:]}")
            time.sleep(0.2)

    def ended(self, within: float = SAID_WITHIN) -> int:
        self.thread.join(within)
        return self.code[0] if self.code else -1


def _start(box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, reports: Path,
           clock: Callable[[], float], *, rollback: bool = False) -> Run:  # fmt: skip
    """A rollout of demo:v3 through 5 and 25 % (or ``rollback`` of the one in progress) in a thread. The
    comparisons are the other scenes' matter: a stage whose fixed gates pass goes on (on_undecided: proceed)."""
    settle = settle_seconds(config)
    options = RolloutOptions(
        service=config.service, image="demo:v3", steps=(5, 25), step_duration=settle, poll_interval=2.0,
        suite=suite, reports=reports, config_path=config_path, router_kind="sandbox", handle_signals=False,
        max_extension=1.0, on_undecided=UndecidedPolicy.PROCEED, suite_args=("--no-baseline",), rollback=rollback,
    )  # fmt: skip
    lines: list[str] = []
    rollout = Rollout(config, SandboxPlatform(box, config.service), box.router, options, source=MetricsSource(config),
                      echo=lines.append, on_wait=lambda *a: None, clock=clock)  # fmt: skip
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(rollout.run()), daemon=True, name="demo-rollout")
    thread.start()
    return Run(rollout, lines, thread, code)


def _held_at_5(
    box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, reports: Path, clock: DemoClock,
    evening: datetime, console: Console,
) -> Run:  # fmt: skip
    """A rollout started at the clock's afternoon, at 5 %, then the clock moved to ``evening``: the runner says
    raising the weight is outside the windows and waits."""
    console.print(f"demo clock: {datetime.fromtimestamp(clock(), UTC):%A %d %b %H:%M} UTC, a rollout")
    run = _start(box, config, config_path, suite, reports, clock)
    run.reached(5)
    clock.jump(evening)
    console.print(f"[bold]demo clock: {evening:%A %H:%M:%S}[/] (the canary at 5 %)")
    run.said("raising the weight to 25 % is outside the release windows", console)
    return run


def windows_scene(
    box: Sandbox, config: CanaryConfig, config_path: Path | None, suite: Path, record: RunRecord, console: Console
) -> bool:
    """Step 6 with --windows; True when the first rollout waited outside the windows and went on when they opened,
    and the second was rolled back at once outside them."""
    rollout = config.rollout.model_copy(update={"release_windows": WINDOWS})
    config = config.with_baseline(False).model_copy(update={"rollout": rollout})
    console.rule("[bold]6. release windows: Monday to Thursday, 09:00-16:59 UTC (a demo clock)")
    reports = record.path / "windows"
    box.set_faults("canary", {})  # a healthy canary, and a window of its traffic before the rollout looks back
    box.wait_ready(60)
    settle = settle_seconds(config)
    console.print(f"a clean {config.window:g}s window of traffic first ({settle:g} s)")
    time.sleep(settle)
    clock = DemoClock(THURSDAY)
    first = _held_at_5(box, config, config_path, suite, reports, clock, THURSDAY_EVENING, console)
    waited = box.router.get_weight() == 5
    clock.jump(MONDAY)
    console.print(f"[bold]demo clock: {MONDAY:%A %H:%M:%S}[/] (the weekend passes)")
    first.said("inside the release windows: raising the weight to 25 %", console)
    went_on = first.ended() == 0 and first.rollout.state.get("status") == "awaiting-promotion"
    _start(box, config, config_path, suite, reports, clock, rollback=True).ended()  # leave nothing in progress
    console.print(f"[{'green' if waited and went_on else 'red'}]held at 5 % while the windows were closed, went on "
                  "when they opened[/]")  # fmt: skip
    clock = DemoClock(AGAIN)
    second = _held_at_5(box, config, config_path, suite, reports, clock, AGAIN_EVENING, console)
    box.set_faults("canary", {"errors": 30.0})
    record.event(Event.FAULT, why="canary answers 30 % with 500 while held outside the release windows", stage=5)
    try:
        second.said("rolling back:", console)
        rolled_back = second.ended() == 1 and box.router.get_weight() == 0
    finally:
        box.set_faults("canary", {})
        box.wait_ready(60)
        box.set_weight(config.stages[0])
    console.print(f"[{'green' if rolled_back else 'red'}]rolled back at once, outside the windows[/] — a rollback "
                  "is never held (docs/runner.md, release windows)")  # fmt: skip
    return waited and went_on and rolled_back
