"""Release windows: when a rollout may move forward, and what the runner does outside them (hold, or wait polling),
while a rollback is never held. The runner runs its real pytest suites against the in-memory platform; its wall
clock is a function the test turns."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import ReleaseWindows, load_config
from canary_checks.errors import ConfigError
from canary_checks.runner import HELD_EXIT, INTERRUPTED_EXIT, SUPERSEDED_EXIT, Rollout, RolloutOptions
from canary_checks.windows import check
from tests.conftest import write_config
from tests.unit.test_ownership import PASSING_SUITE
from tests.unit.test_runner_undecided import Memory

SUNDAY = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()
MONDAY = datetime(2026, 11, 30, 10, 0, tzinfo=UTC).timestamp()
WEEKDAYS = {"allowed": ["* 9-16 * * mon-fri"], "timezone": "UTC"}


def at(text: str, zone: str = "Europe/Berlin") -> float:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_a_minute_is_open_when_an_allowed_cron_matches_it_and_its_day_is_not_blacked_out() -> None:
    windows = ReleaseWindows(
        timezone="Europe/Berlin", allowed=("* 9-16 * * mon-thu",), blackout=("2026-12-21..2027-01-03",)
    )
    assert check(windows, at("2026-11-26T16:59")).open  # Thursday, in Berlin
    friday = check(windows, at("2026-11-27T17:05"))
    assert not friday.open and friday.why == "outside the allowed windows (* 9-16 * * mon-thu)"
    assert friday.until() == "Mon 30 Nov 2026 09:00 Europe/Berlin"
    # 08:30 UTC on a Monday is 09:30 in Berlin: the time zone is the windows' own
    assert check(windows, at("2026-11-30T08:30", "UTC")).open
    holidays = check(windows, at("2026-12-22T10:00"))
    assert holidays.why == "blacked out from 2026-12-21 to 2027-01-03"
    assert holidays.until() == "Mon 04 Jan 2027 09:00 Europe/Berlin"
    only_blackout = check(ReleaseWindows(blackout=("2026-11-29", "2026-11-30..2026-12-01")), SUNDAY)
    assert only_blackout.why == "blacked out on 2026-11-29" and only_blackout.until() == "Wed 02 Dec 2026 00:00 UTC"
    never = check(ReleaseWindows(allowed=("* * 1 1 *",), blackout=("2026-11-01..2028-12-31",)), SUNDAY)
    assert not never.open and "no window opens within 400 days" in never.until()


@pytest.mark.parametrize(
    ("windows", "key", "says"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone", "unknown time zone 'Mars/Olympus': use an IANA name"),
        ({"allowed": ["* 25 * * *"]}, "allowed", "'* 25 * * *' is not a cron expression (Bad hour)"),
        ({"allowed": ["0 9 * *"]}, "allowed", "not a 5-field cron expression: write minute hour day-of-month"),
        ({"blackout": ["2026-13-01"]}, "blackout", "not a date or a range of dates: write 2026-12-24"),
        ({"blackout": ["2027-01-03..2026-12-21"]}, "blackout", "ends before it starts"),
        ({"outside": "sleep"}, "outside", "'wait' or 'hold'"),
    ],
)
def test_window_mistakes_name_the_key_and_the_fix(tmp_path: Path, windows: dict[str, Any], key: str, says: str) -> None:
    path = write_config(tmp_path / "canary.yaml", rollout={"release_windows": windows})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"rollout.release_windows.{key}" in caught.value.message and says in caught.value.message


def runner(
    tmp_path: Path, memory: Memory, clock: Callable[[], float], lines: list[str], holder: str = "runner", **opts: Any
) -> Rollout:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_stage.py").write_text(PASSING_SUITE)
    windows = {**WEEKDAYS, **opts.pop("windows", {})}
    config = load_config(write_config(tmp_path / "canary.yaml", service="cart", namespace="shop",
                                      rollout={"release_windows": windows}))  # fmt: skip
    options = RolloutOptions(service="cart", image="shop/cart:2", steps=(5, 50, 100), step_duration=0.1,
                             poll_interval=0.1, suite=suite, reports=tmp_path / "reports", auto_promote=True,
                             holder=holder, **opts)  # fmt: skip
    return Rollout(config, memory, memory, options, echo=lines.append, on_wait=lambda *a: None, clock=clock)


def started(rollout: Rollout, lines: list[str], said: str) -> tuple[threading.Thread, dict[str, int]]:
    """``rollout`` running in a thread, once it has said ``said``."""
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", rollout.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not any(said in line for line in lines):
        assert time.monotonic() < deadline and thread.is_alive(), lines
        time.sleep(0.02)
    return thread, result


def events(tmp_path: Path) -> list[dict[str, Any]]:
    (log,) = (tmp_path / "reports").glob("*/events.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_outside_the_windows_a_new_rollout_holds_before_anything_is_deployed(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    code = runner(tmp_path, memory, lambda: SUNDAY, lines, windows={"outside": "hold"}, router_kind="sandbox").run()
    assert code == HELD_EXIT
    assert memory.replicas == 0 and memory.weights == [] and memory.state is None, "nothing deployed or recorded"
    said = "\n".join(lines)
    assert "deploying shop/cart:2 is outside the release windows (outside the allowed windows" in said
    assert "they open Mon 30 Nov 2026 09:00 UTC" in said and "nothing was deployed" in said
    assert "run 'canary-checks run cart shop/cart:2 --router sandbox' again inside a window" in said  # as typed


def test_a_window_closing_mid_rollout_holds_the_weight_and_a_run_inside_one_goes_on(tmp_path: Path) -> None:
    memory, lines = Memory(), []

    def clock() -> float:  # it closes once the canary has its first weight
        return SUNDAY if memory.weight >= 5 else MONDAY

    code = runner(tmp_path, memory, clock, lines, windows={"outside": "hold"}).run()
    assert code == HELD_EXIT
    assert memory.weights == [5] and memory.replicas == 1, "held at 5 %: nothing moved forward, nothing undone"
    assert memory.state is not None and memory.state["status"] == "awaiting-window"
    assert any("stage 5 %: raising the weight to 50 % is outside the release windows" in line for line in lines)
    held = [e for e in events(tmp_path) if e["event"] == "outside window"]
    assert held and held[0]["opens"] == "2026-11-30T09:00:00+00:00"
    # Monday: the same command goes on from where it held
    code = runner(tmp_path, memory, lambda: MONDAY, lines).run()
    assert code == 0 and memory.weights == [5, 50, 100, 0] and memory.stable == "shop/cart:2"


def test_waiting_for_a_window_goes_on_when_it_opens(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    opened = threading.Event()

    def clock() -> float:  # closed before the last stage until the test opens it
        return MONDAY if memory.weight < 50 or opened.is_set() else SUNDAY

    thread, result = started(runner(tmp_path, memory, clock, lines), lines, "waiting, polling the critical gates")
    assert memory.weight == 50 and memory.state is not None and memory.state["status"] == "progressing"
    opened.set()
    thread.join(timeout=30)
    assert result["code"] == 0 and memory.weights == [5, 50, 100, 0]
    assert any("stage 50 %: inside the release windows: raising the weight to 100 %" in line for line in lines)


def test_stopped_while_waiting_to_deploy_says_no_traffic_moved(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    waiting = runner(tmp_path, memory, lambda: SUNDAY, lines)
    thread, result = started(waiting, lines, "outside the release windows")
    waiting._on_signal(signal.SIGTERM, None)  # what the handler does when the signal arrives
    thread.join(timeout=30)
    assert result["code"] == INTERRUPTED_EXIT and memory.weights == [] and memory.replicas == 0
    said = "\n".join(lines)
    assert "stopped by SIGTERM before any traffic moved to the canary" in said and "at stage" not in said, said


def test_a_rollback_is_never_held_by_a_window(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    waiting = runner(tmp_path, memory, lambda: MONDAY if memory.weight < 5 else SUNDAY, lines, holder="runner A")
    thread, result = started(waiting, lines, "outside the release windows")
    # an operator rolls back on a Sunday: at once, and the waiting runner stops within a poll
    code = runner(tmp_path, memory, lambda: SUNDAY, lines, holder="operator", rollback=True).run()
    assert code == 0 and memory.weight == 0 and memory.replicas == 0
    thread.join(timeout=30)
    assert result["code"] == SUPERSEDED_EXIT and memory.weights == [5, 0]
    assert memory.state is not None and memory.state["status"] == "rolled-back"


def test_an_empty_allowed_list_is_refused_rather_than_read_as_always(tmp_path: Path) -> None:
    path = write_config(tmp_path / "canary.yaml", rollout={"release_windows": {"allowed": []}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "rollout.release_windows: allowed is empty" in caught.value.message
    assert "leave it out to allow every minute" in caught.value.message and "blackout" in caught.value.message


def test_windows_without_allowed_survive_the_command_lines_overrides(tmp_path: Path) -> None:
    path = write_config(tmp_path / "canary.yaml", rollout={"release_windows": {"blackout": ["2026-12-24"]}})
    config = load_config(path, {"service": "cart", "namespace": "shop"})  # re-validated with the flags over it
    assert config.rollout.release_windows is not None and config.rollout.release_windows.allowed is None
    assert check(config.rollout.release_windows, SUNDAY).open
