"""The checks a test receives from the plugin's fixtures — :class:`GateCheck` (``gate``, ``custom_gate``,
``custom_comparison``), :class:`CanaryGate` (``canary_gate``), :class:`SmokeCheck` (``smoke``) — and how an outcome
becomes the test's JUnit properties, which the summary, the reports, the webhooks and the runner read.

Users import these names from ``canary_checks``; the plugin loads this module only in a session of checks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from canary_checks.errors import CanaryError

if TYPE_CHECKING:
    from canary_checks.config import SmokeRequest
    from canary_checks.gates import GateResult
    from canary_checks.prometheus import MetricsSource, Sample
    from canary_checks.session import Target
    from canary_checks.smoke import Answer, SmokeClient

__all__ = ["CanaryGate", "GateCheck", "GateWarning", "SmokeCheck", "check", "record_outcome"]


class GateWarning(UserWarning):
    """A warning or info gate was breached; it does not fail the run unless ``--strict-gates``."""


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


def check(request: pytest.FixtureRequest, target: Target, results: dict[str, Any]) -> GateCheck:
    """The evaluated gate or comparison named by the test's parameter, recorded as the test's properties."""
    from canary_checks.compare import comparisons_of, evaluate_comparisons
    from canary_checks.gates import evaluate, gates_of
    from canary_checks.prometheus import MetricsSource
    from canary_checks.session import kube_reader

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
            kube=kube_reader(target),
        )[name]
    return record_outcome(request, target, name, outcome)


def record_outcome(
    request: pytest.FixtureRequest, target: Target, name: str, outcome: GateResult | CanaryError
) -> GateCheck:
    """A gate's outcome as the test's JUnit properties (which the summary, the reports and the runner read); an
    error fails the test at once, a skipped no-data skips it."""
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
        try:
            promql = self.source.render_template(template, side=side, where=f"canary_gate query of {self.name}")
            self.queries.append(promql)
            return self.source.query(promql, at=self.source.now())
        except CanaryError as e:
            record_outcome(self.request, self.target, self.name, e)
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
        return record_outcome(self.request, self.target, name, outcome)

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
        return record_outcome(self.request, self.target, name, result)


def _prop(value: Any) -> str:
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.6g}"
    return str(value)
