"""The pytest plugin (registered by the ``pytest11`` entry point): options, fixtures, JUnit properties, summary.

A gate test is one line::

    @pytest.mark.parametrize("gate", gate_params("latency"), indirect=True)
    def test_latency(gate: GateCheck) -> None:
        gate.verify()

Every gate of the session is evaluated once, all queries concurrently at one instant, the first time a ``gate``
fixture is set up. A Prometheus error makes the test *error*; a breach fails it (warning gates only with
``--strict-gates``); no data fails it unless the gate's ``on_no_data`` is ``skip``. A critical check that cannot
decide yet (too few requests) is *undecided*: skipped with its verdict and what it needs, not failed — unless
``--fail-undecided``; ``--hold-for`` looks again in the same session until every critical check decides.

Loading the plugin costs nearly nothing: the config is read, and the library imported, only by a session that
collects tests using its ``gate`` or ``smoke`` fixtures.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from canary_checks.checks import CanaryGate, GateCheck, GateWarning, SmokeCheck
    from canary_checks.config import SmokeRequest
    from canary_checks.errors import CanaryError
    from canary_checks.gates import GateResult
    from canary_checks.prometheus import MetricsSource
    from canary_checks.session import SessionReport, Target

__all__ = ["CanaryGate", "GateCheck", "GateWarning", "SmokeCheck", "Target", "compare_params", "gate_params"]

_ELSEWHERE = {**dict.fromkeys(("CanaryGate", "GateCheck", "GateWarning", "SmokeCheck"), "checks"), "Target": "session"}


def __getattr__(name: str) -> Any:
    """The checks and the target live in modules of their own, loaded only by a session of checks."""
    if name not in _ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"canary_checks.{_ELSEWHERE[name]}"), name)


TARGET: pytest.StashKey[Target] = pytest.StashKey()
REPORT: pytest.StashKey[SessionReport] = pytest.StashKey()


def gate_params(family: str) -> list[Any]:
    """``pytest.param`` for every gate of ``family``, with ids like ``p95``: parametrize ``gate`` with them."""
    from canary_checks.gates import gates_in_family

    return [pytest.param(g.name, id=g.variant) for g in gates_in_family(family)]


def compare_params(family: str) -> list[Any]:
    """``pytest.param`` for every statistical comparison of ``family`` (errors, latency, resources): parametrize
    ``gate`` with them."""
    from canary_checks.compare import comparisons_in_family

    return [pytest.param(c.name, id=c.variant) for c in comparisons_in_family(family)]


def _stage(value: str) -> int:
    from canary_checks.config import parse_stage

    try:
        return parse_stage(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--stage: {e}") from None


def _duration(flag: str) -> Callable[[str], float]:
    def parse(value: str) -> float:
        from canary_checks.config import parse_duration

        try:
            return parse_duration(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{flag}: {e}") from None

    return parse


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("canary-checks", "canary gates (canary-checks)")
    _target_options(group)
    _run_options(group)


def _target_options(group: Any) -> None:
    """What is checked: the stage, the service, its Prometheus, the config and its overrides."""
    group.addoption(
        "--stage",
        type=_stage,
        default=None,
        metavar="PERCENT",
        help="rollout stage being checked, one of the configured stages (`stages` in the config); "
        "the traffic-split gate judges the canary's share against it.",
    )
    group.addoption(
        "--service",
        default=None,
        help="service under release: with `services:` in canary.yaml, the one whose settings apply (needed when "
        "there are several); else it replaces `service`.",
    )
    group.addoption("--namespace", default=None, help="its Kubernetes namespace (default: `namespace`).")
    group.addoption(
        "--prometheus-url", default=None, metavar="URL", help="Prometheus base URL (default: prometheus.url)."
    )
    group.addoption(
        "--mesh", default=None, help="which metric names to read: istio, linkerd or custom (default: mesh)."
    )
    group.addoption("--baseline", action="store_true", default=None,
                    help="compare the canary with the baseline Deployment (a fresh copy of stable), not stable "
                    "(default: baseline.enabled; canary-checks run --baseline passes it).")  # fmt: skip
    group.addoption("--no-baseline", dest="baseline", action="store_false",
                    help="compare the canary with stable even when baseline.enabled.")  # fmt: skip
    group.addoption(
        "--canary-config",
        default=None,
        metavar="PATH",
        help="config file (default: $CANARY_CONFIG, else canary.yaml in the current directory or rootdir).",
    )
    group.addoption("--window", default=None, metavar="DURATION", help="analysis window, e.g. 30s or 5m.")
    group.addoption(
        "--threshold",
        action="append",
        default=[],
        metavar="GATE=VALUE",
        help="override a gate for this run (a built-in or a custom one of canary.yaml): error_rate=3, or "
        "GATE.FIELD=VALUE such as latency_p95.severity=critical. Repeatable.",
    )
    group.addoption(
        "--canary-evidence",
        default=None,
        metavar="PATH",
        help="file where the canary-vs-stable comparisons accumulate their evidence across checks and stages "
        "(default: statistics.evidence_file).",
    )
    group.addoption("--fresh-evidence", action="store_true", default=False,
                    help="start the comparisons' evidence afresh (a new canary); otherwise it continues from the "
                    "last check.")  # fmt: skip


def _run_options(group: Any) -> None:
    """How the session runs: the smoke target, its report, strictness and holding."""
    group.addoption(
        "--target",
        default="canary",
        choices=("canary", "stable"),
        help="which side the smoke suite (suites/smoke) sends its requests to: the canary through its header "
        "route, or stable (default canary; see smoke: in the config).",
    )
    group.addoption(
        "--canary-reports",
        default="reports",
        metavar="DIR",
        help="where each run writes reports/<run-id>/: JUnit, summary.json, report.html with plots (default reports).",
    )
    group.addoption(
        "--no-canary-report",
        action="store_true",
        default=False,
        help="write no report directory (the runner and the webhook server pass it: they own the run's directory).",
    )
    group.addoption("--strict-gates", action="store_true", default=False,
                    help="warning gates fail the run too (info gates never do).")  # fmt: skip
    group.addoption(
        "--hold-for",
        type=_duration("--hold-for"),
        default=0.0,
        metavar="DURATION",
        help="while a critical check cannot decide yet (too few requests, no data, Prometheus unreadable), look "
        "again in this session, up to this long (e.g. 5m), as the runner holds a stage. Default: look once.",
    )
    group.addoption(
        "--hold-interval",
        type=_duration("--hold-interval"),
        default=15.0,
        metavar="DURATION",
        help="how often --hold-for looks again (default 15s).",
    )
    group.addoption(
        "--fail-undecided",
        action="store_true",
        default=False,
        help="a critical check with too few requests to decide fails the run; by default it is reported as "
        "undecided (skipped, with the requests it needs) and does not fail it.",
    )


def _target(config: pytest.Config) -> Target:
    """This session's target, resolved the first time a check needs it (an unrelated session never reads it)."""
    target = config.stash.get(TARGET, None)
    if target is None:
        from canary_checks.errors import CanaryError

        try:
            from canary_checks.session import resolve

            target = config.stash[TARGET] = resolve(config)
        except CanaryError as e:
            raise pytest.UsageError(e.message) from None
    return target


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GateSummary(), "canary-checks-summary")


