"""The runner on a stage that cannot decide: the suite (real pytest subprocesses) reports only a comparison as
inconclusive, every fixed gate passing; the policy (hold, rollback, proceed) decides what happens to the weight.

The platform and the router are in-memory stand-ins (the sandbox and the Kubernetes emulator tests cover the real
ones); everything the runner decides runs for real."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import CanaryConfig, UndecidedPolicy, load_config
from canary_checks.errors import CanaryError
from canary_checks.record import RecordConflict, version_of
from canary_checks.runner import HELD_EXIT, Rollout, RolloutOptions
from canary_checks.suite import decide_stage, run_suite
from tests.conftest import write_config

UNDECIDED_SUITE = """
import pytest

def test_error_rate(record_property):
    record_property("gate", "error_rate")
    record_property("verdict", "pass")

def test_errors_vs_stable(record_property):
    record_property("gate", "compare_errors")
    record_property("verdict", "inconclusive")
    record_property("needed_requests", "1234")
    record_property("needed_seconds", "123")
    pytest.fail("compare_errors: inconclusive")
"""

NO_DATA_SUITE = """
import pytest

def test_error_rate(record_property):
    record_property("gate", "error_rate")
    record_property("verdict", "no data")
    pytest.fail("error_rate: no data")
"""


class Memory:
    """The rollout's record and the canary, in memory, written by compare-and-swap as the real platforms do; the
    router is the weight. ``weights`` is every weight ever set, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.weights: list[int] = []
        self.state: dict[str, Any] | None = None
        self.weight = 0
        self.replicas = 0
        self.stable = "shop/cart:1"
        self.baseline_weight = self.baseline_replicas = 0
        self.steps: list[str] = []
        """Weight changes and the baseline's starts and stops, in order."""

    def describe(self) -> str:
        return "memory"

    def validate(self) -> list[str]:
        return []

    def read_record(self) -> dict[str, Any] | None:
        return json.loads(json.dumps(self.state)) if self.state else None

    def write_record(self, state: dict[str, Any], expected: int) -> int:
        with self.lock:
            if version_of(self.state) != expected:
                raise RecordConflict("changed", self.read_record())
            state["version"] = expected + 1
            self.state = json.loads(json.dumps(state))
            return expected + 1

    def stable_image(self) -> str:
        return self.stable

    def deploy_canary(self, image: str) -> None:
        self.replicas = 1

    def wait_canary_ready(self, timeout: float, progress: Any) -> None:
        pass

    def scale_canary(self, replicas: int) -> None:
        self.replicas = replicas

    def start_baseline(self, replicas: int, timeout: float, progress: Any) -> None:
        self.baseline_replicas = replicas
        self.steps.append(f"baseline {replicas}")

    def stop_baseline(self) -> None:
        self.baseline_replicas = 0
        self.steps.append("baseline 0")

    def promote(self, image: str, timeout: float, progress: Any) -> None:
        self.stable = image

    def get_weight(self) -> int:
        return self.weight

    def set_weight(self, percent: int, baseline: int = 0) -> int:
        self.weight, self.baseline_weight = percent, baseline
        self.weights.append(percent)
        self.steps.append(f"weight {percent}/{baseline}")
        return percent


def rollout(tmp_path: Path, memory: Memory, suite_text: str, **options: Any) -> tuple[int, list[str]]:
    suite = tmp_path / "suite"
    suite.mkdir(exist_ok=True)
    (suite / "test_stage.py").write_text(suite_text)
    config: CanaryConfig = load_config(write_config(tmp_path / "canary.yaml", service="cart", namespace="shop"))
    lines: list[str] = []
    opts = RolloutOptions(service="cart", image="shop/cart:2", steps=(5, 100), step_duration=0.1, poll_interval=0.1,
                          suite=suite, reports=tmp_path / "reports", auto_promote=True, max_extension=0.1,
                          **options)  # fmt: skip
    code = Rollout(config, memory, memory, opts, echo=lines.append, on_wait=lambda *a: None).run()
    return code, lines


