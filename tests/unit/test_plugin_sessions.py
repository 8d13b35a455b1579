"""What a single pytest run of the suites tells a user: undecided apart from failed, holding in the session, no
config outside the sandbox, and a plugin that costs an unrelated pytest run nothing."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from canary_checks.suite import packaged
from tests.conftest import PYTESTER_ARGS, PromStub, free_port
from tests.unit.test_compare import traffic

COMPARE_SUITE = (packaged("gate") / "test_compare.py").read_text()
FEW = {"canary": (300, 3), "stable": (5700, 57)}
"""1 % errors on both sides: 300 canary requests a look cannot tell a 2 % canary from a 1 % one; seven looks can (at the
default margin 1.1, with the first looks tempered until the data show no bursts)."""


class Clock:
    """The clock of the session's holding and of the looks' instants, moved on by the session's pauses instead of
    waiting them out: ``--hold-interval 1s`` looks a (virtual) second apart, as the evidence needs, at once."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def time(self) -> float:
        return time.time() + self.ahead

    def monotonic(self) -> float:
        return time.monotonic() + self.ahead

    def sleep(self, seconds: float) -> None:
        self.ahead += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A :class:`Clock` for the inline runs' holding (``canary_checks.session``) and instants (the metrics source)."""
    import canary_checks.prometheus.source
    import canary_checks.session

    fake = Clock()
    for module in (canary_checks.session, canary_checks.prometheus.source):
        monkeypatch.setattr(module, "time", fake)
    return fake


@pytest.fixture
def compare(pytester: pytest.Pytester, prom: PromStub) -> pytest.Pytester:
    pytester.makepyfile(test_canary_compare=COMPARE_SUITE)
    pytester.makefile(".yaml", canary=f"service: auth\nnamespace: orion\nprometheus: {{url: '{prom.url}'}}\n")
    traffic(prom, **FEW)
    return pytester


def test_a_comparison_too_few_requests_to_decide_is_undecided_not_failed(compare: pytest.Pytester) -> None:
    result = compare.runpytest(*PYTESTER_ARGS, "-k", "errors", "--junitxml", "out.xml", "--canary-evidence", "e.json")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*undecided: not failed, not passed*",
            "compare_errors inconclusive: needs ≈ 3,7?? more canary requests (≈ * at the observed rate)",
            "*--hold-for 5m*--fail-undecided*",
        ]
    )
    (case,) = ET.parse(compare.path / "out.xml").getroot().iter("testcase")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert case.find("skipped") is not None and case.find("failure") is None
    assert props["verdict"] == "inconclusive" and props["decision"] == "undecided"
    assert float(props["needed_requests"]) > 0 and float(props["needed_seconds"]) > 0


def test_fail_undecided_makes_it_a_failure(compare: pytest.Pytester) -> None:
    result = compare.runpytest(*PYTESTER_ARGS, "-k", "errors", "--canary-evidence", "e.json", "--fail-undecided")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*compare_errors: INCONCLUSIVE (critical)*too few requests to tell*"])


def test_hold_for_looks_again_until_the_comparison_decides(compare: pytest.Pytester, clock: Clock) -> None:
    result = compare.runpytest(*PYTESTER_ARGS, "-k", "errors", "--canary-evidence", "e.json", "--hold-for", "60s",
                               "--hold-interval", "1s")  # fmt: skip
    result.assert_outcomes(passed=1)
    held = [line for line in result.outlines if line.startswith("canary-checks: holding (compare_errors inconclusive")]
    assert 2 <= len(held) <= 7, result.outlines  # each look adds an interval of 300 canary requests; seven decide
    assert "more canary requests" in held[0] and "left of --hold-for" in held[0]
    assert clock.ahead == len(held)  # a second's pause after each look that held


def test_a_decided_regression_fails_at_once_even_when_holding(compare: pytest.Pytester, prom: PromStub) -> None:
    traffic(prom, canary=(3000, 300), stable=(57000, 570))
    result = compare.runpytest(*PYTESTER_ARGS, "-k", "errors", "--canary-evidence", "e.json", "--hold-for", "60s",
                               "--hold-interval", "1s")  # fmt: skip
    result.assert_outcomes(failed=1)
    assert "canary-checks: holding" not in result.stdout.str()


def test_a_bad_hold_for_is_a_usage_error(compare: pytest.Pytester) -> None:
    result = compare.runpytest(*PYTESTER_ARGS, "--hold-for", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--hold-for: expected a duration such as 30s, 5m or 1h; got 'soon'*"])


@pytest.mark.parametrize("suite", ["gate/test_compare.py", "smoke/test_smoke.py"])
def test_without_canary_yaml_the_suite_says_to_run_init(pytester: pytest.Pytester, suite: str) -> None:
    kind, _, name = suite.partition("/")
    # a name of its own: the outer session has imported modules called test_compare and test_smoke
    pytester.makepyfile(**{f"test_suite_{kind}": (packaged(kind) / name).read_text()})
    result = pytester.runpytest(*PYTESTER_ARGS, "--stage", "25")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: no canary.yaml in *", "*fix: run 'canary-checks init *"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "plugin.py" not in output


def test_an_unrelated_pytest_run_reads_and_imports_nothing_of_canary_checks(pytester: pytest.Pytester) -> None:
    """A team's other tests, in a repository without canary.yaml, with canary-checks installed."""
    pytester.makepyfile(test_other="def test_other():\n    assert 1 + 1 == 2\n")
    pytester.makeconftest(
        "import sys\n"
        "def pytest_sessionfinish(session):\n"
        "    print('LOADED', sorted(m for m in sys.modules if m.startswith('canary_checks')))\n"
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-p", "no:locust")
    result.assert_outcomes(passed=1)
    assert "LOADED ['canary_checks', 'canary_checks.plugin']\n" in result.stdout.str()
    assert not (Path(pytester.path) / "reports").exists()


def test_hold_for_says_at_each_look_that_prometheus_is_unreachable(pytester: pytest.Pytester, clock: Clock) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    pytester.makepyfile(test_canary_compare=COMPARE_SUITE)
    pytester.makefile(".yaml", canary=f"service: auth\nnamespace: orion\nprometheus: {{url: '{url}'}}\n")
    result = pytester.runpytest(*PYTESTER_ARGS, "-k", "errors", "--canary-evidence", "e.json", "--hold-for", "2s",
                                "--hold-interval", "0.5s")  # fmt: skip
    held = [line for line in result.outlines if line.startswith("canary-checks: holding")]
    assert len(held) >= 2, result.outlines
    assert all(f"(Prometheus at {url}: is unreachable (connection refused)); looking again in" in h for h in held)
    result.assert_outcomes(errors=1)  # an unreadable source errors the check: never a pass, not a regression