CHECK_FIXTURES = ("gate", "custom_gate", "custom_comparison")
"""The fixtures a test names its gate (or comparison) through, by parameter."""


def _gate_name(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    name = next((callspec.params[f] for f in CHECK_FIXTURES if f in callspec.params), None)
    return name if isinstance(name, str) else None


def _runs_gates(item: pytest.Item) -> bool:
    """Whether the test checks gates through this plugin's fixtures (a parametrized gate, or ``canary_gate``)."""
    return any(_uses(item, f) for f in (*CHECK_FIXTURES, "canary_gate"))


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(_runs_gates(item) or _uses(item, "smoke") for item in items):
        return  # not a session of checks: nothing of canary-checks is read or imported
    from canary_checks.compare import comparisons_of
    from canary_checks.gates import gates_of

    target = _target(config)
    if any(_uses(item, "gate") for item in items):
        from canary_checks.errors import CanaryError

        try:  # a missing secret or certificate stops the session with one message, before any gate runs
            target.config.prometheus.check_secrets()
        except CanaryError as e:
            raise pytest.UsageError(e.message) from None
    gates, comparisons = gates_of(target.thresholds), comparisons_of(target.config.statistics)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and not config.option.no_header:
        from canary_checks.session import header

        for line in header(target):
            reporter.write_line(line)
    kube_on = target.config.kubernetes.active()
    kept, dropped = [], []
    for item in items:
        name = _gate_name(item)
        gate = gates.get(name) if name is not None else None
        comparison = comparisons.get(name) if name is not None else None
        if _is_placeholder(item):
            continue  # a test per custom gate, and the config has none: no test at all (not even a deselected one)
        if (
            gate is not None
            and (not gate.settings(target.thresholds).enabled or (gate.source == "kubernetes" and not kube_on))
        ) or (comparison is not None and not comparison.settings(target.config.statistics).enabled):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    _start_report(config, target, items)


def _start_report(config: pytest.Config, target: Target, items: list[pytest.Item]) -> None:
    """A session that runs gates or smoke checks gets its own reports/<run-id>/ with pytest's JUnit in it (one that
    only lists them, ``--collect-only``, writes nothing)."""
    if config.option.no_canary_report or config.option.collectonly or hasattr(config, "workerinput"):
        return
    gates = any(_runs_gates(item) for item in items)
    if gates or any(_uses(item, "smoke") for item in items):
        from canary_checks.session import start_report

        config.stash[REPORT] = start_report(config, target, "gate" if gates else "smoke")


def _uses(item: pytest.Item, fixture: str) -> bool:
    """Whether the test takes this plugin's ``gate`` or ``smoke`` fixture (not merely an argument of that name)."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).get(fixture, ())
    return any(getattr(getattr(d, "func", None), "__module__", "") == __name__ for d in definitions)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After pytest wrote the JUnit file: the series of the last minutes, the summary and the HTML report."""
    config = session.config
    report = config.stash.get(REPORT, None)
    if report is None or report.problem:
        return
    from canary_checks.session import finish_report

    finish_report(report, config.stash[TARGET], exitstatus)


@pytest.fixture(scope="session")
def canary_target(pytestconfig: pytest.Config) -> Target:
    """The resolved config, stage and thresholds of this run."""
    return _target(pytestconfig)


@pytest.fixture(scope="session")
def canary_source(canary_target: Target) -> MetricsSource:
    """The Prometheus this run reads."""
    from canary_checks.errors import CanaryError
    from canary_checks.prometheus import MetricsSource

    try:
        return MetricsSource(canary_target.config)
    except CanaryError as e:
        pytest.fail(e.message, pytrace=False)


@pytest.fixture(scope="session")
def canary_results(
    request: pytest.FixtureRequest, canary_target: Target, canary_source: MetricsSource
) -> dict[str, GateResult | CanaryError]:
    """Every gate and comparison collected in this session, evaluated once: queries run concurrently at one
    instant, the Kubernetes API read once, the comparisons' evidence advanced once. With ``--hold-for``, evaluated
    again every ``--hold-interval`` while a critical check cannot decide (the runner's rule)."""
    from canary_checks.session import evaluate_all

    names = [n for item in request.session.items if (n := _gate_name(item)) is not None]
    return evaluate_all(request.config, canary_target, canary_source, names)


@pytest.fixture
def gate(request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]) -> GateCheck:
    """The evaluated gate named by the test's ``gate`` parameter (see :func:`gate_params`)."""
    from canary_checks.checks import check

    return check(request, canary_target, canary_results)


