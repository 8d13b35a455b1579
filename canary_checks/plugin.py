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
import shutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig, Gates, SmokeRequest
    from canary_checks.errors import CanaryError
    from canary_checks.gates import GateResult
    from canary_checks.kube import CanaryHealth
    from canary_checks.prometheus import MetricsSource, Sample
    from canary_checks.smoke import Answer, SmokeClient

__all__ = ["CanaryGate", "GateCheck", "GateWarning", "SmokeCheck", "Target", "compare_params", "gate_params"]


class GateWarning(UserWarning):
    """A warning or info gate was breached; it does not fail the run unless ``--strict-gates``."""


@dataclass(frozen=True)
class Target:
    """What this pytest session checks, resolved once from canary.yaml and the flags."""

    config: CanaryConfig
    config_path: Path | None
    stage: int | None
    strict: bool
    thresholds: Gates
    evidence: Path
    """Where the comparisons' sequential evidence accumulates."""


TARGET = pytest.StashKey[Target]()
REPORT = pytest.StashKey["_Report"]()


@dataclass
class _Report:
    """This session's report directory (only when it runs gates or smoke checks)."""

    kind: str
    run_dir: Path
    junit: Path
    started: float
    user_junit: Path | None
    html: Path | None = None
    problem: str = ""


@dataclass(frozen=True)
class GateCheck:
    """The evaluated gate a test receives; :meth:`verify` turns its verdict into the pytest outcome."""

    result: GateResult
    strict: bool
    fail_undecided: bool = False
    """A critical check that cannot decide yet fails instead of being reported undecided (skipped)."""

    def verify(self) -> None:
        __tracebackhide__ = True
        from canary_checks.gates import Verdict

        result = self.result
        if not result.breached:
            return
        if result.fails(strict=self.strict):
            if result.verdict is Verdict.INCONCLUSIVE and not self.fail_undecided:
                pytest.skip(f"undecided: {result.describe()}")
            pytest.fail(result.describe(), pytrace=False)
        warnings.warn(GateWarning(result.describe()), stacklevel=2)


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
    group.addoption(
        "--fresh-evidence",
        action="store_true",
        default=False,
        help="start the comparisons' evidence afresh (a new canary); otherwise it continues from the last check.",
    )
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
    group.addoption(
        "--strict-gates",
        action="store_true",
        default=False,
        help="warning gates fail the run too (info gates never do).",
    )
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


def _resolve(config: pytest.Config) -> Target:
    from canary_checks.compare import evidence_path
    from canary_checks.config import flag_overrides, load_config, parse_gate_flags, require_config
    from canary_checks.errors import CanaryError

    opt = config.option
    path = require_config(opt.canary_config, search=(Path.cwd(), config.rootpath))
    overrides = flag_overrides(
        service=opt.service,
        namespace=opt.namespace,
        mesh=opt.mesh,
        prometheus_url=opt.prometheus_url,
        window=opt.window,
    )
    canary = load_config(path, overrides)
    stage = opt.stage
    try:
        canary.check_stages(*(() if stage is None else (stage,)))
    except ValueError as e:
        raise CanaryError(
            f"--stage: {e}", fix=f"pass one of the stages, or change `stages` in {path or 'canary.yaml'}"
        ) from None
    thresholds = canary.gates_for(stage, parse_gate_flags(opt.threshold))
    evidence = (
        Path(opt.canary_evidence)
        if opt.canary_evidence
        else evidence_path(canary, path.parent if path is not None else Path.cwd())
    )
    if opt.fresh_evidence:
        evidence.unlink(missing_ok=True)
    return Target(canary, path, stage, bool(opt.strict_gates), thresholds, evidence)


def _target(config: pytest.Config) -> Target:
    """This session's target, resolved the first time a check needs it (an unrelated session never reads it)."""
    target = config.stash.get(TARGET, None)
    if target is None:
        from canary_checks.errors import CanaryError

        try:
            target = config.stash[TARGET] = _resolve(config)
        except CanaryError as e:
            raise pytest.UsageError(e.message) from None
    return target


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_GateSummary(), "canary-checks-summary")


