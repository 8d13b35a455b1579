"""The demo tour against the live sandbox (`canary-checks demo`, the README's first command), run once: every healthy
stage, then each fault in the canary. The tests read what the gates said of each from the tour's own JUnit files, so a
fault's windows of real traffic are waited for once, for the demo and for the tests of the gates it shows.

The tour's config is the live sandbox's with the error-rate threshold at 6 %: the 3 % fault must fail only the
comparison with stable, and 3 % of a window's 500 canary requests reads over 5 % one look in 180 (binomial); at 6 %
one in 6,600, and the canary is still well under the threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from canary_checks.report import GateRecord, read_junit
from canary_checks.rundir import junit_name
from canary_checks.sandbox.tour import SCENARIOS, Scenario
from tests.integration.conftest import ALL_GATES, COMPARISONS, OWN_STATE, REPO, Live

# one tour for the module, on one worker, started first (the suite's longest); it sets each state and waits for its
# windows itself
pytestmark = [pytest.mark.xdist_group("tour"), pytest.mark.longest, OWN_STATE]

THRESHOLD = 6.0
"""The tour's error-rate threshold (%), above the 3 % fault's reach."""


@dataclass(frozen=True)
class Tour:
    done: subprocess.CompletedProcess[str]
    reports: Path
    run: Path
    """The tour's run directory (``demo-*``): a JUnit file per stage attempt and per fault."""

    def stage(self, stage: int) -> dict[str, GateRecord]:
        """The gates of the stage's last look (a stage may hold for evidence and look again)."""
        return self._last(stage)

    def fault(self, scenario: Scenario) -> dict[str, GateRecord]:
        """The gates of the last look at ``scenario``'s fault (a comparison may hold for evidence, as at a stage)."""
        return self._last(f"fault-{SCENARIOS.index(scenario) + 1}")

    def _last(self, run: int | str) -> dict[str, GateRecord]:
        attempt = 1
        while (self.run / junit_name(run, attempt + 1)).exists():
            attempt += 1
        return {r.gate: r for r in read_junit(self.run / junit_name(run, attempt))}


@pytest.fixture(scope="module")
def tour(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Tour:
    live.restore()
    live.calm()  # an earlier test's fault must not fire an alert into the healthy stages
    root = tmp_path_factory.mktemp("tour")
    config = yaml.safe_load(live.config_path.read_text())
    config["gates"] = {"error_rate": {"threshold": THRESHOLD}}
    (root / "canary.yaml").write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "canary_checks", "--canary-config", str(root / "canary.yaml"), "demo",
         "--reports", str(root / "reports")],
        cwd=REPO, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    runs = list((root / "reports").glob("demo-*"))
    assert len(runs) == 1, done.stdout + done.stderr
    return Tour(done, root / "reports", runs[0])


def test_the_demo_runs_every_stage_and_catches_every_fault(live: Live, tour: Tour) -> None:
    done = tour.done
    assert done.returncode == 0, done.stdout + done.stderr
    for stage in live.config.stages:
        assert f"stage {stage} %: PASSED" in done.stdout
    assert done.stdout.count("caught by") == len(SCENARIOS)
    assert "every healthy stage passed and every fault was caught" in done.stdout
    runs = {p.stem.split("-retry")[0] for p in tour.run.glob("*.xml")}  # a stage may hold and run again
    assert len(runs) == len(live.config.stages) + len(SCENARIOS)
    summary = json.loads((tour.run / "summary.json").read_text())
    assert summary["decision"]["outcome"] == "passed" and summary["kind"] == "demo"
    assert [e["why"] for e in summary["timeline"] if e["event"] == "fault"] == [s.title for s in SCENARIOS]
    assert f"report:{tour.run / 'report.html'}" in "".join(done.stdout.split())
    assert live.box.is_up(), "the demo must leave a sandbox it did not start running"


def test_healthy_canary_passes_every_gate_and_junit_has_each_value(tour: Tour) -> None:
    gates = tour.stage(25)
    assert set(gates) == ALL_GATES | COMPARISONS
    for name in ALL_GATES:
        record = gates[name]
        assert record.outcome == "passed" and record.verdict == "pass", (name, record)
        assert record.value != "" and record.threshold != "" and record.queries, name
    # the evidence of stages 5 and 25 clears the error comparison; latency and CPU may still need more (warning)
    assert gates["compare_errors"].verdict == "pass", gates["compare_errors"]
    for name in COMPARISONS:
        assert gates[name].verdict in ("pass", "inconclusive"), gates[name]
    assert 15 <= float(gates["traffic_split"].value) <= 35


def test_errors_fail_error_rate_and_success_rate_with_the_measured_rate(tour: Tour) -> None:
    gates = tour.fault(SCENARIOS[0])  # 20 % errors
    for name in ("error_rate", "success_rate"):
        assert gates[name].outcome == "failed", gates[name]
    measured = float(gates["error_rate"].value)
    assert 12 <= measured <= 28
    assert f"canary error rate {measured:.4g} % > {THRESHOLD:g} %" in gates["error_rate"].message  # shows the rate
    assert gates["latency_p99"].outcome == "passed"


def test_added_latency_fails_p95_and_p99(tour: Tour) -> None:
    gates = tour.fault(SCENARIOS[1])  # 600 ms more
    assert gates["latency_p95"].verdict == "fail" and gates["latency_p99"].verdict == "fail"
    assert gates["latency_p99"].outcome == "failed"  # critical; p95 warns (it fails the run with --strict-gates)
    assert float(gates["latency_p95"].value) > 500
    assert float(gates["latency_p99"].value) > 1000
    assert gates["error_rate"].outcome == "passed"


def test_a_restarting_canary_fails_the_restart_gate(tour: Tour) -> None:
    gates = tour.fault(SCENARIOS[2])  # crashes 2 s after each start
    assert gates["restarts"].outcome == "failed", gates["restarts"]
    assert float(gates["restarts"].value) >= 1
    assert "auth-canary-" in gates["restarts"].message


def test_a_canary_slightly_worse_than_stable_fails_only_the_comparison(tour: Tour) -> None:
    gates = tour.fault(SCENARIOS[3])  # 3 % errors: under the threshold
    assert gates["error_rate"].verdict == "pass", gates["error_rate"]
    compare = gates["compare_errors"]
    assert compare.verdict == "fail" and compare.outcome == "failed", compare
    assert "vs stable 0 %" in compare.summary and "confidence sequence" in compare.summary
    assert "family-wise error rate" in compare.summary
