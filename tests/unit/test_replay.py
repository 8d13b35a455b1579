"""Offline replay through a real Prometheus loaded by promtool: a recorded bad release is caught, a good one is not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.gates import GateResult
from canary_checks.prometheus import escape_label, pod_regex
from canary_checks.replay import export, exported_series
from canary_checks.replay import replay as run_replay
from tests.conftest import PromStub, canary_checks, canary_checks_here, write_config

REPO = Path(__file__).parents[2]
T0 = 1_790_000_000  # 2026-09-21 14:13:20 UTC
SAMPLES = 121  # ten minutes, every 5 s
BASE = {"reporter": "destination", "destination_workload_namespace": "orion"}
BUCKETS = (("10", 0.3), ("50", 0.8), ("100", 0.95), ("250", 0.99), ("500", 1.0), ("+Inf", 1.0))


def counter(labels: dict[str, str], per_step: float, *, from_second: int = 0) -> dict[str, Any]:
    values, total = [], 0.0
    for i in range(SAMPLES):
        if 5 * i >= from_second:
            total += per_step
        values.append([T0 + 5 * i, str(total)])
    return {"metric": labels, "values": values}


def release(path: Path, *, canary_errors_from: int | None) -> Path:
    """A recorded release: 50 canary and 950 stable requests every 5 s; the canary answers 10 of its 50 with 500
    from ``canary_errors_from`` seconds on (None: never)."""
    series = []
    for side, n in (("canary", 50), ("stable", 950)):
        workload = {**BASE, "destination_workload": f"auth-{side}"}
        series.append(counter({"__name__": "istio_requests_total", **workload, "response_code": "200"}, n))
        for le, share in BUCKETS:
            name = "istio_request_duration_milliseconds_bucket"
            series.append(counter({"__name__": name, **workload, "le": le}, n * share))
    if canary_errors_from is not None:
        labels = {"__name__": "istio_requests_total", **BASE, "destination_workload": "auth-canary"}
        series.append(counter({**labels, "response_code": "500"}, 10, from_second=canary_errors_from))
    path.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}))
    return path


def replay(tmp_path: Path, *args: str, process: bool = False, **settings: Any) -> subprocess.CompletedProcess[str]:
    """``canary-checks replay run``: in this process, or (``process``) as a user's own process runs it."""
    config = write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s", **settings)
    command = canary_checks if process else canary_checks_here
    return command("--canary-config", str(config), "replay", "run", *args, cwd=tmp_path)


def test_a_recorded_incident_would_have_been_rolled_back_minutes_in(tmp_path: Path) -> None:
    export = release(tmp_path / "incident.json", canary_errors_from=300)
    done = replay(tmp_path, str(export), "--every", "30s", process=True)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    first_fail = next(i for i, line in enumerate(lines) if " FAIL " in line)
    # before the errors start nothing fails; the statistical comparison catches them first
    assert all(" FAIL " not in line for line in lines[:first_fail])
    assert lines[first_fail].startswith("14:18:20") and "compare_errors" in lines[first_fail]
    assert any("error_rate (canary error rate 16.67 % > 5 %" in line for line in lines)
    assert "would have rolled back 4.5 min into the replay: compare_errors" in done.stdout


def test_a_recorded_good_release_would_not_have_been_rolled_back(tmp_path: Path) -> None:
    export = release(tmp_path / "good.json", canary_errors_from=None)
    done = replay(tmp_path, str(export), "--every", "1m")
    assert done.returncode == 0, done.stdout + done.stderr
    assert " FAIL " not in done.stdout
    assert "no gate failed over 10 evaluations" in done.stdout
    # series the recording lacks (pod readiness here) hold, they never pass
    assert "hold pods_ready" in done.stdout


