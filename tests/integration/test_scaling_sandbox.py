"""Capacity follows weight in the real sandbox (tests/integration/scaling.py): the demo's capacity scene, and the
load-per-pod gate on the requests each pod answered (Prometheus), for an overloaded canary pod and one scaled for its
share. One sandbox of their own, on one worker (the rollout runs on another: test_scaling_rollout_sandbox.py)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from rich.console import Console

from canary_checks.config import CanaryConfig
from canary_checks.gates import GateResult, Verdict, evaluate
from canary_checks.prometheus import MetricsSource
from canary_checks.rundir import RunRecord
from canary_checks.sandbox import Sandbox, SandboxPlatform
from canary_checks.sandbox.capacity import SCENE_SECONDS, capacity_scene
from tests.integration.scaling import STABLE, WINDOW, box, canary_pods, wait_until

pytestmark = pytest.mark.xdist_group("scaling-sandbox")
__all__ = ["box"]  # the module's own sandbox (a fixture)


def load_gate(config: CanaryConfig) -> GateResult:
    result = evaluate(config, MetricsSource(config), ["load_per_pod"], stage=50)["load_per_pod"]
    assert isinstance(result, GateResult), result
    return result


def test_the_load_gate_fails_an_overloaded_canary_and_passes_one_scaled_for_its_share(box: Sandbox) -> None:
    platform = SandboxPlatform(box, "auth")
    box.set_weight(0)
    platform.scale_canary(0)  # whatever the test before left: no canary at all
    platform.wait_canary_ready(60, print)
    changed = time.monotonic()
    wait_until("a full window without a canary", lambda: time.monotonic() > changed + WINDOW + 3)
    empty = load_gate(box.config)
    assert empty.verdict is Verdict.NO_DATA, empty.summary  # no canary traffic and no canary pod: never a pass
    print(f"no canary: {empty.summary}")

    platform.scale_canary(1)
    platform.wait_canary_ready(60, print)
    box.set_weight(50)  # one pod for half the traffic: it serves what two stable pods serve
    changed = time.monotonic()
    wait_until("a full window at 50 % with one canary pod", lambda: time.monotonic() > changed + WINDOW + 3)
    over = load_gate(box.config)
    print(f"1 canary pod at 50 %: {over.summary}")
    assert over.verdict is Verdict.FAIL and over.value is not None and over.value > 1.5, over.summary
    assert over.details["canary_pods"] == 1 and over.details["stable_pods"] == STABLE

    platform.scale_canary(2)
    platform.wait_canary_ready(60, print)  # the share spread over both pods once the new one is ready
    assert box.router.get_weight() == 50
    changed = time.monotonic()
    wait_until("a full window at 50 % with two canary pods", lambda: time.monotonic() > changed + WINDOW + 3)
    sized = load_gate(box.config)
    print(f"2 canary pods at 50 %: {sized.summary}")
    assert sized.verdict is Verdict.PASS and sized.value is not None and 0.8 < sized.value < 1.2, sized.summary
    assert json.loads(json.dumps(sized.details))["canary_pods"] == 2


def test_the_demos_capacity_scene_shows_each_stage_an_overloaded_pod_and_a_rollback(
    box: Sandbox, tmp_path: Path
) -> None:
    console = Console(file=io.StringIO(), width=300, force_terminal=False)
    record = RunRecord.start(tmp_path, "demo", run_id="demo-scaling", service="auth", namespace="orion",
                             started=time.time())  # fmt: skip
    ok = capacity_scene(box, record, console, lambda what: time.sleep(SCENE_SECONDS))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    print(shown)
    assert ok, shown
    for weight, pods in ((5, 1), (25, 1), (50, 2), (75, 3), (100, 4)):
        assert f"ok: stage {weight} %: {pods} canary pods (stable {STABLE}) ready before the weight moved" in shown
    assert "one canary pod at 50 %: load_per_pod fail: overloaded" in shown
    assert "rolled back: weight 0 %, then 0 canary pods" in shown
    assert box.router.get_weight() == box.config.stages[0] and len(canary_pods(box)) == 1


def test_a_rollout_asking_for_more_canary_pods_than_the_sandbox_runs_is_refused_before_it_starts(box: Sandbox) -> None:
    more = box.config.rollout.scaling.model_copy(update={"min": STABLE + 2})
    config = box.config.model_copy(update={"rollout": box.config.rollout.model_copy(update={"scaling": more})})
    (problem,) = SandboxPlatform(Sandbox(config), "auth").validate()
    assert f"rollout.scaling asks for up to {STABLE + 2} canary pods" in problem
    assert f"was started with {STABLE}" in problem and "'canary-checks sandbox up'" in problem
    assert SandboxPlatform(box, "auth").validate() == []