@pytest.fixture
def custom_gate(request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]) -> GateCheck:
    """The evaluated custom gate (a key of `gates:` with a query) the plugin parametrizes the test with: one test
    per custom gate of the config (``test_custom[checkout_failures]``)."""
    from canary_checks.checks import check

    return check(request, canary_target, canary_results)


@pytest.fixture
def custom_comparison(
    request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]
) -> GateCheck:
    """The evaluated custom comparison (a key of `statistics:` with numerator and denominator), one test each."""
    from canary_checks.checks import check

    return check(request, canary_target, canary_results)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``health_path`` and ``smoke_request`` take their values from the config's ``smoke:`` section."""
    names = metafunc.fixturenames
    if "custom_gate" in names or "custom_comparison" in names:
        _parametrize_custom(metafunc)
    if "health_path" not in names and "smoke_request" not in names:
        return
    try:
        smoke = _target(metafunc.config).config.smoke
    except pytest.UsageError:
        # Raised while a module is collected it would come with pytest's traceback: generate nothing here; the end
        # of collection resolves the target again and stops the session with the one clear message.
        for name in ("health_path", "smoke_request"):
            if name in names:
                metafunc.parametrize(name, [])
        return
    if "health_path" in names:
        metafunc.parametrize("health_path", smoke.health, ids=[p.strip("/") or "root" for p in smoke.health])
    if "smoke_request" in names:
        metafunc.parametrize("smoke_request", smoke.requests, ids=[r.name for r in smoke.requests])