def test_a_replay_needs_none_of_the_live_prometheus_credentials_or_proxy(tmp_path: Path) -> None:
    export = release(tmp_path / "good.json", canary_errors_from=None)
    live = {"url": "https://mimir.example/prometheus", "proxy_url": "http://127.0.0.1:9",
            "basic_auth": {"username": "team-a", "password_env": "UNSET_IN_A_REPLAY"},
            "headers": {"X-Scope-OrgID": "team-a"}}  # fmt: skip
    done = replay(tmp_path, str(export), "--every", "5m", prometheus=live)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no gate failed" in done.stdout


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON"),
        ('{"status": "success", "data": {"resultType": "vector", "result": []}}', "is not a query_range answer"),
        ('{"status": "success", "data": {"resultType": "matrix", "result": []}}', "holds no series"),
        ('{"data": {"resultType": "matrix", "result": [1]}}',
         "series 1 of 1 is not an object with a 'metric' object of labels"),
        ('{"data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1]]}]}}',
         "series 1 of 1 has a sample that is not a [time, value] pair of numbers: [1]"),
        ('{"data": {"resultType": "matrix", "result": [{"metric": {}, "values": [["t", "1"]]}]}}',
         'has a sample that is not a [time, value] pair of numbers: ["t", "1"]'),
        ('{"data": {"resultType": "matrix", "result": [{"metric": {}, "values": [[1, "1"]]}, {"values": [[1, "x"]]}]}}',
         'series 2 of 2 has a sample that is not a [time, value] pair of numbers: [1, "x"]'),
    ],
)  # fmt: skip
def test_a_bad_export_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.json").write_text(content)
    done = replay(tmp_path, str(tmp_path / "bad.json"))
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("error:") == 1


def test_a_range_outside_the_recording_says_what_it_spans(tmp_path: Path) -> None:
    export = release(tmp_path / "good.json", canary_errors_from=None)
    done = replay(tmp_path, str(export), "--start", "2030-01-01T00:00:00Z")
    assert done.returncode == 2
    assert "the recording spans 2026-09-21 14:13:20 UTC to 2026-09-21 14:23:20 UTC" in done.stderr