def _header(target: Target) -> list[str]:
    c = target.config
    stage = f"stage {target.stage} %" if target.stage is not None else "no --stage"
    source = str(target.config_path)
    k = c.kubernetes
    kube = (
        f"Kubernetes API {k.api_url or 'from ' + (k.context or 'in-cluster or kubeconfig')}"
        if k.active()
        else "kube_* gates off (no Kubernetes credentials; see kubernetes: in the config)"
    )
    return [
        f"canary-checks: {c.workload('canary')} vs {c.workload('stable')} in namespace {c.namespace}, "
        f"mesh {c.mesh.value}, {stage}{', strict' if target.strict else ''}",
        f"canary-checks: Prometheus {c.prometheus.shown_url}, window {c.window:g}s, config {source}",
        f"canary-checks: {kube}",
        f"canary-checks: comparisons at {c.statistics.confidence:.0%} confidence, correction "
        f"{c.statistics.correction.value}, evidence {target.evidence}",
    ]


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
        for line in _header(target):
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
    _start_report(config, items)


def _uses(item: pytest.Item, fixture: str) -> bool:
    """Whether the test takes this plugin's ``gate`` or ``smoke`` fixture (not merely an argument of that name)."""
    definitions = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {}).get(fixture, ())
    return any(getattr(getattr(d, "func", None), "__module__", "") == __name__ for d in definitions)


