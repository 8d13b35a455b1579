"""A rollout with proportional scaling in the real sandbox (tests/integration/scaling.py), driven by
``canary-checks run --router sandbox`` as a user runs it: the canary's pods follow its weight, the split read back from
the requests the pods counted (Prometheus) holds at each stage, and a rollback empties it. One sandbox of its own, on
one worker (the capacity scene and the load gate run on another: test_scaling_sandbox.py); and the scene refused on a
sandbox started without pods to scale."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from canary_checks.prometheus import MetricsSource
from canary_checks.sandbox import Sandbox
from canary_checks.sandbox.capacity import requests_between
from tests.integration.conftest import OWN_STATE, REPO, Live
from tests.integration.scaling import STABLE, WINDOW, box, canary_pods, config_path, wait_until
from tests.integration.test_faults import events

__all__ = ["box"]  # the module's own sandbox (a fixture)

TOLERANCE = 2.0
"""Points the canary's share of requests may differ from its weight (issue 17's bound for the sticky split)."""


@pytest.mark.xdist_group("scaling-rollout-sandbox")
def test_a_rollout_scales_the_canary_with_its_weight_the_split_holds_and_a_rollback_empties_it(
    box: Sandbox, tmp_path: Path
) -> None:
    reports = tmp_path / "reports"
    command = [sys.executable, "-m", "canary_checks", "--canary-config", str(config_path(box)), "run", "auth",
               "demo:v3", "--router", "sandbox", "--step-duration", f"{WINDOW + 2}s",
               "--poll-interval", "4s", "--on-undecided", "proceed", "--reports", str(reports)]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every stage passed; not promoting without --auto-promote" in done.stdout
    log = events(reports)
    scaled = [(e["stage"], e["replicas"]) for e in log if e["event"] == "scaled"]
    assert scaled == [(5, 1), (25, 1), (50, 2), (75, 3), (100, 4)]
    assert len(canary_pods(box)) == STABLE and all(p["ready"] for p in canary_pods(box))
    # the split at each stage, from the requests every pod answered while it lasted
    moves = [(e["time"], e["weight"]) for e in log if e["event"] == "weight"] + [(time.time(), None)]
    for (start, weight), (end, _) in itertools.pairwise(moves):
        counted = requests_between(box, start + 3, end)  # skip what was in flight at the change
        canary, stable = counted.get("auth-canary", {}), counted.get("auth-stable", {})
        share = 100 * sum(canary.values()) / (sum(canary.values()) + sum(stable.values()))
        pods = -(-STABLE * weight // 100)
        print(f"stage {weight} %: canary {share:.1f} % of {sum(canary.values()) + sum(stable.values()):.0f} "
              f"requests over {len(canary)} canary pods and {len(stable)} stable pods")  # fmt: skip
        assert abs(share - weight) <= TOLERANCE, (weight, share, counted)
        assert len(canary) == pods and min(canary.values()) > 0, (weight, counted)  # every pod had its share
        assert len(stable) == STABLE or weight == 100

    undo = subprocess.run([*command[:8], "--router", "sandbox", "--rollback", "--reports", str(tmp_path / "undo")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert box.router.get_weight() == 0 and canary_pods(box) == []
    rolled = [e["event"] for e in events(tmp_path / "undo")]
    assert rolled.index("weight") < rolled.index("rolled back")  # weight 0 recorded, then the canary gone
    assert not [s for s in box.router.in_service() if s.startswith("canary")]
    # kube-state-metrics' view, as the gates read it: the canary Deployment at 0 replicas, none ready
    source = MetricsSource(box.config)
    wait_until("kube_deployment_spec_replicas of auth-canary is not 0", lambda: [s.value for s in source.query(
        'kube_deployment_spec_replicas{namespace="orion", deployment="auth-canary"}')] == [0.0])  # fmt: skip


@OWN_STATE  # a refusal, no window
def test_the_scaling_scene_on_a_sandbox_started_without_canary_pods_to_scale_is_refused_with_the_fix(
    live: Live,
) -> None:
    done = live.demo("--scaling")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--scaling: the sandbox running from" in done.stderr and "canary-checks sandbox down" in done.stderr
    assert live.box.is_up() and len(live.box.pods()) == 2  # the running sandbox is left as it was
