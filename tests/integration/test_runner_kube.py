"""canary-checks run against a Kubernetes API (kmock's emulator, tests/cluster.py) with the official client, and a
Prometheus stand-in answering as the canary behaves. Run as a user runs it: the command, in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from canary_checks.kube import STATE_ANNOTATION, api_client
from canary_checks.traffic import kube_router
from tests.cluster import Cluster, running_cluster
from tests.conftest import PromStub, healthy, write_config

REPO = Path(__file__).parents[2]
RESOURCES = (
    "networking.istio.io/v1/virtualservices",
    "networking.istio.io/v1/destinationrules",
    "v1/pods",
    "v1/events",
)
NEW = "ghcr.io/orion/auth:2.0.0"


@dataclass
class Env:
    cluster: Cluster
    api: client.ApiClient
    config: Path
    reports: Path
    prom: PromStub

    def run(self, *args: str, image: str = NEW) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args, image=image), cwd=REPO, capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)  # fmt: skip

    def command(self, *args: str, image: str = NEW) -> list[str]:
        return [sys.executable, "-m", "canary_checks", "--canary-config", str(self.config), "run", "auth", image,
                "--mesh", "istio", "--step-duration", "1s", "--poll-interval", "1s", "--reports", str(self.reports),
                *args]  # fmt: skip

    def deployment(self, name: str) -> Any:
        return client.AppsV1Api(self.api).read_namespaced_deployment(name, "orion")

    def weights(self) -> tuple[int, int]:
        router = kube_router("istio", self.api, "orion", "auth")
        slots = router.slots(router.read())
        return slots.stable_weight, slots.canary_weight

    def record(self) -> dict[str, Any]:
        return json.loads(self.deployment("auth-canary").metadata.annotations[STATE_ANNOTATION])

    def events(self) -> list[dict[str, Any]]:
        (run,) = self.reports.iterdir()
        return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def add_canary_pod(api: client.ApiClient) -> None:
    """The canary's one pod, running NEW and ready (the kube_* gates read it)."""
    labels = {"app": "auth", "version": "canary"}
    pod = {"metadata": {"name": "auth-canary-7c9d-bbbbb", "namespace": "orion", "labels": labels},
           "spec": {"containers": [{"name": "app", "image": NEW}]},
           "status": {"conditions": [{"type": "Ready", "status": "True"}],
                      "containerStatuses": [{"name": "app", "ready": True, "restartCount": 0, "image": NEW,
                                             "imageID": "", "state": {"running": {}}}]}}  # fmt: skip
    client.CoreV1Api(api).create_namespaced_pod("orion", pod)


@pytest.fixture
def env(prom: PromStub, tmp_path: Path) -> Iterator[Env]:
    healthy(prom)
    with running_cluster(*RESOURCES) as (cluster, url):
        api = api_client(url)
        objects = yaml.safe_load_all((REPO / "manifests" / "auth" / "base.yaml").read_text())
        for obj in objects:
            if obj["kind"] == "Deployment":
                client.AppsV1Api(api).create_namespaced_deployment("orion", obj)
        for obj in yaml.safe_load_all((REPO / "manifests" / "auth" / "istio.yaml").read_text()):
            plural = obj["kind"].lower() + "s"
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "networking.istio.io", "v1", "orion", plural, obj
            )
        add_canary_pod(api)
        config = write_config(
            tmp_path / "canary.yaml",
            service="auth",
            namespace="orion",
            window="30s",
            prometheus={"url": prom.url},
            kubernetes={"api_url": url},
        )
        yield Env(cluster, api, config, tmp_path / "reports", prom)


