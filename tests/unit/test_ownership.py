"""One owner per rollout: a second runner refuses while the first holds the lease, takes over once it expired; a
rollback by anyone wins over a live runner; the watchdog rolls back a rollout whose runner went silent.

The runners here are real :class:`Rollout` objects running real pytest suites; two "processes" are two runners in
two threads sharing one record (written by compare-and-swap, as the cluster's annotation and the sandbox's file
are). The sandbox and Kubernetes emulator tests do the same with real processes."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.errors import CanaryError
from canary_checks.record import Lease
from canary_checks.runner import SUPERSEDED_EXIT, Rollout, RolloutOptions
from canary_checks.watch import Candidate, Watchdog
from tests.conftest import write_config
from tests.unit.test_runner_undecided import Memory

PASSING_SUITE = """
def test_error_rate(record_property):
    record_property("gate", "error_rate")
    record_property("verdict", "pass")
"""


def runner(tmp_path: Path, memory: Memory, holder: str, lines: list[str], **options: Any) -> Rollout:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_stage.py").write_text(PASSING_SUITE)
    config = load_config(write_config(tmp_path / "canary.yaml", service="cart", namespace="shop"))
    opts = {"service": "cart", "image": "shop/cart:2", "steps": (5, 50, 100), "step_duration": 0.1,
            "poll_interval": 0.1, "suite": suite, "reports": tmp_path / "reports", "auto_promote": True,
            "holder": holder, **options}  # fmt: skip
    return Rollout(config, memory, memory, RolloutOptions(**opts), echo=lines.append, on_wait=lambda *a: None)


def in_thread(rollout: Rollout) -> tuple[threading.Thread, dict[str, int]]:
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", rollout.run()), daemon=True)
    thread.start()
    return thread, result


def wait_for(condition: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_second_runner_refuses_naming_the_holder_and_takes_over_once_the_lease_expired(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    first = runner(tmp_path, memory, "runner A", lines, step_duration=8, lease_ttl=1.5)
    thread, result = in_thread(first)
    wait_for(lambda: memory.weight == 5)
    second = runner(tmp_path, memory, "runner B", lines, lease_ttl=1.5)
    with pytest.raises(CanaryError) as refused:
        second.run()
    assert "is being run by runner A" in refused.value.message and "--rollback" in refused.value.message
    assert memory.weights == [5], "the refused runner changed nothing"
    # runner A goes silent (as if killed): its heartbeat stops, the lease runs out
    first._heartbeat_stop.set()
    first._superseded = None
    wait_for(lambda: Lease.of(memory.state) is not None and Lease.of(memory.state).expired(), timeout=10)  # type: ignore[union-attr]
    code = runner(tmp_path, memory, "runner B", lines, lease_ttl=1.5).run()
    assert code == 0 and memory.stable == "shop/cart:2"
    assert Lease.of(memory.state).holder == "runner B"  # type: ignore[union-attr]
    thread.join(timeout=60)
    assert result["code"] == SUPERSEDED_EXIT, "A stops on its own at its next safe point, changing nothing"
    assert any("now held by runner B" in line for line in lines)


def test_a_rollback_from_another_process_mid_stage_wins_and_nothing_moves_after_it(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    live = runner(tmp_path, memory, "runner A", lines, step_duration=2)
    thread, result = in_thread(live)
    wait_for(lambda: memory.weight == 5)
    undo = runner(tmp_path, memory, "operator", lines, rollback=True)
    assert undo.run() == 0
    assert memory.weight == 0 and memory.replicas == 0
    thread.join(timeout=60)
    assert result["code"] == SUPERSEDED_EXIT
    assert memory.weights[memory.weights.index(0) :] == [0] * len(memory.weights[memory.weights.index(0) :])
    assert memory.stable == "shop/cart:1", "never promoted"
    assert memory.state is not None and memory.state["status"] == "rolled-back"
    assert any("rolled back by operator (--rollback asked for it)" in line for line in lines)


def test_two_runners_started_together_one_runs_the_rollout(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    runs = [runner(tmp_path, memory, f"runner {n}", lines) for n in "AB"]
    outcomes: dict[str, object] = {}

    def go(rollout: Rollout) -> None:
        try:
            outcomes[rollout.options.holder] = rollout.run()
        except CanaryError as e:
            outcomes[rollout.options.holder] = e.message

    threads = [threading.Thread(target=go, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    codes = sorted(outcomes.values(), key=str)
    assert codes[0] == 0, outcomes
    assert isinstance(codes[1], str) and ("being run by" in codes[1] or "at the same moment" in codes[1]), outcomes
    events = [d["event"] for d in memory.state["decisions"]]  # type: ignore[index]
    assert events.count("promoted") == 1 and events.count("deployed") == 1


def silent_record(memory: Memory, status: str, *, heard: float) -> None:
    memory.weight = 25
    memory.replicas = 1
    memory.state = {"run_id": "r1", "service": "cart", "image": "shop/cart:2", "steps": [5, 25, 100],
                    "step_index": 1, "status": status, "version": 7, "decisions": [],
                    "lease": Lease("runner A", "r1", time.time() - heard, 10).as_dict()}  # fmt: skip


def watchdog(tmp_path: Path, memory: Memory, lines: list[str]) -> Watchdog:
    path = write_config(tmp_path / "canary.yaml", service="cart", namespace="shop")
    scan = lambda: [Candidate("cart", memory.read_record() or {}, memory, lambda: memory)]  # noqa: E731
    return Watchdog(load_config(path), path, scan, echo=lines.append, reports=tmp_path / "reports")


def test_the_watchdog_rolls_back_a_rollout_whose_runner_went_silent(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    silent_record(memory, "progressing", heard=11)
    assert watchdog(tmp_path, memory, lines).once() == ["cart"]
    assert memory.weight == 0 and memory.replicas == 0
    record = memory.state
    assert record is not None and record["status"] == "rolled-back"
    rolled = next(d for d in record["decisions"] if d["event"] == "rolled back")
    assert "runner A was last heard 11 s ago (lease 10 s)" in rolled["why"] and rolled["by"].startswith("watchdog")


@pytest.mark.parametrize(("status", "heard"), [("progressing", 3), ("awaiting-decision", 600),
                                               ("awaiting-promotion", 600), ("promoted", 600)])  # fmt: skip
def test_the_watchdog_leaves_alone_what_someone_looks_after(tmp_path: Path, status: str, heard: float) -> None:
    memory, lines = Memory(), []
    silent_record(memory, status, heard=heard)
    assert watchdog(tmp_path, memory, lines).once() == []
    assert memory.weight == 25 and memory.state is not None and memory.state["status"] == status


def test_another_image_while_one_awaits_promotion_is_refused_naming_it_and_its_stage(tmp_path: Path) -> None:
    memory, lines = Memory(), []
    assert runner(tmp_path, memory, "runner A", lines, auto_promote=False).run() == 0  # every stage passed
    assert memory.state is not None and memory.state["status"] == "awaiting-promotion"
    with pytest.raises(CanaryError) as refused:
        runner(tmp_path, memory, "runner B", lines, image="shop/cart:3").run()
    said = refused.value.message + (refused.value.fix or "")
    assert "a rollout of shop/cart:2" in said and "at stage 100 % (awaiting-promotion)" in said
    assert "canary-checks run cart shop/cart:2 --rollback" in said
    assert memory.state["status"] == "awaiting-promotion" and memory.weight == 100, "the refusal changed nothing"
