"""Release windows in the real sandbox, as the demo shows them (`canary-checks demo --windows`): two rollouts run by
the runner on the sandbox's HAProxy and Prometheus, on a clock the scene moves — one held at 5 % from Thursday 17:00
until Monday 09:00 and going on then, one held on a Thursday evening and rolled back at once when its canary fails."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from canary_checks.rundir import RunRecord
from canary_checks.sandbox.weekend import windows_scene
from canary_checks.suite import packaged
from tests.integration.conftest import OWN_STATE, Live

pytestmark = OWN_STATE  # the scene moves the weight and injects its fault itself


@pytest.mark.long  # half a minute or more: workers start it early
def test_the_demos_windows_scene_holds_outside_goes_on_inside_and_never_holds_a_rollback(
    live: Live, tmp_path: Path
) -> None:
    live.set_faults("stable", {})  # the scene's rollouts start from a healthy canary (it clears the canary's
    live.calm()  # faults and lets a window pass): no earlier test's alert still firing
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    record = RunRecord.start(tmp_path, "demo", run_id="demo-windows", service="auth", namespace="orion",
                             started=time.time())  # fmt: skip
    try:
        ok = windows_scene(live.box, live.config, live.config_path, packaged("gate"), record, console)
    finally:
        live.changed = time.monotonic()  # a fault and weights the next test must not inherit a window of
        shown = console.file.getvalue()  # type: ignore[attr-defined]
        print(shown)
    assert ok, shown
    assert "stage 5 %: raising the weight to 25 % is outside the release windows" in shown
    assert "they open Mon 30 Nov 2026 09:00 UTC" in shown
    assert "stage 5 %: inside the release windows: raising the weight to 25 %" in shown
    assert live.box.router.get_weight() == live.config.stages[0] and live.box.faults().get("auth-canary", {}) == {}
    thursday, again = sorted((tmp_path / "demo-windows" / "windows").glob("*/events.jsonl"))
    events = [json.loads(line)["event"] for line in thursday.read_text().splitlines()]
    assert "outside window" in events and "stage passed" in events
    events = [json.loads(line) for line in again.read_text().splitlines()]
    rolled = next(e for e in events if e["event"] == "rolled back")
    assert "critical gates failed during stage 5 %" in rolled["why"]
