"""Reports: what a gate run and a rollout leave in reports/<run-id>/, the summary and HTML made from it, the
``report`` command, and the page as a real browser (Debian's headless Chromium) draws it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from canary_checks.errors import CanaryError
from canary_checks.report import CANARY_COLOR, STABLE_COLOR, build_report, find_run, list_runs, summarize
from canary_checks.rundir import write_run
from tests.conftest import PYTESTER_ARGS, PromStub, canary_checks_here, healthy

START = time.time() - 600


def run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "reports").iterdir() if p.is_dir())


def test_a_gate_run_writes_its_report_directory(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    result = suite.runpytest(*PYTESTER_ARGS, "--stage", "25")
    result.assert_outcomes(passed=15)
    (run,) = run_dirs(suite.path)
    assert run.name.startswith("gate-")
    assert {p.name for p in run.iterdir()} == {"run.json", "stage-25.xml", "series.json", "summary.json",
                                               "report.html"}  # fmt: skip
    result.stdout.fnmatch_lines([f"canary-checks: report reports/{run.name}/report.html"])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["decision"]["outcome"] == "passed"
    assert summary["stage"] == 25 and summary["service"] == "auth"
    (stage,) = summary["suite_runs"]
    assert stage["name"] == "stage 25 %" and len(stage["gates"]) == 15
    series = json.loads((run / "series.json").read_text())
    # error rate and three quantiles, canary and stable, over the last 15 minutes, read with range queries
    assert set(series["series"]) == {"error_rate", "latency_p50", "latency_p95", "latency_p99"}
    assert series["end"] - series["start"] == pytest.approx(900, abs=5)


def test_a_failing_run_says_which_gate_and_keeps_the_users_junit(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    prom.answer(r'"auth-canary", response_code=~"5..', 200)
    prom.answer(r'"auth-canary", response_code!~"5..', 800)
    result = suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--junitxml", "mine.xml")
    result.assert_outcomes(passed=13, failed=2, warnings=1)
    assert (suite.path / "mine.xml").exists()
    (run,) = run_dirs(suite.path)
    assert (run / "stage-25.xml").read_bytes() == (suite.path / "mine.xml").read_bytes()
    decision = json.loads((run / "summary.json").read_text())["decision"]
    assert decision["outcome"] == "failed"
    assert "error_rate: canary error rate 20 % > 5 %" in decision["why"]


def test_no_report_when_asked_or_when_no_check_runs(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--no-canary-report").assert_outcomes(passed=15)
    listed = suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--collect-only", "-q")  # only lists the gates
    assert listed.ret == 0 and "16/22 tests collected" in listed.stdout.str()  # 6 off: kube_*, load_per_pod
    suite.makepyfile(test_other="def test_plain():\n    pass\n")
    suite.runpytest(*PYTESTER_ARGS, "test_other.py").assert_outcomes(passed=1)
    assert not (suite.path / "reports").exists()


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" tests="3">
<testcase classname="suites.gate.test_gates" name="test_error_rate[error_rate]">
  <properties><property name="gate" value="error_rate"/><property name="verdict" value="{verdict}"/>
  <property name="value" value="{rate}"/><property name="threshold" value="5"/><property name="unit" value="%"/>
  <property name="severity" value="critical"/><property name="summary" value="canary error rate {rate} % vs 5 %"/>
  </properties>{failure}</testcase>
<testcase classname="suites.gate.test_gates" name="test_latency[p95]">
  <properties><property name="gate" value="latency_p95"/><property name="verdict" value="pass"/>
  <property name="value" value="120"/><property name="threshold" value="500"/><property name="unit" value="ms"/>
  <property name="severity" value="warning"/><property name="summary" value="canary p95 latency 120 ms"/></properties>
</testcase>
<testcase classname="suites.gate.test_compare" name="test_errors_vs_stable[error_rate]">
  <properties><property name="gate" value="compare_errors"/><property name="verdict" value="{verdict}"/>
  <property name="value" value="8"/><property name="threshold" value="1"/><property name="unit" value="ratio"/>
  <property name="severity" value="critical"/><property name="summary" value="ratio 8"/>
  <property name="ratio" value="8"/><property name="interval_low" value="3.5"/>
  <property name="interval_high" value="19"/><property name="p_value" value="0.0004"/></properties>{failure}
</testcase></testsuite></testsuites>
"""