def _start_report(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A session that runs gates or smoke checks gets its own reports/<run-id>/ with pytest's JUnit in it."""
    if config.option.no_canary_report or hasattr(config, "workerinput"):
        return
    gates = any(_runs_gates(item) for item in items)
    smoke = any(_uses(item, "smoke") for item in items)
    if not gates and not smoke:
        return
    from canary_checks.rundir import new_run_id, write_run

    target = _target(config)
    kind = "gate" if gates else "smoke"
    run_dir = Path(config.option.canary_reports) / new_run_id(kind)
    name = f"smoke-{config.option.target}" if kind == "smoke" else (
        f"stage-{target.stage}" if target.stage is not None else "gate"
    )  # fmt: skip
    user = Path(config.option.xmlpath) if config.option.xmlpath else None
    report = _Report(kind, run_dir, run_dir / f"{name}.xml", time.time(), user)
    config.stash[REPORT] = report
    c = target.config
    try:
        write_run(run_dir, kind=kind, service=c.service, namespace=c.namespace, stage=target.stage,
                  target=config.option.target if kind == "smoke" else None, started=report.started,
                  prometheus=c.prometheus.shown_url, window=c.window)  # fmt: skip
    except OSError as e:  # a read-only working directory: the checks still run, without their report
        report.problem = f"no report: cannot write {run_dir} ({e.strerror}); --canary-reports DIR moves it"
        return
    if user is None:
        # pytest's own JUnit writer, armed now that the session is known to run checks
        junitxml = config.pluginmanager.get_plugin("junitxml")
        if junitxml is None:
            report.problem = "no JUnit file: pytest's junitxml plugin is disabled (-p no:junitxml)"
        else:
            config.option.xmlpath = str(report.junit)
            junitxml.pytest_configure(config)
            config.stash[junitxml.xml_key].pytest_sessionstart()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After pytest wrote the JUnit file: the series of the last minutes, the summary and the HTML report."""
    config = session.config
    report = config.stash.get(REPORT, None)
    if report is None or report.problem:
        return
    from canary_checks.errors import CanaryError
    from canary_checks.prometheus import MetricsSource
    from canary_checks.report import build_report, record_series
    from canary_checks.rundir import GATE_RUN_SPAN, write_run

    ended = time.time()
    try:
        if report.user_junit is not None and report.user_junit.exists():
            shutil.copyfile(report.user_junit, report.junit)
        write_run(report.run_dir, ended=ended, exit_status=int(exitstatus))
        target = config.stash[TARGET]
        if report.kind == "gate":
            record_series(target.config, MetricsSource(target.config), report.run_dir, ended - GATE_RUN_SPAN, ended)
        report.html = build_report(report.run_dir)
    except CanaryError as e:
        report.problem = f"the report could not be written: {e.message}"
    except Exception as e:  # the report must never change the gates' outcome; say what went wrong instead
        report.problem = f"the report could not be written: {e.__class__.__name__}: {e}"


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


def _kube_reader(target: Target) -> Callable[[], CanaryHealth] | None:
    settings = target.config.kubernetes
    if not settings.active():
        return None
    from canary_checks.kube import api_client, canary_health

    def read() -> CanaryHealth:
        api = api_client(settings.api_url, context=settings.context, verify_tls=settings.verify_tls)
        return canary_health(api, target.config.namespace, target.config.workload("canary"))

    return read


@pytest.fixture(scope="session")
def canary_results(
    request: pytest.FixtureRequest, canary_target: Target, canary_source: MetricsSource
) -> dict[str, GateResult | CanaryError]:
    """Every gate and comparison collected in this session, evaluated once: queries run concurrently at one
    instant, the Kubernetes API read once, the comparisons' evidence advanced once. With ``--hold-for``, evaluated
    again every ``--hold-interval`` while a critical check cannot decide (the runner's rule)."""
    from canary_checks.compare import comparisons_of
    from canary_checks.errors import CanaryError
    from canary_checks.gates import evaluate, gates_of
    from canary_checks.report import outcome_of
    from canary_checks.suite import needs

    gates, comparisons = gates_of(canary_target.thresholds), comparisons_of(canary_target.config.statistics)
    names = [n for item in request.session.items if (n := _gate_name(item)) is not None]
    config = request.config
    deadline = time.monotonic() + config.option.hold_for
    while True:
        try:
            results = evaluate(
                canary_target.config,
                canary_source,
                [n for n in names if n in gates],
                stage=canary_target.stage,
                gates=canary_target.thresholds,
                kube=_kube_reader(canary_target),
            )
            results.update(_compare(canary_target, canary_source, [n for n in names if n in comparisons]))
        except CanaryError as e:
            pytest.fail(e.message, pytrace=False)
        checks = [_as_record(name, r, canary_target.strict) for name, r in results.items()]
        left = deadline - time.monotonic()
        if outcome_of(checks) not in ("held", "error") or left <= 0:
            return results
        waiting = [(c["gate"], c["verdict"], c["details"]) for c in checks if c["outcome"] not in ("passed", "error")]
        # an unreadable source is said as such at each look, not as "error" per gate
        unread = [_headline(r) for r in results.values() if isinstance(r, CanaryError)]
        why = "; ".join(filter(None, (*dict.fromkeys(unread), needs(waiting))))
        pause = min(config.option.hold_interval, left)
        _say(config, f"canary-checks: holding ({why}); looking again in {pause:.0f} s, {left:.0f} s left "
                     "of --hold-for")  # fmt: skip
        time.sleep(pause)


def _headline(error: CanaryError) -> str:
    from canary_checks.errors import PrometheusError

    return error.headline if isinstance(error, PrometheusError) else error.message.splitlines()[0]


def _as_record(name: str, result: GateResult | CanaryError, strict: bool) -> dict[str, Any]:
    """A result as the hold rule (:func:`canary_checks.report.outcome_of`) reads a suite run's JUnit record."""
    from canary_checks.gates import GateResult

    if not isinstance(result, GateResult):
        return {"gate": name, "outcome": "error", "verdict": "error", "details": {}}
    fails = result.fails(strict=strict)
    return {"gate": name, "outcome": "failed" if fails else "passed", "verdict": result.verdict.value,
            "details": result.details}  # fmt: skip


def _say(config: pytest.Config, line: str) -> None:
    """A progress line on the terminal now, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def _compare(target: Target, source: MetricsSource, names: list[str]) -> dict[str, GateResult | CanaryError]:
    if not names:
        return {}
    from canary_checks.compare import evaluate_comparisons

    return evaluate_comparisons(target.config, source, names, evidence_file=target.evidence)


@pytest.fixture
def gate(request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]) -> GateCheck:
    """The evaluated gate named by the test's ``gate`` parameter (see :func:`gate_params`)."""
    return _check(request, canary_target, canary_results)


@pytest.fixture
def custom_gate(request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]) -> GateCheck:
    """The evaluated custom gate (a key of `gates:` with a query) the plugin parametrizes the test with: one test
    per custom gate of the config (``test_custom[checkout_failures]``)."""
    return _check(request, canary_target, canary_results)


@pytest.fixture
def custom_comparison(
    request: pytest.FixtureRequest, canary_target: Target, canary_results: dict[str, Any]
) -> GateCheck:
    """The evaluated custom comparison (a key of `statistics:` with numerator and denominator), one test each."""
    return _check(request, canary_target, canary_results)


def _check(request: pytest.FixtureRequest, target: Target, results: dict[str, Any]) -> GateCheck:
    """The evaluated gate or comparison named by the test's parameter, recorded as the test's properties."""
    from canary_checks.compare import comparisons_of, evaluate_comparisons
    from canary_checks.gates import evaluate, gates_of
    from canary_checks.prometheus import MetricsSource

    name = getattr(request, "param", None)
    gates, comparisons = gates_of(target.thresholds), comparisons_of(target.config.statistics)
    if name not in gates and name not in comparisons:
        pytest.fail(
            f"the gate fixture needs a gate name; got {name!r}. "
            "Use @pytest.mark.parametrize('gate', gate_params('latency'), indirect=True)",
            pytrace=False,
        )
    outcome = results.get(name)
    if outcome is None and name in comparisons:
        source = MetricsSource(target.config)
        outcome = evaluate_comparisons(target.config, source, [name], evidence_file=target.evidence)[name]
    elif outcome is None:  # collected after the session's evaluation (e.g. by a plugin); evaluate alone
        outcome = evaluate(
            target.config,
            MetricsSource(target.config),
            [name],
            stage=target.stage,
            gates=target.thresholds,
            kube=_kube_reader(target),
        )[name]
    return _record(request, target, name, outcome)


def _record(request: pytest.FixtureRequest, target: Target, name: str, outcome: GateResult | CanaryError) -> GateCheck:
    """A gate's outcome as the test's JUnit properties (which the summary, the reports and the runner read); an
    error fails the test at once, a skipped no-data skips it."""
    from canary_checks.errors import CanaryError
    from canary_checks.gates import Verdict

    props = request.node.user_properties
    if isinstance(outcome, CanaryError):
        props.extend([("gate", name), ("verdict", "error"), ("error", outcome.message)])
        pytest.fail(outcome.message, pytrace=False)
    result = outcome
    props.extend(
        [
            ("gate", result.gate),
            ("verdict", result.verdict.value),
            ("value", "" if result.value is None else f"{result.value:.6g}"),
            ("threshold", f"{result.threshold:g}"),
            ("unit", result.unit),
            ("severity", result.severity.value),
            ("window_seconds", f"{result.window:g}"),
            ("summary", result.summary),
        ]
    )
    props.extend(("query", q) for q in result.queries)
    props.extend((key, _prop(value)) for key, value in result.details.items())
    if result.verdict is Verdict.INCONCLUSIVE and result.fails(strict=target.strict):
        props.append(("decision", "fail" if request.config.option.fail_undecided else "undecided"))
    if result.verdict is Verdict.NO_DATA and not result.fails(strict=True) and result.on_no_data.value == "skip":
        pytest.skip(f"{result.gate}: {result.summary} (on_no_data: skip)")
    return GateCheck(result, target.strict, bool(request.config.option.fail_undecided))


@dataclass
class SmokeCheck:
    """The smoke fixture: :meth:`check` sends one request to the ``--target`` and fails the test on any problem."""

    client: SmokeClient
    properties: list[tuple[str, object]]

    def check(self, request: SmokeRequest) -> Answer:
        __tracebackhide__ = True
        answer = self.client.send(request)
        self.properties.extend(
            [
                ("smoke", request.name),
                ("target", self.client.target),
                ("url", answer.url),
                ("status", str(answer.status)),
                ("elapsed_ms", f"{answer.elapsed * 1000:.0f}"),
                ("served_by", answer.served_by or ""),
                ("verdict", "fail" if answer.problems else "pass"),
                ("summary", "; ".join(answer.problems) or f"{answer.status} in {answer.elapsed * 1000:.0f} ms"),
            ]
        )
        if answer.problems:
            pytest.fail(answer.describe(self.client.target, self.client.headers), pytrace=False)
        return answer


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


@dataclass
class CanaryGate:
    """The ``canary_gate`` fixture: a team's own check in its suite or ``conftest.py``, read from the run's
    Prometheus with the built-in gates' renderer, judged and recorded like a built-in gate (JUnit properties, the
    summary table, the reports, the runner's decision)::

        def test_queue_lag(canary_gate: CanaryGate) -> None:
            canary_gate.evaluate(
                "queue_lag", query='max(kafka_consumergroup_lag{consumergroup="$workload"})',
                threshold=1000, fails="above", unit="messages",
            ).verify()

        def test_refund_share(canary_gate: CanaryGate) -> None:
            refunds = canary_gate.value('sum(increase(refunds_total{pod=~"$pods"}[$window]))')
            orders = canary_gate.value('sum(increase(orders_total{pod=~"$pods"}[$window]))')
            share = 100 * (refunds or 0) / orders if orders else None  # None: no data, never a pass
            canary_gate.record("refund_share", share, threshold=2, fails="above", unit="%").verify()
    """

    request: pytest.FixtureRequest
    target: Target
    source: MetricsSource
    queries: list[str]
    """The queries :meth:`value` and :meth:`query` sent; :meth:`record` lists them with its result."""

    @property
    def name(self) -> str:
        """The gate an unreadable Prometheus is recorded under before :meth:`record` names one: the test's name."""
        return str(getattr(self.request.node, "originalname", self.request.node.name)).removeprefix("test_")

    def query(self, template: str, *, side: str = "canary") -> list[Sample]:
        """The samples of a PromQL template for ``side`` (canary or stable): $namespace, $service, $workload, $pods
        and $window are replaced and escaped as in the built-in gates. Prometheus unreadable: the test errors."""
        from canary_checks.errors import CanaryError

        try:
            promql = self.source.render_template(template, side=side, where=f"canary_gate query of {self.name}")
            self.queries.append(promql)
            return self.source.query(promql, at=self.source.now())
        except CanaryError as e:
            _record(self.request, self.target, self.name, e)
            raise  # not reached: _record fails the test

    def value(self, template: str, *, side: str = "canary") -> float | None:
        """The sum of the template's vector for ``side``; ``None`` when it is empty (no data)."""
        samples = self.query(template, side=side)
        return sum(s.value for s in samples) if samples else None

    def evaluate(self, name: str, **settings: Any) -> GateCheck:
        """Evaluate the custom gate ``name``: as configured under `gates:` (with the stage's and --threshold
        overrides), with ``settings`` (query, threshold, fails, unit, severity, on_no_data, description) over it —
        or defined here by them alone."""
        from canary_checks.config import define_gate
        from canary_checks.errors import CanaryError
        from canary_checks.gates import evaluate, gates_of

        gates = self.target.thresholds
        try:
            if settings:
                gates = define_gate(gates, name, settings, where=f"canary_gate.evaluate({name!r})")
            elif name not in gates_of(gates):
                pytest.fail(
                    f"canary_gate.evaluate({name!r}): no gate {name!r} in the config; define it under gates: in "
                    "canary.yaml, or pass query=, threshold= and fails= here",
                    pytrace=False,
                )
        except CanaryError as e:
            pytest.fail(e.message, pytrace=False)
        config = self.target.config
        outcome = evaluate(config, self.source, [name], stage=self.target.stage, gates=gates)[name]
        return _record(self.request, self.target, name, outcome)

    def record(
        self,
        name: str,
        value: float | None,
        *,
        threshold: float,
        fails: str,
        unit: str = "",
        description: str = "",
        severity: str = "critical",
        on_no_data: str = "fail",
        queries: tuple[str, ...] = (),
    ) -> GateCheck:
        """Judge a value the test computed (``None``: no data, never a pass) as a custom gate ``name`` and record
        it; the queries :meth:`value` sent are listed with it."""
        from pydantic import ValidationError

        from canary_checks.config import Gates, ValueGate, check_custom_name
        from canary_checks.gates import judge_value

        fields = {"threshold": threshold, "fails": fails, "unit": unit, "description": description,
                  "severity": severity, "on_no_data": on_no_data}  # fmt: skip
        try:
            check_custom_name(name, where="gates", builtins=Gates.model_fields, keys=("value recorded by a test",))
            settings = ValueGate.model_validate(fields)
        except ValidationError as e:
            bad = "; ".join(f"{'.'.join(map(str, i['loc']))}: {i['msg']}" for i in e.errors())
            pytest.fail(f"canary_gate.record({name!r}): {bad}", pytrace=False)
        except ValueError as e:
            pytest.fail(f"canary_gate.record: {e}", pytrace=False)
        window = self.target.config.window
        result = judge_value(name, settings, value, window=window, queries=(*self.queries, *queries))
        return _record(self.request, self.target, name, result)


@pytest.fixture
def canary_gate(request: pytest.FixtureRequest, canary_target: Target, canary_source: MetricsSource) -> CanaryGate:
    """A team's own gate in its suite or ``conftest.py``: see :class:`CanaryGate`."""
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


def _prop(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.6g}"
    return str(value)


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
        tr.write_line(f"{'gate':<22} {'verdict':<13} {'value':>18} {'threshold':>14}  severity")
        for gate_name, verdict, value, threshold, severity in self.rows:
            color = {"pass": "green", "fail": "red", "error": "red"}.get(verdict, "yellow")
            tr.write_line(f"{gate_name:<22} {verdict:<13} {value:>18} {threshold:>14}  {severity}", **{color: True})
