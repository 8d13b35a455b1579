"""Capacity follows weight on the Kubernetes path: ``canary-checks run`` with ``rollout.scaling.mode: proportional``
against the API emulator (tests/cluster.py) with the official client, as a user runs it (the command, in a
subprocess). Every write that reaches the emulator is recorded with the Deployments as they were when it arrived,
so the order is checked where it matters: when the weight moved, was the canary ready at its new size?"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster import Cluster
from tests.integration.test_runner_kube import NEW, REPO, Env, wait_for_event
from tests.integration.test_runner_kube import env as env  # the emulator with the auth manifests, Prometheus stub

STABLE = 3
"""auth-stable's replicas in manifests/auth/base.yaml: the canary's are ceil(3 x weight) — 1, 1, 2, 3."""


@dataclass(frozen=True)
class Seen:
    """A write to the emulator, and the Deployments as they were when it arrived (before it was stored)."""

    path: str
    body: Any
    canary: dict[str, Any]
    stable: dict[str, Any]

    @property
    def weight(self) -> int | None:
        """The canary weight a write to the VirtualService sets (its patch writes stable's, then the canary's)."""
        if "/virtualservices/" not in self.path or not isinstance(self.body, list):
            return None
        weights = [op["value"] for op in self.body if str(op.get("path", "")).endswith("/weight")]
        return int(weights[-1]) if weights else None

    @property
    def canary_replicas(self) -> int | None:
        """The replicas a write to the canary Deployment sets, if it sets them."""
        if not self.path.endswith("/deployments/auth-canary") or not isinstance(self.body, list):
            return None
        return next((int(op["value"]) for op in self.body if op.get("path") == "/spec/replicas"), None)


def deployment(cluster: Cluster, name: str) -> dict[str, Any]:
    obj = cluster.objects["apps/v1/deployments", "orion", name]
    spec, status, meta = obj.get("spec", {}), obj.get("status", {}), obj.get("metadata", {})
    rolled = int(status.get("observedGeneration", 0)) >= int(meta.get("generation", 0))
    return {"replicas": spec.get("replicas"), "ready": status.get("readyReplicas") if rolled else None,
            "image": spec["template"]["spec"]["containers"][0]["image"]}  # fmt: skip


class Recording(list[Any]):
    """``Cluster.writes`` that also keeps, for each write, the Deployments as they were when it arrived."""

    def __init__(self, cluster: Cluster) -> None:
        super().__init__()
        self.cluster, self.seen = cluster, list[Seen]()

    def append(self, write: Any) -> None:
        _, path, body = write
        self.seen.append(Seen(path, body, deployment(self.cluster, "auth-canary"),
                              deployment(self.cluster, "auth-stable")))  # fmt: skip
        super().append(write)


@pytest.fixture
def scaled(env: Env) -> Iterator[tuple[Env, Recording]]:
    config = yaml.safe_load(env.config.read_text())
    config["rollout"] = {"scaling": {"mode": "proportional"}}
    env.config.write_text(yaml.safe_dump(config))
    core = client.CoreV1Api(env.api)
    labels = core.read_namespaced_pod("auth-canary-7c9d-bbbbb", "orion").metadata.labels
    for i in range(2, STABLE + 1):  # no controller makes pods: the canary's pods for the kube_* gates, all Ready
        meta = {"name": f"auth-canary-7c9d-bbbb{i}", "namespace": "orion", "labels": labels}
        status = {"conditions": [{"type": "Ready", "status": "True"}]}
        spec = {"containers": [{"name": "app", "image": NEW}]}
        core.create_namespaced_pod("orion", {"metadata": meta, "spec": spec, "status": status})
    recording = Recording(env.cluster)
    env.cluster.writes = recording
    yield env, recording


def test_the_canary_is_ready_at_ceil_of_stable_times_the_weight_before_each_weight_moves(
    scaled: tuple[Env, Recording],
) -> None:
    env, recording = scaled
    done = env.run("--auto-promote")
    assert done.returncode == 0, done.stdout + done.stderr
    moves = [(w.weight, w.canary) for w in recording.seen if w.weight is not None]
    assert [weight for weight, _ in moves] == [25, 50, 100, 0], moves  # manifests/auth/istio.yaml starts at 5 %
    for weight, canary in moves[:-1]:
        wanted = -(-STABLE * weight // 100)
        assert canary["replicas"] == wanted and canary["ready"] == wanted, (weight, canary)  # ready at its size
    for stage, replicas in ((5, 1), (25, 1), (50, 2), (100, 3)):
        assert f"stage {stage} %: the canary is ready at {replicas} replicas (stable {STABLE})" in done.stdout
    # promoted: stable runs the image at its own size, ready, before the traffic goes back to it; the canary goes
    # to 0 after that
    back, stable = next((i, w.stable) for i, w in enumerate(recording.seen) if w.weight == 0)
    assert stable == {"replicas": STABLE, "ready": STABLE, "image": NEW}
    gone = [i for i, w in enumerate(recording.seen) if w.canary_replicas == 0]
    assert gone and min(gone) > back
    assert env.deployment("auth-canary").spec.replicas == 0 and env.deployment("auth-stable").spec.replicas == STABLE
    assert [e["replicas"] for e in env.events() if e["event"] == "scaled"] == [1, 1, 2, 3]
    assert env.record()["stable_replicas"] == STABLE


def test_promotion_brings_stable_back_to_its_size_if_it_was_scaled_meanwhile(scaled: tuple[Env, Recording]) -> None:
    env, recording = scaled
    process = subprocess.Popen(env.command("--auto-promote", "--step-duration", "3s"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_event(env, "weight", 25)
        # someone (an autoscaler seeing stable's traffic fall) takes stable down to one pod mid-rollout
        client.AppsV1Api(env.api).patch_namespaced_deployment("auth-stable", "orion", {"spec": {"replicas": 1}})
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, out + err
    # the canary kept following stable's size as the rollout started, not the autoscaler's
    assert [e["replicas"] for e in env.events() if e["event"] == "scaled"] == [1, 1, 2, 3]
    back = next(w.stable for w in recording.seen if w.weight == 0)
    assert back == {"replicas": STABLE, "ready": STABLE, "image": NEW}, "stable at its size before it got traffic"


def test_a_canary_not_ready_at_its_new_size_rolls_back_and_the_weight_never_moved(
    scaled: tuple[Env, Recording],
) -> None:
    env, recording = scaled
    process = subprocess.Popen(env.command("--auto-promote", "--step-duration", "3s", "--ready-timeout", "3s"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_event(env, "weight", 25)
        env.cluster.stuck.add("auth-canary")  # from now on, no change of the canary Deployment completes
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 1, out + err
    assert "stage 50 %: the canary was not ready at 2 replicas (auth-canary did not become ready" in out
    assert "the weight stayed at 25 % and never moved to 50 %" in out
    weights = [w.weight for w in recording.seen if w.weight is not None]
    assert weights == [25, 0], weights  # never 50: no traffic half-moved to a canary half-scaled
    # rollback: the weight to 0 first, then the canary to 0
    zero = next(i for i, w in enumerate(recording.seen) if w.weight == 0)
    gone = [i for i, w in enumerate(recording.seen) if w.canary_replicas == 0]
    assert gone and min(gone) > zero
    assert env.record()["status"] == "rolled-back" and env.weights() == (100, 0)


def test_an_operators_rollback_while_the_canary_scales_wins(scaled: tuple[Env, Recording]) -> None:
    env, recording = scaled
    process = subprocess.Popen(env.command("--auto-promote", "--step-duration", "3s", "--ready-timeout", "60s",
                                           "--poll-interval", "1s"), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_event(env, "weight", 25)
        env.cluster.stuck.add("auth-canary")  # the runner waits for the canary's 2 replicas at stage 50
        waiting = threading.Event()
        while not any(w.canary_replicas == 2 for w in recording.seen):
            waiting.wait(0.1)
        undo = env.run("--rollback")
        assert undo.returncode == 0, undo.stdout + undo.stderr
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 4, out + err  # it read the record while it waited, and stopped
    assert "rolled back by runner" in out
    assert [w.weight for w in recording.seen if w.weight is not None] == [25, 0]
    assert env.record()["status"] == "rolled-back" and env.deployment("auth-canary").spec.replicas == 0


def test_a_dry_run_with_scaling_says_each_size_and_writes_nothing(scaled: tuple[Env, Recording]) -> None:
    env, recording = scaled
    done = env.run("--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
    assert recording == [], recording.seen
    for stage, replicas in ((5, 1), (25, 1), (50, 2), (100, 3)):
        assert f"would scale the canary to {replicas} replicas (stable {STABLE}) and wait" in done.stdout, stage
