"""The baseline in the real sandbox (issue 17): a baseline pod behind HAProxy beside stable and canary, its share
of the real traffic, the comparisons reading its series from Prometheus, the demo's scene, and a rollout with
`--baseline` that rolls back with it.

One sandbox of its own (started with baseline.enabled, so it runs the baseline pod)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from canary_checks.config import load_config
from canary_checks.gates import GateResult, evaluate
from canary_checks.prometheus import MetricsSource
from canary_checks.rundir import RunRecord
from canary_checks.sandbox import Sandbox, SandboxPlatform
from canary_checks.suite import packaged
from tests.conftest import write_config
from tests.integration.conftest import OWN_STATE, REPO, WINDOW, Live, sandbox_settings

# one sandbox with a baseline pod, on one worker; the one test on the shared sandbox only asks it questions
pytestmark = [pytest.mark.xdist_group("baseline-sandbox"), OWN_STATE]


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    settings = sandbox_settings(root / "state")
    return write_config(root / "canary.yaml", service="auth", namespace="orion", window=f"{WINDOW}s",
                        kubernetes={"enabled": False}, baseline={"enabled": True},
                        statistics={"sample_interval": "2s", "worse_delta": 2},
                        prometheus={"url": f"http://127.0.0.1:{settings['prometheus_port']}"},
                        sandbox=settings)  # fmt: skip


@pytest.fixture(scope="module")
def box(config_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(load_config(config_path))
    sandbox.up(weight=5)
    try:
        sandbox.wait_ready()
        sandbox.wait_for_data()
        yield sandbox
    finally:
        sandbox.down()


def split_after_a_window(box: Sandbox, stage: int) -> GateResult:
    """The traffic split over a window of traffic that all ran at the current weights (a window and three scrapes
    after the change: the split needs that window's data, not a condition to poll for)."""
    time.sleep(WINDOW + 3 * box.config.sandbox.scrape_interval)
    result = evaluate(box.config, MetricsSource(box.config), ["traffic_split"], stage=stage)["traffic_split"]
    assert isinstance(result, GateResult), result
    return result


def test_the_baseline_takes_the_canarys_share_of_real_traffic_and_weight_0_takes_both_away(box: Sandbox) -> None:
    assert box.set_weight(25, 25) == 25
    assert box.router.weights() == {"stable": 50, "canary": 25, "baseline": 25}
    split = split_after_a_window(box, 25)
    assert abs(split.value - 25) <= 2, split.summary  # type: ignore[operator]
    canary, baseline = split.details["canary"], split.details["baseline"]
    assert abs(canary - baseline) <= 0.1 * canary, split.summary  # the same share, to within a tenth
    assert box.set_weight(0) == 0
    assert box.router.weights() == {"stable": 100, "canary": 0, "baseline": 0}
    box.set_weight(5)


def test_the_demos_baseline_scene_false_alarms_against_old_stable_and_not_against_the_baseline(
    box: Sandbox, config_path: Path, tmp_path: Path
) -> None:
    from canary_checks.sandbox.tour import _baseline

    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    record = RunRecord.start(tmp_path, "demo", run_id="demo-baseline", service="auth", namespace="orion",
                             started=time.time())  # fmt: skip
    ok = _baseline(box, box.config, config_path, packaged("gate"), record, console)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    print(shown)
    assert ok, shown
    assert "against stable: compare_errors" in shown and "against the baseline: nothing failed" in shown
    assert box.router.weights() == {"stable": 95, "canary": 5, "baseline": 0}  # back where it was
    assert box.faults().get("auth-canary", {}) == {} and box.faults().get("auth-baseline", {}) == {}


def test_a_rollout_with_a_baseline_gives_it_the_first_stage_and_rolls_back_with_it(
    box: Sandbox, config_path: Path, tmp_path: Path
) -> None:
    box.set_faults("canary", {"errors": 30.0})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "canary_checks", "--canary-config", str(config_path), "run", "auth", "demo:v3",
             "--router", "sandbox", "--baseline", "--step-duration", f"{WINDOW + 3}s", "--poll-interval", "2s",
             "--reports", str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        box.set_faults("canary", {})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "starting the baseline auth-baseline" in done.stdout and "rolled back" in done.stdout
    (events,) = tmp_path.glob("*/events.jsonl")
    weights = [json.loads(line) for line in events.read_text().splitlines()]
    weights = [(e["weight"], e.get("baseline_weight")) for e in weights if e["event"] == "weight"]
    assert weights == [(5, 5), (0, None)]
    # the baseline is gone as a Deployment scaled to 0 is: out of HAProxy's service, its pod stopped
    assert box.router.weights() == {"stable": 100, "canary": 0}
    assert "auth-baseline" not in {p["workload"] for p in box.pods()}
    box.wait_ready(60)
    box.set_weight(5)


def test_a_baseline_on_a_sandbox_started_without_one_is_refused_with_the_fix(live: Live) -> None:
    (problem,) = SandboxPlatform(Sandbox(live.config.with_baseline()), "auth").validate()
    assert "started without a baseline pod" in problem and "'canary-checks sandbox up'" in problem
    done = live.demo("--baseline")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--baseline: the sandbox running from" in done.stderr and "canary-checks sandbox down" in done.stderr
    assert not live.box.router.has_baseline() and live.box.is_up()