def test_a_healthy_canary_goes_through_every_stage_and_is_promoted(env: Env) -> None:
    done = env.run("--auto-promote")
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in (5, 25, 50, 100):
        assert f"stage {stage} %: every gate passed" in done.stdout
    assert env.deployment("auth-stable").spec.template.spec.containers[0].image == NEW
    assert env.deployment("auth-canary").spec.replicas == 0
    assert env.weights() == (100, 0)
    assert env.record()["status"] == "promoted"
    names = [e["event"] for e in env.events()]
    assert names.count("stage passed") == 4 and names[-1] == "promoted"
    assert len(list(env.reports.glob("*/stage-*.xml"))) == 4


def test_a_stage_that_fails_rolls_back_weight_first(env: Env) -> None:
    def errors_from_25() -> float:
        return 100 if env.weights()[1] >= 25 else 0  # the canary fails once it gets a real share

    env.prom.answer(r'"auth-canary", response_code=~"5..', errors_from_25)
    done = env.run("--auto-promote")
    assert done.returncode == 1
    assert "error_rate" in done.stdout and "rolled back" in done.stdout
    assert env.weights() == (100, 0)
    assert env.deployment("auth-canary").spec.replicas == 0
    assert env.deployment("auth-stable").spec.template.spec.containers[0].image != NEW
    record = env.record()
    assert record["status"] == "rolled-back" and record["steps"][record["step_index"]] == 25
    rolled = [e for e in env.events() if e["event"] == "rolled back"]
    assert rolled and rolled[0]["rollback_seconds"] < 5


def test_a_canary_worse_than_stable_but_under_the_threshold_is_rolled_back_by_the_comparison(env: Env) -> None:
    env.prom.answer(r'"auth-canary", response_code=~"5..', 30)  # 3 %: under the 5 % error_rate threshold
    env.prom.answer(r'"auth-stable", response_code=~"5..', 3)  # 0.1 %
    # a few polls: the comparison's evidence grows an interval a poll (a burst of one interval is not a regression)
    done = env.run("--auto-promote", "--step-duration", "20s", "--max-extension", "30s")
    assert done.returncode == 1, done.stdout + done.stderr
    rolled = next(e for e in env.events() if e["event"] == "rolled back")
    assert "compare_errors" in rolled["why"] and "error_rate (" not in rolled["why"]
    assert env.weights() == (100, 0)
    run_dir = next(env.reports.iterdir())
    evidence = json.loads((run_dir / "evidence.json").read_text())  # the rollout's own evidence
    assert evidence["tests"]["errors"]["canary"][1] >= 30


def test_a_routing_resource_owned_by_flagger_is_refused(env: Env) -> None:
    owner = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "name": "auth", "uid": "1"}
    client.CustomObjectsApi(env.api).patch_namespaced_custom_object(
        "networking.istio.io", "v1", "orion", "virtualservices", "auth", {"metadata": {"ownerReferences": [owner]}}
    )
    writes = len(env.cluster.writes)
    done = env.run()
    assert done.returncode == 1
    assert "managed by Flagger (Canary auth): two controllers would fight over the weights" in done.stderr
    assert len(env.cluster.writes) == writes


def test_a_destination_rule_without_the_subsets_is_refused(env: Env) -> None:
    client.CustomObjectsApi(env.api).patch_namespaced_custom_object(
        "networking.istio.io", "v1", "orion", "destinationrules", "auth", {"spec": {"subsets": [{"name": "v1"}]}}
    )
    done = env.run()
    assert done.returncode == 1
    assert "DestinationRule auth has no subset canary, stable" in done.stderr


def test_dry_run_writes_nothing(env: Env) -> None:
    writes = len(env.cluster.writes)
    done = env.run("--dry-run")
    assert done.returncode == 0, done.stderr
    assert len(env.cluster.writes) == writes, env.cluster.writes[writes:]
    for line in ("would set the canary's image to", "would set the canary weight to 25 %", "would promote"):
        assert line in done.stdout
    assert env.weights() == (95, 5)


def test_api_conflicts_and_errors_during_the_rollout_are_retried(env: Env) -> None:
    env.cluster.interfere.add("auth")
    env.cluster.fail_next.extend([503])
    done = env.run("--auto-promote")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "attempt 1/4 failed (503 server error)" in done.stderr
    assert "attempt 1/4 failed (409 Conflict)" in done.stderr


