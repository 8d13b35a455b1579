"""The monitor's samples against a stand-in Prometheus: what each side shows, how it is coloured, what it
recommends, the CSV it writes and what it does when Prometheus goes away."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from canary_checks.config import CanaryConfig, load_config
from canary_checks.monitor import ROWS, CsvExport, Monitor, Status, dashboard, plain_line, run
from tests.conftest import PromStub, free_port, healthy, write_config


def config_for(tmp_path: Path, url: str) -> CanaryConfig:
    return load_config(write_config(tmp_path / "canary.yaml", prometheus={"url": url, "timeout": 2}, window="30s"))


@pytest.fixture
def monitor(tmp_path: Path, prom: PromStub) -> Monitor:
    healthy(prom)
    prom.answer(r"histogram_quantile\(0.5,.*auth-canary", 9)
    prom.answer(r"histogram_quantile\(0.5,.*auth-stable", 8)
    return Monitor(config_for(tmp_path, prom.url))


def test_a_healthy_canary_is_ok_on_both_sides_and_recommends_promote(monitor: Monitor) -> None:
    snap = monitor.sample()
    canary, stable = snap.readings["canary"], snap.readings["stable"]
    assert snap.stage == 25 and snap.stage_inferred  # the configured stage nearest the 25 % split
    assert canary["error_rate_pct"].value == 0 and canary["error_rate_pct"].status == Status.OK
    assert canary["request_rate_rps"].value == pytest.approx(1000 / 30)
    assert stable["request_rate_rps"].value == pytest.approx(3000 / 30)
    assert (canary["latency_p50_ms"].value, stable["latency_p50_ms"].value) == (9, 8)
    assert canary["latency_p95_ms"].value == 120 and canary["cpu_pct_of_limit"].value == pytest.approx(20)
    assert canary["traffic_share_pct"].value == pytest.approx(25) and stable["traffic_share_pct"].value == 75
    for side in (canary, stable):
        for row in ROWS:
            if row.gate is not None:
                assert side[row.column].status == Status.OK, row
    assert snap.recommendation.action == "promote"


def test_a_failing_canary_turns_red_and_recommends_roll_back(monitor: Monitor, prom: PromStub) -> None:
    prom.answer(r'"auth-canary", response_code=~"5..', 200)
    prom.answer(r'"auth-canary", response_code!~"5..', 800)
    snap = monitor.sample()
    assert snap.readings["canary"]["error_rate_pct"].value == pytest.approx(20)
    assert snap.readings["canary"]["error_rate_pct"].status == Status.CRITICAL
    assert snap.readings["stable"]["error_rate_pct"].status == Status.OK
    assert snap.recommendation.action == "roll back"
    assert snap.recommendation.reason.startswith("error_rate: canary error rate 20 % > 5 %")


def test_stable_is_judged_by_the_same_gates(monitor: Monitor, prom: PromStub) -> None:
    prom.answer(r"histogram_quantile\(0.95.*auth-stable", 900)
    snap = monitor.sample()
    # latency_p95 is a warning gate with a 500 ms threshold: stable breaches it, the canary does not
    assert snap.readings["stable"]["latency_p95_ms"].status == Status.WARNING
    assert snap.readings["canary"]["latency_p95_ms"].status == Status.OK
    assert snap.recommendation.action == "promote"


def test_no_canary_traffic_holds(monitor: Monitor, prom: PromStub) -> None:
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"', [])
    snap = monitor.sample()
    assert snap.readings["canary"]["error_rate_pct"].status == Status.NO_DATA
    assert snap.recommendation.action == "hold"
    assert "error_rate: the canary received no traffic" in snap.recommendation.reason


def test_a_service_prometheus_has_no_requests_of_says_the_stage_is_unknown(monitor: Monitor, prom: PromStub) -> None:
    prom.answer(r"istio_requests_total", [])  # a misspelt service: no requests on either side, no split
    snap = monitor.sample()
    assert snap.stage is None and snap.recommendation.action == "hold"
    assert " stage unknown (no traffic split) (stable / canary): error rate — NO DATA / — NO DATA;" in plain_line(snap)


def test_the_sequential_comparisons_join_the_recommendation(monitor: Monitor, tmp_path: Path) -> None:
    monitor.evidence = tmp_path / "evidence.json"
    snap = monitor.sample()
    assert {"compare_errors", "compare_latency_p95", "error_rate_vs_stable"} <= set(snap.checks)
    assert "compare_cpu" not in snap.checks  # fixed-horizon: left to the suite
    assert monitor.evidence.exists()


def test_plain_lines_and_the_dashboard_show_the_same_sample(monitor: Monitor) -> None:
    snap = monitor.sample()
    line = plain_line(snap)
    assert "stage 25 (stable / canary): error rate 0.00% OK / 0.00% OK;" in line
    assert "request rate 100req/s / 33.3req/s" in line and line.endswith("PROMOTE: every critical gate passes")
    screen = Console(file=io.StringIO(), width=160, color_system="truecolor", force_terminal=True)
    screen.print(dashboard(monitor.config, snap, interval=10, next_in=4))
    text = screen.file.getvalue()  # type: ignore[attr-defined]
    assert "RECOMMENDATION:" in text and "next in 4s" in text and "≤ 5 % (critical)" in text


def test_csv_export_reads_back_with_pandas(monitor: Monitor, tmp_path: Path) -> None:
    out = Console(file=io.StringIO(), width=300)
    export = CsvExport(tmp_path / "out" / "samples.csv")
    taken = run(monitor, interval=0.2, duration=2.0, console=out, export=export, live=False)
    assert taken >= 2
    frame = pd.read_csv(export.path)
    assert len(frame) == 2 * taken and list(frame["side"][:2]) == ["stable", "canary"]
    assert {"time", "sample", "stage", "error_rate_pct", "error_rate_pct_status", "latency_p99_ms",
            "traffic_share_pct", "recommendation", "reason"} <= set(frame.columns)  # fmt: skip
    canary = frame[frame["side"] == "canary"].iloc[0]
    assert canary["latency_p99_ms"] == 400 and canary["error_rate_pct_status"] == "OK"
    assert canary["request_rate_rps"] == pytest.approx(1000 / 30) and canary["recommendation"] == "promote"
    assert pd.to_datetime(frame["time"]).is_monotonic_increasing
    assert out.file.getvalue().count("\n") == taken  # type: ignore[attr-defined]


def test_prometheus_going_away_is_shown_and_sampling_goes_on(tmp_path: Path) -> None:
    monitor = Monitor(config_for(tmp_path, f"http://127.0.0.1:{free_port()}"))
    out = Console(file=io.StringIO(), width=300)
    start = time.monotonic()
    taken = run(monitor, interval=0.3, duration=1.0, console=out, live=False)
    assert taken >= 2 and time.monotonic() - start < 10
    lines = out.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert all("Prometheus unreachable" in line for line in lines), lines
    snap = monitor.sample()
    assert snap.recommendation.action == "unknown"
    assert all(r.status == Status.ERROR for r in snap.readings["canary"].values())
    screen = Console(file=io.StringIO(), width=160)
    screen.print(dashboard(monitor.config, snap, interval=10, next_in=3))
    assert "PROMETHEUS UNREACHABLE" in screen.file.getvalue()  # type: ignore[attr-defined]


def test_a_given_stage_judges_the_split_against_it(monitor: Monitor) -> None:
    monitor.stage = 50
    snap = monitor.sample()
    assert (snap.stage, snap.stage_inferred) == (50, False)
    split = snap.readings["canary"]["traffic_share_pct"]
    assert split.value == pytest.approx(25) and split.status == Status.WARNING  # 25 % is off stage 50 by 25 points
    assert "off by 25 points" in split.detail


def test_refused_credentials_are_shown_as_such_once_not_per_cell(tmp_path: Path, prom: PromStub) -> None:
    prom.answer(".*", ("error", 401, "no org id"))
    monitor = Monitor(config_for(tmp_path, prom.url))
    snap = monitor.sample()
    assert snap.prometheus_error == f"Prometheus at {prom.url}: answered HTTP 401: no org id"
    assert snap.recommendation.action == "unknown"
    assert plain_line(snap).endswith(
        f"Prometheus refuses the queries: Prometheus at {prom.url}: answered HTTP 401: no org id"
    )
    screen = Console(file=io.StringIO(), width=200)
    screen.print(dashboard(monitor.config, snap, interval=10, next_in=3))
    assert "PROMETHEUS REFUSES THE QUERIES" in screen.file.getvalue()  # type: ignore[attr-defined]
