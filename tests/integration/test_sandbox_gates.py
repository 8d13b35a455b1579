"""The gate suite against the live sandbox: real Prometheus, real HAProxy, real traffic from Locust.

Tests run in file order and share one sandbox; each sets the state it needs and lets a full window pass."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_checks.prometheus import MetricsSource
from canary_checks.sandbox import LOCUSTFILE, SHAPES
from canary_checks.sandbox.tour import SCENARIOS
from canary_checks.suite import packaged
from tests.conftest import Receiver, write_config
from tests.integration.conftest import ALL_GATES, COMPARISONS, OWN_STATE, REPO, WINDOW, Live


def locust_failures(live: Live) -> tuple[int, int]:
    """Requests and failures Locust has counted so far (its CSV stats, aggregated row)."""
    with open(Path(live.box.state_dir) / "locust_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return int(row["Request Count"]), int(row["Failure Count"])


def test_the_sandbox_evaluates_the_clusters_recording_rules(live: Live) -> None:
    source = MetricsSource(live.config)
    query = 'canary:request_rate:5m{namespace="orion", service="auth"}'
    deadline = time.monotonic() + 10  # the sandbox evaluates the rules as often as it scrapes
    while not (samples := source.query(query)) and time.monotonic() < deadline:
        time.sleep(1)
    assert samples and samples[0].value > 0
    (percentage,) = source.query('canary:traffic_percentage:5m{namespace="orion", service="auth"}')
    assert 0 < percentage.value < 100


def test_linkerd_metrics_give_the_same_verdicts(live: Live) -> None:
    run, gates = live.gates(25, "--mesh", "linkerd", looks=4)  # a comparison may hold for evidence, as in a rollout
    assert run.passed, run.output
    assert set(gates) == ALL_GATES | COMPARISONS
    assert "response_total{" in gates["error_rate"].queries[0]
    assert 'direction="inbound"' in gates["error_rate"].queries[0]


@OWN_STATE  # Locust's own counts, no window
def test_weight_changes_lose_no_request(live: Live) -> None:
    before_requests, before_failures = locust_failures(live)
    for weight in (5, 50, 0, 100, 25, 75, 25):
        assert live.set_weight(weight) == weight
        time.sleep(0.5)
    time.sleep(3)  # Locust writes its CSV every couple of seconds
    after_requests, after_failures = locust_failures(live)
    assert after_requests > before_requests + 500
    assert after_failures == before_failures


@OWN_STATE  # requests of its own, no window
def test_header_route_always_reaches_the_canary(live: Live) -> None:
    live.set_weight(0)
    try:
        served = set()
        for _ in range(20):
            request = urllib.request.Request(live.box.service_url + "/api/items/1", headers={"x-canary": "true"})
            with urllib.request.urlopen(request, timeout=5) as response:
                served.add(response.headers["x-served-by"])
        assert len(served) == 1 and next(iter(served)).startswith("auth-canary-")
    finally:
        live.set_weight(25)


@OWN_STATE  # its fault and its window
def test_the_sandbox_replayed_from_an_export_gives_the_live_verdict(live: Live, tmp_path: Path) -> None:
    live.set_faults("canary", SCENARIOS[0].faults)
    live.settle()
    _, gates = live.gates(25)
    assert gates["error_rate"].verdict == "fail"
    cli = [sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "replay"]
    export = tmp_path / "incident.json"
    exported = subprocess.run([*cli, "export", "--start", "now-40s", "--step", "1s", str(export)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    assert "istio_requests_total" in export.read_text() and "kube_pod_status_ready" in export.read_text()
    replayed = subprocess.run([*cli, "run", str(export), "--every", "10s"],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)  # fmt: skip
    assert replayed.returncode == 1, replayed.stdout + replayed.stderr
    assert "error_rate (canary error rate" in replayed.stdout
    assert "would have rolled back" in replayed.stdout


def alert_names(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["labels"]["alertname"] for a in alerts}


def wait_for(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(2)


@pytest.mark.long  # half a minute or more: workers start it early
def test_a_faulty_canary_fires_its_alerts_through_alertmanager_and_they_resolve_after_rollback(live: Live) -> None:
    live.set_weight(25)
    live.set_faults("canary", SCENARIOS[0].faults)
    try:
        wait_for("CanaryHighErrorRate firing", lambda: "CanaryHighErrorRate" in alert_names(live.box.alerts()), 120)
        status = subprocess.run(
            [sys.executable, "-m", "canary_checks", "--canary-config", str(live.config_path), "sandbox", "status"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert "CanaryHighErrorRate (critical)" in status.stdout, status.stdout

        def delivered(state: str) -> bool:  # Alertmanager sends a group once its group_wait has passed
            received = [a for n in live.box.received_alerts() for a in n["alerts"]]
            return any(a["labels"]["alertname"] == "CanaryHighErrorRate" and a["status"] == state for a in received)

        wait_for("the receiver told of the firing alert", lambda: delivered("firing"), 30)
        live.set_weight(0)  # the rollback: the canary gets no more traffic
        wait_for("CanaryHighErrorRate resolved", lambda: "CanaryHighErrorRate" not in alert_names(live.box.alerts()),
                 180)  # fmt: skip
        wait_for("the receiver told of the resolution", lambda: delivered("resolved"), 30)
    finally:
        live.set_faults("canary", {})
        live.set_weight(25)


def test_every_dashboard_panel_shows_data_from_the_sandbox(live: Live) -> None:
    from canary_checks.manifests import dashboard_panels

    live.set_weight(25)
    source = MetricsSource(live.config)
    queries = [
        (panel["title"], target["expr"].replace("$namespace", "orion").replace("$service", "auth"))
        for panel in dashboard_panels()
        for target in panel["targets"]
    ]
    deadline = time.monotonic() + 90  # the rules look back 30 s in the sandbox: the canary may just have got traffic
    while (empty := [(t, q) for t, q in queries if not source.query(q)]) and time.monotonic() < deadline:
        time.sleep(3)
    assert empty == [], "panels without data"


@OWN_STATE  # its weight and its window
def test_no_traffic_to_the_canary_passes_nothing_that_needs_traffic(live: Live) -> None:
    live.set_faults("canary", {})
    live.set_weight(0)
    try:
        live.settle()
        run, gates = live.gates(25)
    finally:
        live.set_weight(25)
    assert not run.passed
    for name in (
        "error_rate",
        "success_rate",
        "latency_p95",
        "latency_p99",
        "error_rate_vs_stable",
        "latency_vs_stable",
    ):
        assert gates[name].verdict == "no data", (name, gates[name])
        assert "received no traffic" in gates[name].summary
    for name in ("error_rate", "success_rate", "latency_p99"):
        assert gates[name].outcome == "failed", name
    assert gates["traffic_received"].verdict == "fail"
    assert gates["traffic_split"].verdict == "fail"


@OWN_STATE  # an error whatever the traffic
def test_a_bad_custom_query_errors_naming_the_query(live: Live, tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "canary.yaml",
        mesh="custom",
        window=f"{WINDOW}s",
        prometheus={"url": live.box.prometheus_url},
        queries={
            "requests": 'sum(increase(istio_requests_total{destination_workload="$workload"}[$window]',
            "errors": "vector(0)",
            "successes": "vector(0)",
            "latency": "vector(0)",
        },
    )
    run, gates = live.gates(25, config_path=path)
    assert run.exit_code == 1
    assert gates["error_rate"].outcome == "error"
    assert "answered HTTP 400" in gates["error_rate"].message
    assert 'destination_workload="auth-canary"' in gates["error_rate"].message


@OWN_STATE  # an error whatever the traffic
def test_prometheus_stopped_makes_every_gate_error_naming_the_url(live: Live) -> None:
    live.box.stop_component("prometheus")
    try:
        run, gates = live.gates(25)
    finally:
        live.box.start_component("prometheus")
    assert run.exit_code == 1
    assert {r.outcome for r in gates.values()} == {"error"}
    assert all(live.box.prometheus_url in r.message for r in gates.values())
    assert "Traceback" not in run.output


def locust(live: Live, *args: str, env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Run Locust headless against the sandbox's service; its --json statistics, judged here, not its logs."""
    live.set_faults("canary", {})
    live.box.wait_ready(60)
    done = subprocess.run(
        [sys.executable, "-m", "locust", "--headless", "--host", live.box.service_url, "--json", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    stats: list[dict[str, Any]] = json.loads(done.stdout)
    return stats


@OWN_STATE  # its own Locust
def test_the_locustfile_runs_alone_with_both_user_classes(live: Live) -> None:
    stats = locust(live, "-f", str(LOCUSTFILE), "-u", "10", "-r", "10", "-t", "4s")
    by_name = {s["name"]: s for s in stats}
    assert by_name["canary /api/items/[id]"]["num_requests"] > 0  # the x-canary user
    assert by_name["/api/items/[id]"]["num_requests"] > by_name["canary /api/items/[id]"]["num_requests"]
    assert sum(s["num_failures"] for s in stats) == 0


@OWN_STATE  # its own Locust
def test_a_stage_load_shape_runs_and_ends_by_itself(live: Live) -> None:
    stats = locust(
        live,
        "-f",
        f"{LOCUSTFILE},{SHAPES}",
        env={"CANARY_STAGE": "50", "CANARY_SHAPE_SCALE": "0.02"},  # 210 s of steps in about 4 s
    )
    assert sum(s["num_requests"] for s in stats) > 50
    assert sum(s["num_failures"] for s in stats) == 0


def rollout(live: Live, reports: Path, image: str, *args: str, config: Path | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "canary_checks", "--canary-config", str(config or live.config_path), "run",
               "auth", image,
               "--router", "sandbox", "--step-duration", f"{WINDOW + 3}s", "--poll-interval", "2s",
               # a busy machine runs a suite in 10-15 s and Locust falls behind: room for the looks a 5 % stage's
               # comparison needs before it is undecided (a quiet machine decides within 30 s)
               "--max-extension", "180s", "--reports", str(reports), *args]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def canary_requests_served(live: Live) -> float:
    """The canary pod's own count of requests it answered (its istio_requests_total, read from the pod)."""
    url = f"http://127.0.0.1:{live.config.sandbox.canary_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("istio_requests_total{"))


def notified(live: Live, tmp_path: Path, receiver: Receiver) -> Path:
    """The live config plus a JSON webhook to ``receiver`` for every decision."""
    config = yaml.safe_load(live.config_path.read_text())
    config["notifications"] = {"targets": [{"kind": "webhook", "url_env": "CANARY_TEST_HOOK"}], "timeout": "1s"}
    path = tmp_path / "notified.yaml"
    path.write_text(yaml.safe_dump(config))
    os.environ["CANARY_TEST_HOOK"] = receiver.url
    return path


@pytest.mark.long  # half a minute or more: workers start it early
def test_the_runner_promotes_a_healthy_canary_in_the_sandbox(live: Live, tmp_path: Path, receiver: Receiver) -> None:
    process = rollout(live, tmp_path, "demo:v3", "--auto-promote", "--smoke-suite", str(packaged("smoke")),
                      config=notified(live, tmp_path, receiver))  # fmt: skip
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stdout + stderr
    assert "smoke: all 4 checks passed against the canary" in stdout
    for stage in (5, 25, 50, 100):
        assert f"stage {stage} %: every gate passed" in stdout
    assert "promoted demo:v3" in stdout
    assert live.box.router.get_weight() == 0
    # one notification per decision, in order
    decisions = [(body["event"], body["stage"]) for _, body in receiver.received if body["event"] != "held"]
    assert decisions == [("deployed", 5), ("stage passed", 5), ("stage passed", 25), ("stage passed", 50),
                         ("stage passed", 100), ("promoted", 100)]  # fmt: skip
    (summary,) = tmp_path.glob("*/summary.json")
    report = json.loads(summary.read_text())
    assert report["decision"]["outcome"] == "promoted" and report["image"] == "demo:v3"
    # each stage once, its last run passed (a stage may hold for evidence and run again: "stage 5 %, attempt 2")
    runs = report["suite_runs"]
    stages = [r["name"].split(", attempt")[0] for r in runs]
    assert list(dict.fromkeys(stages)) == ["smoke-canary", "stage 5 %", "stage 25 %", "stage 50 %", "stage 100 %"]
    last = [r for r, stage, then in zip(runs, stages, [*stages[1:], None], strict=True) if then != stage]
    assert len(last) == 5 and all(r["passed"] for r in last)


def test_the_runner_rolls_back_a_canary_failing_at_25_and_it_gets_no_more_requests(
    live: Live, tmp_path: Path, receiver: Receiver
) -> None:
    live.set_weight(0)
    receiver.delay = 3.0  # a receiver slower than the notification timeout: the rollback must not wait for it
    process = rollout(live, tmp_path, "demo:v4", "--auto-promote", config=notified(live, tmp_path, receiver))
    # the 5 % stage may hold for evidence (up to --max-extension) on a busy machine before it moves on
    deadline = time.monotonic() + 300
    while not ((logs := list(tmp_path.glob("*/events.jsonl"))) and '"weight": 25' in logs[0].read_text()):
        assert process.poll() is None, f"the runner stopped before stage 25 %: {process.communicate()}"
        assert time.monotonic() < deadline, "the runner did not reach stage 25 % within 300 s"
        time.sleep(0.2)
    live.set_faults("canary", SCENARIOS[0].faults)
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        live.set_faults("canary", {})
    assert process.returncode == 1, stdout + stderr
    # 20 % errors: the error-rate gate or the error comparison, whichever poll sees it first
    caught_by = {"error_rate", "compare_errors"}
    assert "rolling back: critical gates failed during stage 25 %" in stdout
    assert any(f"{gate} (" in stdout for gate in caught_by)
    assert "[family-wise" in stdout or "error_rate (" in stdout, "bracketed text is printed, not taken for markup"
    assert live.box.router.get_weight() == 0
    (log,) = tmp_path.glob("*/events.jsonl")
    rolled = [json.loads(line) for line in log.read_text().splitlines() if '"rolled back"' in line]
    assert rolled and rolled[0]["rollback_seconds"] < 1
    assert {g["gate"] for g in rolled[0]["failing_gates"]} & caught_by
    # every notification timed out against the slow receiver: recorded, and the rollback was not delayed
    failed = [json.loads(line) for line in log.read_text().splitlines() if '"notification failed"' in line]
    assert failed and all("timed out" in f["error"] for f in failed)
    assert receiver.url not in log.read_text() + stdout + stderr  # the URL is a secret
    # the rollout's report: the decision and why, each stage's gates, the series over the run
    summary = json.loads((log.parent / "summary.json").read_text())
    assert summary["decision"]["outcome"] == "rolled back" and "stage 25 %" in summary["decision"]["why"]
    assert [r["stage"] for r in summary["suite_runs"]][:1] == [5] and summary["series"]["recorded"]
    assert [e["weight"] for e in summary["timeline"] if e["event"] == "weight"][-1] == 0
    series = json.loads((log.parent / "series.json").read_text())["series"]
    # the fault as Prometheus saw it: caught within seconds, before a whole window of it, so above stable's, not 20 %
    assert max(v for _, v in series["error_rate"]["canary"]) > max(v for _, v in series["error_rate"]["stable"])
    assert f"report:{log.parent / 'report.html'}" in "".join(stdout.split())  # the console wraps long lines
    time.sleep(1)  # requests already inside the canary finish
    before = canary_requests_served(live)
    time.sleep(3)
    assert canary_requests_served(live) == before, "a request reached the canary after the rollback"


def test_the_runner_rolls_back_before_any_traffic_when_smoke_fails(live: Live, tmp_path: Path) -> None:
    live.set_weight(0)
    live.set_faults("canary", {"errors": 100})
    try:
        process = rollout(live, tmp_path, "demo:v5", "--auto-promote", "--smoke-suite", str(packaged("smoke")))
        stdout, stderr = process.communicate(timeout=300)
    finally:
        live.set_faults("canary", {})
    assert process.returncode == 1, stdout + stderr
    said = " ".join(stdout.split())  # the console wraps long lines
    assert "smoke checks failed before any traffic moved: test_reachable (status 500" in said
    (log,) = tmp_path.glob("*/events.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["weight"] for e in events if e["event"] == "weight"] == [0], "no weight but the rollback's 0"
    summary = json.loads((log.parent / "summary.json").read_text())
    assert summary["decision"]["outcome"] == "rolled back"
    assert [r["name"] for r in summary["suite_runs"]] == ["smoke-canary"]
