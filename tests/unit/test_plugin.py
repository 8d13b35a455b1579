"""The pytest plugin, run as users run it: a suite in a fresh directory, pytest's own outcomes and JUnit file."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import PYTESTER_ARGS, PromStub, free_port, healthy

ARGS = PYTESTER_ARGS


def junit_cases(path: Path) -> dict[str, dict[str, str]]:
    cases = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        props = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        props["outcome"] = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
        cases[case.get("name", "")] = props
    return cases


def test_header_names_the_target(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    result = suite.runpytest(*ARGS, "--stage", "25")
    result.stdout.fnmatch_lines(
        [
            "canary-checks: auth-canary vs auth-stable in namespace orion, mesh istio, stage 25 %",
            f"canary-checks: Prometheus {prom.url}, window 30s, config *canary.yaml",
        ]
    )


def test_healthy_canary_passes_and_junit_carries_every_gate(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    result = suite.runpytest(*ARGS, "--stage", "25", "--junitxml", "out.xml")
    result.assert_outcomes(passed=15)
    cases = junit_cases(suite.path / "out.xml")
    assert len(cases) == 15
    for name, props in cases.items():
        assert props["verdict"] == "pass", name
        assert props["value"] != "" and props["threshold"] != "" and props["severity"], name
        assert props["query"], name
    assert cases["test_error_rate[error_rate]"]["threshold"] == "5"
    assert cases["test_latency[p99]"]["severity"] == "critical"
    result.stdout.fnmatch_lines(["*canary gates*", "error_rate*pass*0 %*5 %*critical"])


def test_a_breached_critical_gate_fails_with_value_threshold_window_and_query(
    suite: pytest.Pytester, prom: PromStub
) -> None:
    healthy(prom)
    prom.answer(r'"auth-canary", response_code=~"5..', 200)
    prom.answer(r'"auth-canary", response_code!~"5..', 800)
    result = suite.runpytest(*ARGS, "--stage", "25")
    # error rate and success rate are critical; 2x-stable is a warning (reported, not failed)
    result.assert_outcomes(passed=13, failed=2, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*error_rate: FAIL (critical)*canary error rate 20 % > 5 %*",
            "*window: last 30s",
            '*query: sum(increase(istio_requests_total{reporter="destination"*',
        ]
    )


def test_warning_gates_fail_only_in_strict_mode(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    prom.answer(r"histogram_quantile\(0.95.*auth-canary", 900)
    relaxed = suite.runpytest(*ARGS, "--stage", "25")
    relaxed.assert_outcomes(passed=15, warnings=2)  # latency_p95 and latency_vs_stable, both warnings
    relaxed.stdout.fnmatch_lines(["*GateWarning: latency_p95: FAIL (warning)*"])
    strict = suite.runpytest(*ARGS, "--stage", "25", "--strict-gates")
    strict.assert_outcomes(passed=13, failed=2)


def test_prometheus_down_makes_gates_error_naming_the_url(suite: pytest.Pytester) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = suite.runpytest(*ARGS, "--stage", "25", "--prometheus-url", url)
    result.assert_outcomes(errors=15)
    result.stdout.fnmatch_lines([f"Prometheus at {url} (query *): is unreachable (connection refused)"])
    assert "Traceback" not in result.stdout.str()


def test_stage_must_be_a_configured_stage(suite: pytest.Pytester) -> None:
    result = suite.runpytest(*ARGS, "--stage", "30")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --stage: 30 is not one of the stages [5, 25, 50, 100] of auth"])
    bad = suite.runpytest(*ARGS, "--stage", "half")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--stage: expected a whole percent such as 25; got 'half'*"])


def test_a_malformed_config_is_one_clear_error(suite: pytest.Pytester) -> None:
    suite.makefile(".yaml", canary="gates:\n  error_rate: {threshold: five}\n")
    result = suite.runpytest(*ARGS, "--stage", "25")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *canary.yaml: gates.error_rate.threshold: *(got 'five')"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_hostile_service_flag_is_refused(suite: pytest.Pytester) -> None:
    result = suite.runpytest(*ARGS, "--service", 'auth"} or vector(1) #')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: command line (--service): service: *not a valid Kubernetes name*"])


def test_threshold_overrides_and_disabled_and_skipped_gates(suite: pytest.Pytester, prom: PromStub) -> None:
    healthy(prom)
    prom.answer(r'"auth-canary", response_code=~"5..', 30)  # 3 %
    tightened = suite.runpytest(*ARGS, "--stage", "25", "--threshold", "error_rate=2")
    tightened.stdout.fnmatch_lines(["*canary error rate 3 % > 2 %*"])
    suite.makefile(
        ".yaml",
        canary=f"prometheus: {{url: '{prom.url}'}}\nkubernetes: {{enabled: false}}\ngates:\n  cpu: {{enabled: false}}\n"
        "  latency_p99: {on_no_data: skip}\n",
    )
    prom.answer(r"histogram_quantile\(0.99.*auth-canary", "NaN")
    result = suite.runpytest(*ARGS, "--stage", "25")
    result.assert_outcomes(passed=13, skipped=1, deselected=7)  # cpu, the 5 kube_* gates, load_per_pod (off)