def test_an_alert_whose_samples_stopped_is_not_firing_even_within_the_lookback(tmp_path: Path) -> None:
    """A Prometheus stopped while an alert fired writes no stale marker: its last ALERTS sample answers an instant
    query for the 5-minute lookback after the restart. The alerts gate counts only the last evaluations' samples."""
    labels = {"namespace": "orion", "service": "auth", "severity": "critical", "alertstate": "firing"}
    alerts = {"CanaryHighErrorRate": 300, "CanaryPodCrashLooping": 600}  # the second's samples never stop
    series = [counter({"__name__": "canary:request_rate:5m", "namespace": "orion", "service": "auth"}, 1)]
    series += [
        {"metric": {"__name__": "ALERTS", "alertname": name, **labels},
         "values": [[T0 + 5 * i, "1"] for i in range(SAMPLES) if 5 * i <= last]}
        for name, last in alerts.items()
    ]  # fmt: skip
    export = tmp_path / "restart.json"
    export.write_text(json.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}}))
    config = load_config(write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s"))
    firing = {
        step.at - T0: result.details["firing"]
        for step in run_replay(config, export, every=60)
        if isinstance(result := step.results["firing_alerts"], GateResult)
    }
    assert firing[330] == firing[390] == ["CanaryHighErrorRate", "CanaryPodCrashLooping"]  # within 90 s of the last
    assert firing[450] == firing[570] == ["CanaryPodCrashLooping"]  # 150 and 270 s old: gone, though in the lookback


CHECKOUTS = {  # the docs' custom gate and comparison (docs/gates.md): the share of checkouts that failed
    "gates": {"checkout_failures": {
        "query": '100 * (sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods", outcome="failed"}'
                 '[$window])) or vector(0)) / sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods"}'
                 "[$window]))",
        "fails": "above", "threshold": 2, "unit": "%"}},
    "statistics": {"checkouts": {
        "numerator": 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods", outcome="failed"}[$window]))',
        "denominator": 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods"}[$window]))'}},
}  # fmt: skip


def test_custom_gates_and_comparisons_are_exported_and_replayed(tmp_path: Path) -> None:
    """A team's own metric: the export asks for the series their PromQL selects, for the canary's pods and stable's
    (the comparison reads both), and the replay judges them as the live suite does."""
    config = load_config(write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s",
                                      **CHECKOUTS))  # fmt: skip
    selectors = exported_series(config)
    for side in ("canary", "stable"):
        pods = escape_label(pod_regex(f"auth-{side}"))
        assert f'checkouts_total{{namespace="orion",pod=~"{pods}",outcome="failed"}}' in selectors
        assert f'checkouts_total{{namespace="orion",pod=~"{pods}"}}' in selectors
    assert 'istio_requests_total{destination_workload_namespace="orion"}' in selectors  # the built-ins' as before

    export = release(tmp_path / "checkouts.json", canary_errors_from=None)
    answer = json.loads(export.read_text())
    for side, pod in (("canary", "auth-canary-5d8f7c9b4-x2k9p"), ("stable", "auth-stable-7c6d5b4a3-q8w7e")):
        labels = {"__name__": "checkouts_total", "namespace": "orion", "pod": pod}
        answer["data"]["result"].append(counter({**labels, "outcome": "ok"}, 20 if side == "canary" else 200))
        if side == "canary":  # from minute 5 the canary fails 5 checkouts in 25, stable none
            answer["data"]["result"].append(counter({**labels, "outcome": "failed"}, 5, from_second=300))
    export.write_text(json.dumps(answer))
    done = replay(tmp_path, str(export), "--every", "30s", **CHECKOUTS)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    first_fail = next(i for i, line in enumerate(lines) if " FAIL " in line)
    assert all(" FAIL " not in line for line in lines[:first_fail])
    assert "checkout_failures" in lines[first_fail] or "compare_checkouts" in lines[first_fail], lines[first_fail]
    assert lines[first_fail] >= "14:18:20", lines[first_fail]  # not before the failures started
    assert any("checkout_failures (canary" in line and "20 % > 2 %" in line for line in lines), done.stdout


def test_a_gate_the_recordings_prometheus_cannot_evaluate_leaves_the_replay_without_an_answer(tmp_path: Path) -> None:
    """A custom gate whose query Prometheus refuses holds at every step, saying why, and the replay exits 2: it
    cannot tell whether the release would have been rolled back (missing data is never a pass)."""
    export = release(tmp_path / "good.json", canary_errors_from=None)
    query = 'sum(rate(checkouts_total{pod=~"$pods"}[5m])'  # one parenthesis short
    broken = {"gates": {"checkout_failures": {"query": query, "fails": "above", "threshold": 2}}}
    done = replay(tmp_path, str(export), "--every", "2m", **broken)
    assert done.returncode == 2, done.stdout + done.stderr
    holds = [line for line in done.stdout.splitlines() if " hold " in line]
    assert holds and all("checkout_failures (error: " in line for line in holds), done.stdout
    assert "error: checkout_failures could not be evaluated: " in done.stderr
    assert "the replay cannot tell whether this release would have been rolled back" in done.stderr
    assert "would not have been rolled back" not in done.stdout


def test_an_export_holds_each_series_once_though_two_selectors_match_it(tmp_path: Path, prom: PromStub) -> None:
    failed = {"__name__": "checkouts_total", "namespace": "orion", "pod": "auth-canary-5d8f7c9b4-x2k9p",
              "outcome": "failed"}  # fmt: skip
    prom.answer(r"^checkouts_total\{", [(failed, 3)])  # the "failed" selector and the all-outcomes one alike
    config = load_config(write_config(tmp_path / "canary.yaml", service="auth", namespace="orion", window="30s",
                                      prometheus={"url": prom.url}, **CHECKOUTS))  # fmt: skip
    said: list[str] = []
    answer = export(config, T0, T0 + 60, 5, progress=said.append)
    assert sum(q.startswith("checkouts_total{") for q in prom.queries) == 4  # each side: failed, and all
    assert [s["metric"] for s in answer["data"]["result"]] == [failed]
    assert len(answer["data"]["result"][0]["values"]) == 13
    assert sum(line.startswith("exported 1 series of checkouts_total{") for line in said) == 4


def test_a_recording_shorter_than_a_window_says_so_not_a_range_nobody_gave(tmp_path: Path) -> None:
    short = release(tmp_path / "short.json", canary_errors_from=None)
    answer = json.loads(short.read_text())
    for series in answer["data"]["result"]:
        series["values"] = series["values"][:4]  # 15 s, against a 30 s window
    short.write_text(json.dumps(answer))
    done = replay(tmp_path, str(short))
    assert done.returncode == 2 and done.stderr.count("error:") == 1, done.stderr
    assert "EXPORT: the recording spans 2026-09-21 14:13:20 UTC to 2026-09-21 14:13:35 UTC, less than one window " \
           "(30s)" in " ".join(done.stderr.split())  # fmt: skip
    assert "--start" not in done.stderr