def wait_for_event(env: Env, event: str, stage: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = any(env.reports.glob("*/events.jsonl"))  # the run's directory comes first, its first event after
        if ready and any(e["event"] == event and e.get("stage") == stage for e in env.events()):
            return
        time.sleep(0.1)
    raise AssertionError(f"no {event} event for stage {stage}")


@pytest.mark.long  # half a minute or more: workers start it early
def test_a_runner_killed_mid_stage_is_resumed_without_skipping_gates(env: Env) -> None:
    # a lease long enough for the refused runs below to start (a Python process each) before it runs out; stage 25
    # lasts long enough to be killed in (stage 5 as long: a step duration is every stage's)
    process = subprocess.Popen(env.command("--auto-promote", "--step-duration", "10s", "--lease-ttl", "10s"),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_event(env, "weight", 25)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    record = env.record()
    assert record["status"] == "progressing" and record["steps"][record["step_index"]] == 25
    assert env.weights() == (75, 25)

    # while its lease holds, nobody else drives the rollout: not another image, not the same one
    other = env.run(image="ghcr.io/orion/auth:3.0.0")
    assert other.returncode == 1 and f"the rollout of {NEW}" in other.stderr
    assert "is being run by runner" in other.stderr
    assert "--rollback" in other.stderr and "once its lease expires (10 s after" in other.stderr
    assert env.weights() == (75, 25)

    time.sleep(max(0.0, record["lease"]["renewed"] + 10 - time.time()) + 0.5)  # the dead runner's lease runs out
    resumed = env.run("--auto-promote")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run" in resumed.stdout and "at stage 25 %" in resumed.stdout
    events = env.events()
    after = events[[e["event"] for e in events].index("resumed") :]
    assert "taken over" in [e["event"] for e in events]
    assert [e["stage"] for e in after if e["event"] == "gates"] == [25, 50, 100], "stage 25's gates ran again"
    assert env.record()["status"] == "promoted"


def test_a_rollback_by_an_operator_mid_stage_stops_the_live_runner(env: Env) -> None:
    process = subprocess.Popen(env.command("--auto-promote", "--step-duration", "20s"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_event(env, "weight", 5)
    undo = env.run("--rollback")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert env.weights() == (100, 0)
    stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 4, stdout  # it noticed, and stopped by itself
    assert "rolled back by runner" in stdout and "changes nothing more" in stdout
    assert env.weights() == (100, 0) and env.record()["status"] == "rolled-back"
    assert env.deployment("auth-stable").spec.template.spec.containers[0].image != NEW, "never promoted"


def test_the_watchdog_rolls_back_a_killed_runner_within_its_lease(env: Env) -> None:
    process = subprocess.Popen(env.command("--step-duration", "30s", "--lease-ttl", "3s"), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_event(env, "weight", 5)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)
    killed = time.time()
    watch = subprocess.Popen([sys.executable, "-m", "canary_checks", "--canary-config", str(env.config), "watch",
                              "--interval", "1s", "--reports", str(env.reports)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while env.weights() != (100, 0):
            assert time.monotonic() < deadline, "the watchdog did not roll back"
            time.sleep(0.2)
        took = time.time() - killed
    finally:
        watch.terminate()  # it stops at once, even mid-rollback
        try:
            out, err = watch.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            watch.kill()
            raise
    assert took < 3 + 1 + 3, took  # the lease's TTL, one look, and the time to act
    record = env.record()
    assert record["status"] == "rolled-back"
    rolled = next(d for d in reversed(record["decisions"]) if d["event"] == "rolled back")
    assert "watchdog: the runner went silent" in rolled["why"], rolled
    assert env.deployment("auth-canary").spec.replicas == 0
    assert "rolling back run" in out, out + err


def test_sigterm_stops_at_a_safe_point_and_rollback_undoes(env: Env) -> None:
    process = subprocess.Popen(env.command("--step-duration", "30s"), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_event(env, "weight", 5)
    process.send_signal(signal.SIGTERM)
    stdout, _ = process.communicate(timeout=20)
    assert process.returncode == 130
    assert "stopped by SIGTERM at stage 5 %" in stdout
    assert sum(env.weights()) == 100 and env.record()["status"] == "progressing"
    undo = env.run("--rollback")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert env.weights() == (100, 0) and env.record()["status"] == "rolled-back"


def test_a_rollout_stopped_while_the_canary_rolls_out_deploys_again_on_resume(env: Env) -> None:
    env.cluster.stuck.add("auth-canary")
    stuck = env.run("--auto-promote", "--ready-timeout", "2s")
    assert stuck.returncode == 1
    assert "auth-canary did not become ready" in stuck.stderr and "kubectl -n orion describe" in stuck.stderr
    assert env.record()["status"] == "deploying"
    assert env.weights() == (95, 5), "no traffic moved for a canary that never became ready"
    env.cluster.stuck.clear()
    resumed = env.run("--auto-promote")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert env.record()["status"] == "promoted"


def test_two_runs_started_together_drive_one_rollout(env: Env) -> None:
    processes = [subprocess.Popen(env.command("--auto-promote"), cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300) for p in processes]
    codes = sorted(p.returncode for p in processes)
    assert codes == [0, 1], outputs
    refusal = next(err for p, (_, err) in zip(processes, outputs, strict=True) if p.returncode == 1)
    assert "is being run by runner" in refusal or "at the same moment" in refusal, refusal
    names = [d["event"] for d in env.record()["decisions"]]
    assert names.count("promoted") == 1 and names.count("deploying") == 1


def test_prometheus_gone_mid_stage_never_promotes(env: Env) -> None:
    env.prom.down = lambda: env.weights()[1] >= 25  # every query fails once the canary has 25 %
    done = env.run("--auto-promote")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "missing data never promotes" in done.stdout
    # said at each poll during the step, not a silent wait; and at the end, why nothing could be evaluated
    assert f"stage 25 %: Prometheus at {env.prom.url}: kept answering with server errors" in done.stdout
    assert f"could not evaluate stage 25 %: Prometheus at {env.prom.url}" in done.stdout
    assert env.weights() == (100, 0) and env.record()["status"] == "rolled-back"
    assert env.deployment("auth-stable").spec.template.spec.containers[0].image != NEW


def test_a_canary_failing_while_it_waits_for_a_release_window_is_rolled_back_at_once(env: Env) -> None:
    process = subprocess.Popen(env.command("--step-duration", "30s"), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_event(env, "weight", 5)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=20)
    # from now on the windows are closed (a blackout from today); the canary starts failing once the runner waits
    today = datetime.now(UTC).date()
    config = yaml.safe_load(env.config.read_text())
    config["rollout"] = {"release_windows": {"blackout": [f"{today}..{today + timedelta(days=1)}"]}}
    env.config.write_text(yaml.safe_dump(config))

    def errors_once_waiting() -> float:
        return 100 if any(e["event"] == "outside window" for e in env.events()) else 0

    env.prom.answer(r'"auth-canary", response_code=~"5..', errors_once_waiting)
    done = env.run("--auto-promote")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stage 5 %: every gate passed" in done.stdout
    assert "stage 5 %: raising the weight to 25 % is outside the release windows" in done.stdout
    assert "waiting, polling the critical gates" in done.stdout
    assert "rolling back: critical gates failed during stage 5 %: error_rate" in done.stdout
    assert env.weights() == (100, 0) and env.deployment("auth-canary").spec.replicas == 0
    assert env.record()["status"] == "rolled-back"
    weights = [e["weight"] for e in env.events() if e["event"] == "weight"]
    assert max(weights) == 5 and weights[-1] == 0, f"never moved forward: {weights}"
