"""Custom gates as users run them: the packaged suite with custom gates in canary.yaml, and a team's own test with
the ``canary_gate`` fixture — JUnit, the summary table, the report and the decision treat them as built-in gates."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from canary_checks.report import outcome_of, read_junit
from tests.conftest import PYTESTER_ARGS, PromStub, healthy

ROOT = Path(__file__).parents[2] / "canary_checks" / "suites" / "gate"
CHECKOUT = 'sum(rate(checkout_failed_total{namespace="$namespace", pod=~"$pods"}[$window]))'
FAILED = 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods", outcome="failed"}[$window]))'
TOTAL = 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods"}[$window]))'

TEAM_TESTS = """
from canary_checks import CanaryGate


def test_queue_lag(canary_gate: CanaryGate) -> None:
    canary_gate.evaluate(
        "queue_lag",
        query='max(kafka_consumergroup_lag{namespace="$namespace", consumergroup="$workload"})',
        threshold=1000, fails="above", unit="messages",
    ).verify()


def test_refund_share(canary_gate: CanaryGate) -> None:
    refunds = canary_gate.value('sum(increase(refunds_total{pod=~"$pods"}[$window]))')
    orders = canary_gate.value('sum(increase(orders_total{pod=~"$pods"}[$window]))')
    share = 100 * (refunds or 0) / orders if orders else None
    canary_gate.record("refund_share", share, threshold=2, fails="above", unit="%").verify()


def test_configured(canary_gate: CanaryGate) -> None:
    canary_gate.evaluate("checkout_failures").verify()