def rolled_back_run(root: Path) -> Path:
    """What the runner leaves after a canary rolled back at 25 %: events, two stages' JUnit, series."""
    run = root / "20261127-101500-abcdef"
    write_run(run, kind="rollout", service="auth", namespace="orion", image="auth:2.0", started=START,
              ended=START + 400)  # fmt: skip
    ok = JUNIT.format(verdict="pass", rate="0.4", failure="")
    bad = JUNIT.format(verdict="fail", rate="21", failure='<failure message="error_rate: FAIL">x</failure>')
    (run / "stage-5.xml").write_text(ok)
    (run / "stage-25.xml").write_text(bad)
    events = [
        {"time": START + 1, "event": "deployed", "image": "auth:2.0"},
        {"time": START + 2, "event": "weight", "weight": 5, "stage": 5},
        {"time": START + 200, "event": "stage passed", "stage": 5},
        {"time": START + 201, "event": "weight", "weight": 25, "stage": 25},
        {"time": START + 380, "event": "rollback started", "why": "failing gates at stage 25 %: error_rate"},
        {"time": START + 380.4, "event": "weight", "weight": 0},
        {"time": START + 381, "event": "rolled back", "why": "failing gates at stage 25 %: error_rate (21 %)"},
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"time": 1, "ev')
    times = [START + 10 * i for i in range(40)]
    canary_errors = [0.3] * 22 + [21.0] * 18
    series: dict[str, Any] = {"start": START, "end": START + 400, "step": 10, "errors": [], "series": {
        "error_rate": {"canary": list(zip(times, canary_errors, strict=True)),
                       "stable": [[t, 0.35] for t in times]},
        "latency_p50": {"canary": [[t, 8] for t in times], "stable": [[t, 7] for t in times]},
        "latency_p95": {"canary": [[t, 120] for t in times], "stable": [[t, 110] for t in times]},
        "latency_p99": {"canary": [[t, 400] for t in times], "stable": [[t, 380] for t in times]},
    }}  # fmt: skip
    (run / "series.json").write_text(json.dumps(series))
    return run


def test_a_rolled_back_rollout_summary_from_its_files(tmp_path: Path) -> None:
    run = rolled_back_run(tmp_path)
    summary = summarize(run)
    assert summary["kind"] == "rollout" and summary["image"] == "auth:2.0"
    assert summary["decision"] == {"outcome": "rolled back", "time": START + 381,
                                   "why": "failing gates at stage 25 %: error_rate (21 %)"}  # fmt: skip
    assert [r["name"] for r in summary["suite_runs"]] == ["stage 5 %", "stage 25 %"]
    assert [r["passed"] for r in summary["suite_runs"]] == [True, False]
    assert [e["weight"] for e in summary["timeline"] if e["event"] == "weight"] == [5, 25, 0]
    assert [c["gate"] for c in summary["comparisons"]] == ["compare_errors"]  # from the latest suite run
    assert summary["comparisons"][0]["properties"]["interval_low"] == "3.5"


class _Page(HTMLParser):
    """The parts of the report a reader looks for: images, table rows, the decision box."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str]] = []
        self.rows: list[list[str]] = []
        self.decision = ""
        self._cells: list[str] | None = None
        self._in_decision = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "img":
            self.images.append(a)
        elif tag == "tr":
            self._cells = []
        elif tag in ("td", "th") and self._cells is not None:
            self._cells.append("")
        elif tag == "div" and a.get("id") == "decision":
            self._in_decision = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._cells is not None:
            self.rows.append([c.strip() for c in self._cells])
            self._cells = None
        elif tag == "div":
            self._in_decision = False

    def handle_data(self, data: str) -> None:
        if self._cells:
            self._cells[-1] += data
        if self._in_decision:
            self.decision += data


def test_the_html_report_is_one_self_contained_page(tmp_path: Path) -> None:
    html = build_report(rolled_back_run(tmp_path)).read_text()
    page = _Page()
    page.feed(html)
    assert " ".join(page.decision.split()).startswith("rolled back at")
    assert "failing gates at stage 25 %: error_rate (21 %)" in page.decision
    assert [i["id"] for i in page.images] == ["plot-error_rate", "plot-latency", "plot-comparisons"]
    assert all(i["src"].startswith("data:image/png;base64,") for i in page.images)  # nothing to fetch
    assert "http://" not in html.replace("http://www.w3.org", "") and "<script" not in html
    gates = [r for r in page.rows if r and r[0] in ("error_rate", "latency_p95", "compare_errors")]
    assert ["error_rate", "fail", "21 %", "5 %", "critical", "canary error rate 21 % vs 5 %"] in gates
    assert ["error_rate", "pass", "0.4 %", "5 %", "critical", "canary error rate 0.4 % vs 5 %"] in gates
    assert any(r[:2] == ["compare_errors", "fail"] and r[3] == "3.5 – 19" for r in page.rows)


def test_without_series_the_report_says_why(tmp_path: Path) -> None:
    run = rolled_back_run(tmp_path)
    (run / "series.json").write_text(json.dumps({"series": {}, "errors": ["Prometheus unreachable at x"]}))
    html = build_report(run).read_text()
    assert "No metric series were recorded for this run: Prometheus unreachable at x." in html
    assert "<img" not in html.replace('<img id="plot-comparisons"', "")


def test_report_command_lists_rebuilds_and_names_a_missing_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    run = rolled_back_run(reports)

    def report(*args: str) -> subprocess.CompletedProcess[str]:  # a process of its own: the next test
        return canary_checks_here("report", *args, "--reports", str(reports), cwd=tmp_path)

    rebuilt = report("20261127-1015")  # a unique prefix is enough
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rolled back — failing gates at stage 25 %: error_rate (21 %)" in rebuilt.stdout
    assert (run / "report.html").exists() and (run / "summary.json").exists()
    listed = report()
    assert "20261127-101500-abcdef" in listed.stdout and "rolled back" in listed.stdout
    missing = report("nope")
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "no run 'nope'" in missing.stderr and "the latest: 20261127-101500-abcdef" in missing.stderr
    with pytest.raises(CanaryError):
        find_run(reports, "nope")


def test_report_reads_and_writes_only_inside_the_reports_directory(tmp_path: Path) -> None:
    reports = tmp_path / "work" / "reports"
    rolled_back_run(reports)
    elsewhere = rolled_back_run(tmp_path / "elsewhere")  # a run's files outside reports/
    before = sorted(p.name for p in elsewhere.iterdir())
    escaped = subprocess.run([sys.executable, "-m", "canary_checks", "report", f"../../elsewhere/{elsewhere.name}",
                              "--reports", str(reports)], capture_output=True, text=True, cwd=reports,
                             stdin=subprocess.DEVNULL, timeout=60)  # fmt: skip
    assert escaped.returncode == 1 and "Traceback" not in escaped.stderr
    assert f"RUN_ID: '../../elsewhere/{elsewhere.name}' is not a run id" in escaped.stderr
    for run_id in ("..", ".", "../elsewhere", "/etc", "2026*", "x/../.."):
        with pytest.raises(CanaryError, match="is not a run id"):
            find_run(reports, run_id)
    # a link in reports/ that leads out of it: to a whole run, or to one file the report would write over
    (reports / "linked").symlink_to(elsewhere)
    with pytest.raises(CanaryError, match=r"linked leads out of .*reports/ \(to .*elsewhere"):
        find_run(reports, "linked")
    assert [r["run_id"] for r in list_runs(reports)] == ["20261127-101500-abcdef"]
    inside = reports / "20261127-101500-abcdef"
    (inside / "summary.json").symlink_to(elsewhere / "run.json")
    with pytest.raises(CanaryError, match=r"summary\.json leads out of"):
        find_run(reports, "20261127")
    assert sorted(p.name for p in elsewhere.iterdir()) == before  # nothing written there
    (inside / "summary.json").unlink()
    (inside / "series-copy.json").symlink_to(inside / "series.json")  # a link that stays inside is fine
    assert find_run(reports, "20261127") == inside


def chromium() -> str:
    found = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if found is None:
        pytest.fail("Debian's chromium-headless-shell is needed (./dev test installs it)", pytrace=False)
    return found


def near(pixels: np.ndarray, color: str, tolerance: float = 0.06) -> int:
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels[..., :3] - rgb).max(axis=-1) < tolerance).sum())


def test_chromium_draws_the_plots_and_the_gate_table(tmp_path: Path) -> None:
    html = build_report(rolled_back_run(tmp_path))
    shot = tmp_path / "report.png"
    args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--window-size=1200,2600", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    done = subprocess.run([*args, f"--screenshot={shot}", html.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = image.imread(shot)
    assert pixels.shape[:2] == (2600, 1200)
    # the plots were decoded and drawn: canary red and stable blue lines, and the red rollback line
    assert near(pixels, CANARY_COLOR) > 2000
    assert near(pixels, STABLE_COLOR) > 2000
    # the gate table: a failing verdict cell (#f8d0d0) and passing ones (#d9f2d9)
    assert near(pixels, "#f8d0d0", 0.02) > 1000 and near(pixels, "#d9f2d9", 0.02) > 1000
    dom = subprocess.run([*args, "--dump-dom", html.as_uri()], capture_output=True, text=True, timeout=120).stdout
    page = _Page()
    page.feed(dom)
    assert len(page.images) == 3
    assert sum(1 for r in page.rows if r and r[0] == "error_rate") == 2  # one per stage


def test_an_unwritable_reports_directory_costs_the_report_not_the_gates(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    (suite.path / "taken").write_text("a file where the reports directory would go")
    result = suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--canary-reports", "taken")
    result.assert_outcomes(passed=15)
    result.stdout.fnmatch_lines(["canary-checks: no report: cannot write taken/gate-*; --canary-reports DIR moves it"])
