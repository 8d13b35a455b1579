"""Faults during a rollout in the sandbox, with real processes: two runners at once, an operator's rollback while
the runner is alive, a runner killed and the watchdog, Prometheus gone mid-stage. Each row of docs/runner.md's
"what happens when…" table is one of these tests (the Kubernetes emulator tests repeat the first three)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.conftest import OWN_STATE, REPO, Live
from tests.integration.test_sandbox_gates import rollout

pytestmark = OWN_STATE  # each test starts from ready(): no window of the state before it is needed


@pytest.fixture(autouse=True)
def restored(live: Live) -> Iterator[None]:
    """Each fault leaves the shared sandbox as the other tests expect it: no fault, canary at 25 % (the next test on
    the sandbox waits for a window of that before it starts)."""
    yield
    live.box.start_component("prometheus")
    live.set_faults("canary", {})
    live.set_weight(25)
    live.box.wait_ready(60)


def events(reports: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for log in reports.rglob("events.jsonl") for line in log.read_text().splitlines()]


def wait_for_weight(
    reports: Path, weight: int, timeout: float = 120, runner: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not any(e["event"] == "weight" and e.get("weight") == weight for e in events(reports)):
        assert runner is None or runner.poll() is None, f"the runner stopped first: {runner.communicate()}"
        assert time.monotonic() < deadline, f"no weight {weight} event"
        time.sleep(0.1)


def record(live: Live) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((live.box.state_dir / "rollout-auth.json").read_text())
    return data


def ready(live: Live) -> None:
    live.set_faults("canary", {})
    live.set_weight(0)
    live.box.wait_ready(60)


def test_two_runs_at_once_one_drives_the_rollout_the_other_refuses(live: Live, tmp_path: Path) -> None:
    ready(live)
    a = rollout(live, tmp_path / "a", "demo:v7", "--auto-promote", "--traffic-steps", "50,100")
    b = rollout(live, tmp_path / "b", "demo:v7", "--auto-promote", "--traffic-steps", "50,100")
    (a_out, a_err), (b_out, b_err) = a.communicate(timeout=300), b.communicate(timeout=300)
    codes = sorted([a.returncode, b.returncode])
    assert codes == [0, 1], (a_out + a_err, b_out + b_err)
    refusal = a_err if a.returncode else b_err
    assert "is being run by runner" in refusal or "at the same moment" in refusal, refusal
    names = [e["event"] for e in events(tmp_path)]
    assert names.count("promoted") == 1 and names.count("deploying") == 1
    assert record(live)["status"] == "promoted"


def test_an_operators_rollback_mid_stage_wins_over_the_live_runner(live: Live, tmp_path: Path) -> None:
    ready(live)
    runner = rollout(live, tmp_path / "runner", "demo:v8", "--auto-promote", "--step-duration", "60s")
    wait_for_weight(tmp_path / "runner", 5)
    undo = subprocess.run([sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "run",
                           "auth", "demo:v8", "--router", "sandbox", "--rollback", "--reports", str(tmp_path / "undo")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert live.box.router.get_weight() == 0
    stdout, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 4, stdout + stderr  # noticed at its next poll, and stopped by itself
    assert "rolled back by runner" in stdout and "changes nothing more" in stdout
    names = [e["event"] for e in events(tmp_path / "runner")]
    assert "promoted" not in names and "stage passed" not in names
    for _ in range(5):  # and nothing moves it again
        assert live.box.router.get_weight() == 0
        time.sleep(0.5)
    assert record(live)["status"] == "rolled-back"


def test_a_killed_runner_is_rolled_back_by_the_watchdog_within_its_lease(live: Live, tmp_path: Path) -> None:
    ready(live)
    ttl, interval = 4.0, 1.0
    runner = rollout(live, tmp_path / "runner", "demo:v9", "--step-duration", "60s", "--lease-ttl", f"{ttl:g}s")
    wait_for_weight(tmp_path / "runner", 5)
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=10)
    killed = time.time()
    assert live.box.router.get_weight() == 5
    watch = subprocess.Popen([sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "watch",
                              "--platform", "sandbox", "--interval", f"{interval:g}s", "--reports",
                              str(tmp_path / "watch")], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while live.box.router.get_weight() != 0:
            assert time.monotonic() < deadline, "the watchdog did not roll back"
            time.sleep(0.1)
        took = time.time() - killed
    finally:
        watch.send_signal(signal.SIGTERM)  # it stops at once, even mid-rollback
        try:
            out, err = watch.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            watch.kill()
            raise
    assert "rolling back run" in out and "Traceback" not in err, out + err
    print(f"runner killed -> weight 0 by the watchdog: {took:.1f} s (lease {ttl:g} s, looks every {interval:g} s)")
    assert took <= ttl + interval + 2, took
    state = record(live)
    assert state["status"] == "rolled-back"
    rolled = next(d for d in reversed(state["decisions"]) if d["event"] == "rolled back")
    assert rolled["why"].startswith("watchdog: the runner went silent") and rolled["by"].startswith("watchdog")


def test_prometheus_gone_mid_stage_never_promotes(live: Live, tmp_path: Path) -> None:
    ready(live)
    live.calm()  # a Prometheus stopped while an alert fires leaves it firing to queries for 5 min (no stale marker)
    runner = rollout(live, tmp_path, "demo:v10", "--auto-promote", "--traffic-steps", "25,100", "--step-duration",
                     "8s", "--max-extension", "6s")  # fmt: skip
    wait_for_weight(tmp_path, 25)
    live.box.stop_component("prometheus")
    try:
        stdout, stderr = runner.communicate(timeout=300)
    finally:
        live.box.start_component("prometheus")
    assert runner.returncode == 1, stdout + stderr
    assert "missing data never promotes" in stdout
    names = [e["event"] for e in events(tmp_path)]
    assert "promoted" not in names and "stage passed" not in names
    assert live.box.router.get_weight() == 0 and record(live)["status"] == "rolled-back"
    live.box.wait_for_data()


@pytest.mark.long  # half a minute or more: workers start it early
def test_a_rollout_outside_its_window_holds_in_the_sandbox(live: Live, tmp_path: Path) -> None:
    ready(live)
    first = rollout(live, tmp_path / "first", "demo:w1", "--traffic-steps", "5,100", "--step-duration", "60s")
    wait_for_weight(tmp_path / "first", 5, runner=first)
    first.send_signal(signal.SIGTERM)  # stopped at 5 %; the next run resumes it
    out, err = first.communicate(timeout=60)
    assert first.returncode == 130, out + err
    # the windows close (a blackout from today): the resumed run re-runs stage 5, then holds instead of raising
    today = datetime.now(UTC).date()
    config = yaml.safe_load(live.config_path.read_text())
    config["rollout"] = {"release_windows": {"blackout": [f"{today}..{today + timedelta(days=1)}"], "outside": "hold"}}
    windowed = tmp_path / "windowed.yaml"
    windowed.write_text(yaml.safe_dump(config))
    # (13 s at 5 % is too little traffic for the comparisons to decide: the stage goes on by its fixed gates)
    second = rollout(live, tmp_path / "second", "demo:w1", "--traffic-steps", "5,100", "--on-undecided", "proceed",
                     config=windowed)  # fmt: skip
    out, err = second.communicate(timeout=180)
    assert second.returncode == 3, out + err
    assert "stage 5 %: every gate passed" in out or "proceeding (rollout.on_undecided: proceed)" in out, out
    assert f"raising the weight to 100 % is outside the release windows (blacked out from {today} to" in out
    assert f"they open {(today + timedelta(days=2)):%a %d %b %Y} 00:00 UTC" in out
    assert live.box.router.get_weight() == 5 and record(live)["status"] == "awaiting-window"
    # a rollback is never held by a window
    undo = subprocess.run([sys.executable, "-m", "canary_checks", "--canary-config", str(windowed), "run", "auth",
                           "demo:w1", "--router", "sandbox", "--rollback", "--reports", str(tmp_path / "undo")],
                          cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert live.box.router.get_weight() == 0 and record(live)["status"] == "rolled-back"


def test_a_rollout_of_a_service_the_sandbox_does_not_serve_is_refused_before_anything_moves(
    live: Live, tmp_path: Path
) -> None:
    ready(live)
    live.set_weight(25)
    done = subprocess.run([sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "run",
                           "payments", "demo:v1", "--router", "sandbox", "--reports", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "serves auth in orion, not payments in orion" in done.stderr
    assert live.box.router.get_weight() == 25, "nothing moved"
    assert not (live.box.state_dir / "rollout-payments.json").exists()