"""


def write(pytester: pytest.Pytester, prom: PromStub, **more: object) -> None:
    config = {
        "prometheus": {"url": prom.url},
        "window": "30s",
        "kubernetes": {"enabled": False},
        "gates": {"checkout_failures": {"query": CHECKOUT, "threshold": 0.5, "fails": "above", "unit": "/s"}},
        "statistics": {"checkouts": {"numerator": FAILED, "denominator": TOTAL}},
        **more,
    }
    (pytester.path / "canary.yaml").write_text(yaml.safe_dump(config))


def cases(path: Path) -> dict[str, dict[str, str]]:
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        props["outcome"] = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        out[case.get("name", "")] = props
    return out


@pytest.fixture
def packaged(pytester: pytest.Pytester, prom: PromStub) -> pytest.Pytester:
    """The packaged gate suite (both files) in a fresh directory; module names of their own for pytester."""
    pytester.makepyfile(
        test_yaml_suite_gates=(ROOT / "test_gates.py").read_text(),
        test_yaml_suite_compare=(ROOT / "test_compare.py").read_text(),
    )
    write(pytester, prom)
    healthy(prom)
    return pytester


def test_a_custom_gate_fails_the_suite_with_its_value_and_junit_carries_it(
    packaged: pytest.Pytester, prom: PromStub
) -> None:
    prom.answer(r"checkout_failed_total", 0.8)
    result = packaged.runpytest(*PYTESTER_ARGS, "--stage", "25", "--junitxml", "out.xml")
    # the custom comparison cannot read checkouts here: no data, which fails too
    result.assert_outcomes(failed=2, passed=21, deselected=6)  # the 5 kube_* gates and load_per_pod (off)
    result.stdout.fnmatch_lines(
        [
            "*checkout_failures: FAIL (critical) — canary checkout_failures 0.8 /s > 0.5 /s*",
            "*canary gates*",
            "checkout_failures*fail*0.8 /s*0.5 /s*critical",
        ]
    )
    case = cases(packaged.path / "out.xml")["test_custom[checkout_failures]"]
    assert case["verdict"] == "fail" and case["value"] == "0.8" and case["threshold"] == "0.5"
    assert case["unit"] == "/s" and case["severity"] == "critical" and case["fails"] == "above"
    assert 'pod=~"auth\\\\-canary-' in case["query"]


def test_threshold_flags_and_stage_gates_change_a_custom_gate(packaged: pytest.Pytester, prom: PromStub) -> None:
    prom.answer(r"checkout_failed_total", 0.8)
    loose = packaged.runpytest(*PYTESTER_ARGS, "--stage", "25", "-k", "test_custom and not vs_stable",
                               "--threshold", "checkout_failures=1")  # fmt: skip
    loose.assert_outcomes(passed=1)
    write(packaged, prom, stage_gates={5: {"checkout_failures": {"threshold": 1}}})
    packaged.runpytest(*PYTESTER_ARGS, "--stage", "5", "-k", "test_custom and not vs_stable").assert_outcomes(passed=1)
    packaged.runpytest(*PYTESTER_ARGS, "--stage", "25", "-k", "test_custom and not vs_stable").assert_outcomes(failed=1)


def test_a_custom_comparison_runs_in_the_suite_with_its_evidence(packaged: pytest.Pytester, prom: PromStub) -> None:
    for side, (total, failed) in (("canary", (3000, 300)), ("stable", (9000, 9))):
        prom.answer(rf"checkouts_total.*auth\\\\-{side}", total)
        prom.answer(rf'checkouts_total.*auth\\\\-{side}.*outcome="failed"', failed)
    result = packaged.runpytest(*PYTESTER_ARGS, "--stage", "25", "-k", "vs_stable", "--junitxml", "out.xml",
                                "--canary-evidence", "ev.json")  # fmt: skip
    case = cases(packaged.path / "out.xml")["test_custom_vs_stable[checkouts]"]
    assert case["gate"] == "compare_checkouts" and case["verdict"] == "fail", case
    assert case["severity"] == "critical" and case["canary_events"] == "300"
    result.stdout.fnmatch_lines(["*compare_checkouts: FAIL (critical) — canary checkouts 10 % vs stable 0.1 %*"])
    assert "checkouts" in json.loads((packaged.path / "ev.json").read_text())["tests"]


def test_without_custom_gates_the_suite_has_no_custom_test(pytester: pytest.Pytester, prom: PromStub) -> None:
    pytester.makepyfile(test_yaml_suite_plain=(ROOT / "test_gates.py").read_text())
    (pytester.path / "canary.yaml").write_text(yaml.safe_dump({"prometheus": {"url": prom.url}, "window": "30s",
                                                               "kubernetes": {"enabled": False}}))  # fmt: skip
    healthy(prom)
    result = pytester.runpytest(*PYTESTER_ARGS, "--stage", "25", "-v")
    result.assert_outcomes(passed=15, deselected=6)  # the 5 kube_* gates, load_per_pod (off); no test_custom
    run = [line for line in result.stdout.lines if "::" in line]
    assert len(run) == 15 and not any("::test_custom" in line for line in run)


def test_the_gate_table_keeps_its_columns_for_a_long_gate_name(pytester: pytest.Pytester, prom: PromStub) -> None:
    pytester.makepyfile(
        test_long="from canary_checks import CanaryGate\n\n\ndef test_long(canary_gate: CanaryGate) -> None:\n"
        "    canary_gate.record('refund_share_of_the_eu_region_orders', 1.0, threshold=2, fails='above').verify()\n"
    )
    write(pytester, prom)
    result = pytester.runpytest(*PYTESTER_ARGS)
    result.assert_outcomes(passed=1)
    lines = result.stdout.lines
    header = next(line for line in lines if line.startswith("gate "))
    row = next(line for line in lines if line.startswith("refund_share_of_the_eu_region_orders"))
    assert header.index("verdict") == row.index("pass") and header.index("severity") == row.index("critical")


def test_a_teams_own_tests_record_gates_the_runner_and_the_report_read(
    pytester: pytest.Pytester, prom: PromStub
) -> None:
    pytester.makepyfile(test_team_checks=TEAM_TESTS)
    write(pytester, prom)
    prom.answer(r"kafka_consumergroup_lag", 2400)
    prom.answer(r"refunds_total", 3)
    prom.answer(r"orders_total", 300)
    prom.answer(r"checkout_failed_total", 0.1)
    result = pytester.runpytest(*PYTESTER_ARGS, "--junitxml", "out.xml", "--canary-reports", "runs")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*queue_lag: FAIL (critical) — canary queue_lag 2400 messages > 1000 messages*",
            "*canary gates*",
            "queue_lag*fail*2400 messages*1000 messages*critical",
            "refund_share*pass*1 %*2 %*critical",
            "checkout_failures*pass*0.1*0.5*critical",
        ]
    )
    records = {r.gate: r for r in read_junit(pytester.path / "out.xml")}
    assert records["refund_share"].verdict == "pass" and len(records["refund_share"].queries) == 2
    assert 'consumergroup="auth-canary"' in records["queue_lag"].queries[0]
    # the runner's rule: a failed gate rolls back
    assert outcome_of({"outcome": r.outcome, "verdict": r.verdict, "gate": r.gate} for r in records.values()) == (
        "failed"
    )
    (run_dir,) = (pytester.path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    gates = {g["gate"]: g for g in summary["suite_runs"][-1]["gates"]}
    assert gates["queue_lag"]["verdict"] == "fail" and gates["refund_share"]["value"] == "1"


def test_a_teams_test_with_no_data_or_prometheus_errors_never_passes(pytester: pytest.Pytester, prom: PromStub) -> None:
    pytester.makepyfile(test_team_nodata=TEAM_TESTS)
    write(pytester, prom)
    prom.answer(r"kafka_consumergroup_lag", ("error", 422, "bad_data: unexpected character"))
    result = pytester.runpytest(*PYTESTER_ARGS, "--junitxml", "out.xml", "-k", "queue_lag or refund_share")
    result.assert_outcomes(failed=2)
    records = {r.gate: r for r in read_junit(pytester.path / "out.xml")}
    assert records["queue_lag"].verdict == "error" and "unexpected character" in records["queue_lag"].summary
    assert records["refund_share"].verdict == "no data"  # no orders: None, never a pass
    # an unreadable Prometheus holds (the runner waits), a missing value fails as no data does
    assert outcome_of([{"outcome": "failed", "verdict": "error", "gate": "queue_lag"}]) == "held"


def test_a_teams_gate_may_not_take_a_builtin_name(pytester: pytest.Pytester, prom: PromStub) -> None:
    pytester.makepyfile(
        test_team_clash="""
def test_clash(canary_gate):
    canary_gate.record("error_rate", 1.0, threshold=2, fails="above").verify()

def test_bad_side(canary_gate):
    canary_gate.record("refunds", 1.0, threshold=2, fails="upwards").verify()
"""
    )
    write(pytester, prom)
    result = pytester.runpytest(*PYTESTER_ARGS)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*error_rate is a built-in gate, which takes no value recorded by a test; give yours another name*",
            "*canary_gate.record('refunds'): fails: Input should be 'above' or 'below'*",
        ]
    )