@pytest.fixture
def canary_gate(request: pytest.FixtureRequest, canary_target: Target, canary_source: MetricsSource) -> CanaryGate:
    """A team's own gate in its suite or ``conftest.py``: see :class:`CanaryGate`."""
    from canary_checks.checks import CanaryGate

    return CanaryGate(request, canary_target, canary_source, [])


_NONE = "-"
"""The parameter of a custom-gate test when the config has none: deselected at the end of collection."""


def _parametrize_custom(metafunc: pytest.Metafunc) -> None:
    """``custom_gate`` takes every custom gate of the config, ``custom_comparison`` every custom comparison."""
    try:
        target = _target(metafunc.config)
        found = {
            "custom_gate": list(target.thresholds.custom()),
            "custom_comparison": [f"compare_{n}" for n in target.config.statistics.custom()],
        }
    except pytest.UsageError:  # as in pytest_generate_tests: the end of collection says it once
        found = {"custom_gate": [], "custom_comparison": []}
    for fixture, names in found.items():
        if fixture in metafunc.fixturenames:
            ids = [n.removeprefix("compare_") for n in names] or ["none"]
            metafunc.parametrize(fixture, names or [_NONE], indirect=True, ids=ids)


def _is_placeholder(item: pytest.Item) -> bool:
    """A custom-gate test of a config without custom gates: nothing to check."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(callspec.params.get(f) == _NONE for f in CHECK_FIXTURES)


@pytest.fixture
def smoke(request: pytest.FixtureRequest, canary_target: Target) -> SmokeCheck:
    """Sends smoke requests to ``--target`` (canary or stable) and fails the test on a wrong answer."""
    from canary_checks.checks import SmokeCheck
    from canary_checks.smoke import SmokeClient

    target: str = request.config.option.target
    return SmokeCheck(SmokeClient(canary_target.config, target), request.node.user_properties)


@pytest.fixture
def health_request(health_path: str) -> SmokeRequest:
    """A GET of one of ``smoke.health`` that must answer 200."""
    from canary_checks.config import SmokeRequest

    return SmokeRequest(name=health_path.strip("/") or "root", path=health_path, status=(200,))


@pytest.fixture
def reachable() -> SmokeRequest:
    """A GET of ``/`` that must get any answer but a 5xx."""
    from canary_checks.smoke import reachable_request

    return reachable_request()


class _GateSummary:
    """Collects each gate's verdict from the test reports and prints one table at the end."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []
        self.undecided: list[tuple[str, str, Mapping[str, Any]]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if "gate" not in props or report.when == "teardown" or (report.when == "setup" and report.passed):
            return
        if props.get("decision") == "undecided":
            self.undecided.append((str(props["gate"]), str(props.get("verdict", "")), props))
        verdict = str(props.get("verdict", "?"))
        unit = str(props.get("unit", ""))
        value, threshold = str(props.get("value", "")), str(props.get("threshold", ""))
        self.rows.append(
            (
                str(props["gate"]),
                verdict,
                f"{float(value):.4g} {unit}".strip() if value else "-",
                f"{threshold} {unit}".strip() if threshold else "-",
                str(props.get("severity", "-")),
            )
        )

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        self._table(terminalreporter)
        if self.undecided:
            from canary_checks.suite import needs

            tr = terminalreporter
            tr.section("undecided: not failed, not passed")
            for item in self.undecided:
                tr.write_line(needs([item]), yellow=True)
            tr.write_line(
                "Too few requests to tell yet. Look again later, or wait in one run with --hold-for 5m; "
                "--fail-undecided fails the run instead."
            )
        report = config.stash.get(REPORT, None)
        if report is not None and report.html is not None:
            terminalreporter.write_line(f"canary-checks: report {report.html}")
        if report is not None and report.problem:
            terminalreporter.write_line(f"canary-checks: {report.problem}", yellow=True)

    def _table(self, terminalreporter: Any) -> None:
        if not self.rows:
            return
        tr = terminalreporter
        tr.section("canary gates")
        width = max([22, *(len(row[0]) for row in self.rows)])  # a team's gate may have a longer name
        tr.write_line(f"{'gate':<{width}} {'verdict':<13} {'value':>18} {'threshold':>14}  severity")
        for name, verdict, value, threshold, severity in self.rows:
            color = {"pass": "green", "fail": "red", "error": "red"}.get(verdict, "yellow")
            tr.write_line(f"{name:<{width}} {verdict:<13} {value:>18} {threshold:>14}  {severity}", **{color: True})