def events(tmp_path: Path) -> list[str]:
    (log,) = (tmp_path / "reports").glob("*/events.jsonl")
    return [json.loads(line)["event"] for line in log.read_text().splitlines()]


def test_hold_keeps_the_weight_says_what_is_needed_and_a_person_decides(tmp_path: Path) -> None:
    memory = Memory()
    code, lines = rollout(tmp_path, memory, UNDECIDED_SUITE)
    assert code == HELD_EXIT
    assert memory.weight == 5 and memory.replicas == 1  # held: nothing moved, nothing undone
    assert memory.state is not None and memory.state["status"] == "awaiting-decision"
    said = "\n".join(lines)
    assert "compare_errors inconclusive: needs ≈ 1,234 more canary requests (≈ 2 min at the observed rate)" in said
    assert "--proceed" in said and "--rollback" in said
    assert events(tmp_path)[-1] == "awaiting decision"
    # the person decides to go on: the held stage counts as passed, the next stage's suite still runs and holds
    code, lines = rollout(tmp_path, memory, UNDECIDED_SUITE, proceed=True)
    assert code == HELD_EXIT and memory.weight == 100
    assert "proceeded undecided" in events(tmp_path)


def test_rollback_policy_rolls_back_an_undecided_stage(tmp_path: Path) -> None:
    memory = Memory()
    code, lines = rollout(tmp_path, memory, UNDECIDED_SUITE, on_undecided=UndecidedPolicy.ROLLBACK)
    assert code == 1
    assert memory.weight == 0 and memory.replicas == 0
    assert any("could not decide" in line and "on_undecided: rollback" in line for line in lines)


def test_proceed_policy_goes_on_and_promotes(tmp_path: Path) -> None:
    memory = Memory()
    code, _ = rollout(tmp_path, memory, UNDECIDED_SUITE, on_undecided=UndecidedPolicy.PROCEED)
    assert code == 0
    assert memory.stable == "shop/cart:2" and memory.weight == 0
    assert events(tmp_path).count("proceeded undecided") == 2 and events(tmp_path)[-1] == "promoted"


def test_missing_data_is_never_a_policy_matter_it_rolls_back(tmp_path: Path) -> None:
    memory = Memory()
    code, lines = rollout(tmp_path, memory, NO_DATA_SUITE, on_undecided=UndecidedPolicy.PROCEED)
    assert code == 1 and memory.weight == 0
    assert any("missing data never promotes" in line for line in lines)


def test_a_suite_that_cannot_run_stops_the_rollout_before_anything_is_deployed(tmp_path: Path) -> None:
    memory = Memory()
    with pytest.raises(CanaryError) as caught:
        rollout(tmp_path, memory, "import no_such_module\n\ndef test_x():\n    pass\n")
    assert "cannot run" in caught.value.message and "nothing was deployed" in caught.value.message
    assert memory.replicas == 0 and memory.weight == 0 and memory.state is None
    empty = tmp_path / "empty"
    with pytest.raises(CanaryError, match="has no tests"):
        rollout(empty.parent, memory, "")


def test_a_hold_looks_again_at_its_deadline_not_a_whole_poll_after_it(tmp_path: Path) -> None:
    (tmp_path / "test_stage.py").write_text(UNDECIDED_SUITE)
    run_suite(tmp_path, 25, tmp_path / "warm.xml")  # the fork server started: the deadline is the holds' alone
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    decision = decide_stage(tmp_path, 25, lambda attempt: tmp_path / f"run-{attempt}.xml",
                            deadline=time.monotonic() + 1.5, poll=30, sleep=sleep)  # fmt: skip
    assert decision.outcome == "undecided" and "compare_errors" in decision.why
    assert slept and all(s <= 1.5 for s in slept), slept  # the step and its extension, never 30 s more
