"""Custom gates and custom comparisons: config validation, the queries they send, their decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from canary_checks.compare import evaluate_comparisons
from canary_checks.config import CanaryConfig, Severity, load_config, parse_gate_flags
from canary_checks.errors import ConfigError
from canary_checks.gates import GATES, GateResult, Verdict, evaluate
from canary_checks.prometheus import MetricsSource
from tests.conftest import PromStub, healthy, write_config

T0 = 1_800_000_000.0
CHECKOUT = 'sum(rate(checkout_failed_total{namespace="$namespace", pod=~"$pods"}[$window]))'
LAG = 'max by (partition) (kafka_consumergroup_lag{namespace="$namespace", consumergroup="$workload"})'
FAILED = 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods", outcome="failed"}[$window]))'
TOTAL = 'sum(increase(checkouts_total{namespace="$namespace", pod=~"$pods"}[$window]))'


def gates_config(tmp_path: Path, prom: PromStub, **more: Any) -> CanaryConfig:
    gates = {
        "checkout_failures": {"query": CHECKOUT, "threshold": 0.5, "fails": "above", "unit": "/s"},
        "queue_lag": {"query": LAG, "threshold": 1000, "fails": "above", "unit": "messages",
                      "description": "consumer lag", "severity": "warning"},
        "checkout_throughput": {"query": CHECKOUT.replace("checkout_failed", "checkout_done"), "threshold": 1,
                                "fails": "below", "on_no_data": "skip"},
    }  # fmt: skip
    return load_config(
        write_config(tmp_path / "canary.yaml", prometheus={"url": prom.url}, window="30s", gates=gates, **more)
    )


def problem(tmp_path: Path, **settings: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path / "canary.yaml", **settings))
    return caught.value.message


def only(results: dict[str, GateResult | Any]) -> dict[str, GateResult]:
    assert all(isinstance(r, GateResult) for r in results.values()), results
    return results


# ---- config --------------------------------------------------------------------------------------------------


def test_a_custom_gate_with_a_builtin_name_is_refused_naming_the_fix(tmp_path: Path) -> None:
    message = problem(tmp_path, gates={"error_rate": {"query": CHECKOUT, "threshold": 1, "fails": "above"}})
    assert "gates: error_rate is a built-in gate, which takes no query; give yours another name" in message
    message = problem(tmp_path, statistics={"errors": {"numerator": FAILED, "denominator": TOTAL}})
    assert "statistics: errors is a built-in comparison" in message


def test_a_misspelt_builtin_gate_is_not_taken_for_a_custom_one(tmp_path: Path) -> None:
    message = problem(tmp_path, gates={"succes_rate": {"threshold": 90}})
    assert "'succes_rate' is not a built-in gate (did you mean success_rate?); a custom one needs query" in message
    message = problem(tmp_path, statistics={"confidnce": 0.9})
    assert "did you mean confidence?" in message


@pytest.mark.parametrize(
    ("gate", "expected"),
    [
        ({"query": 'sum(x{ns="$namespce", pod=~"$pods"})'}, "gates.checkout.query: unknown placeholder $namespce"),
        ({"query": "sum(rate(checkouts_total[$window]))"}, "does not tell canary from stable"),
        ({"query": 'x{pod=~"$pods"} > $ 1'}, "write $$ for a literal $"),
        ({"fails": "up"}, "gates.checkout.fails: Input should be 'above' or 'below'"),
        ({"fails": None}, "gates.checkout.fails"),
        ({"threshold": "nan"}, "gates.checkout.threshold"),
        ({"severity": "fatal"}, "gates.checkout.severity"),
    ],
)
def test_a_bad_custom_gate_names_its_key(tmp_path: Path, gate: dict[str, Any], expected: str) -> None:
    settings = {"query": CHECKOUT, "threshold": 1, "fails": "above", **gate}
    assert expected in problem(tmp_path, gates={"checkout": {k: v for k, v in settings.items() if v is not None}})


def test_a_custom_name_must_fit_test_ids_and_flags(tmp_path: Path) -> None:
    for name in ("Checkout", "checkout-failures", "compare_checkout"):
        assert "a custom name is lowercase letters" in problem(
            tmp_path, gates={name: {"query": CHECKOUT, "threshold": 1, "fails": "above"}}
        )


def test_stage_gates_and_the_threshold_flag_change_a_custom_gate(tmp_path: Path, prom: PromStub) -> None:
    cfg = gates_config(tmp_path, prom, stage_gates={5: {"checkout_failures": {"threshold": 2}}})
    assert cfg.gates_for(25).checkout_failures.threshold == 0.5
    assert cfg.gates_for(5).checkout_failures.threshold == 2
    flags = parse_gate_flags(["checkout_failures=3", "queue_lag.severity=critical"])
    assert cfg.gates_for(5, flags).checkout_failures.threshold == 3
    assert cfg.gates_for(5, flags).queue_lag.severity is Severity.CRITICAL
    with pytest.raises(ConfigError) as caught:
        cfg.gates_for(5, parse_gate_flags(["checkout_failures=lots"]))
    assert "--threshold: checkout_failures.threshold: expected a number (got 'lots')" in caught.value.message


# ---- gates ---------------------------------------------------------------------------------------------------


def test_custom_gates_render_like_the_builtins_and_judge_their_side(tmp_path: Path, prom: PromStub) -> None:
    cfg = gates_config(tmp_path, prom)
    healthy(prom)
    prom.answer(r"checkout_failed_total", 0.8)
    prom.answer(r"checkout_done_total", 4)
    prom.answer(r"kafka_consumergroup_lag", [({"partition": "0"}, 20), ({"partition": "3"}, 2400)])
    names = ["checkout_failures", "queue_lag", "checkout_throughput", "error_rate"]
    results = only(evaluate(cfg, MetricsSource(cfg), names, stage=25))
    failures = results["checkout_failures"]
    assert failures.verdict is Verdict.FAIL and failures.severity is Severity.CRITICAL
    assert failures.summary == "canary checkout_failures 0.8 /s > 0.5 /s"
    # the same placeholders, validation and escaping as the built-in gates' queries
    assert failures.queries == (
        'sum(rate(checkout_failed_total{namespace="orion", pod=~"auth\\\\-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"}[30s]))',
    )
    lag = results["queue_lag"]
    assert lag.verdict is Verdict.FAIL and lag.value == 2400 and lag.unit == "messages"
    assert "canary consumer lag 2400 messages > 1000 messages (the highest of 2 series: {partition=3})" in lag.summary
    assert 'consumergroup="auth-canary"' in lag.queries[0]
    assert results["checkout_throughput"].verdict is Verdict.PASS
    assert "4 >= 1" in results["checkout_throughput"].summary
    assert results["error_rate"].verdict is Verdict.PASS
    assert "checkout_failures" not in GATES  # one config's custom gates never leak into the built-in registry


def test_a_custom_gate_below_its_threshold_fails_when_it_fails_below(tmp_path: Path, prom: PromStub) -> None:
    cfg = gates_config(tmp_path, prom)
    prom.answer(r"checkout_done_total", 0.25)
    result = only(evaluate(cfg, MetricsSource(cfg), ["checkout_throughput"]))["checkout_throughput"]
    assert result.verdict is Verdict.FAIL and "canary checkout_throughput 0.25 < 1" in result.summary


def test_no_series_is_no_data_never_a_pass(tmp_path: Path, prom: PromStub) -> None:
    cfg = gates_config(tmp_path, prom)
    results = only(evaluate(cfg, MetricsSource(cfg), ["checkout_failures", "checkout_throughput"]))
    failures = results["checkout_failures"]
    assert failures.verdict is Verdict.NO_DATA and failures.fails()
    assert "the query returned no series for auth-canary in orion" in failures.summary
    skipped = results["checkout_throughput"]
    assert skipped.verdict is Verdict.NO_DATA and not skipped.fails()  # on_no_data: skip — still not a pass


def test_a_prometheus_error_is_the_custom_gates_error(tmp_path: Path, prom: PromStub) -> None:
    cfg = gates_config(tmp_path, prom)
    prom.answer(r"checkout_failed_total", ("error", 400, "parse error at char 12"))
    outcome = evaluate(cfg, MetricsSource(cfg), ["checkout_failures"])["checkout_failures"]
    assert not isinstance(outcome, GateResult) and "parse error at char 12" in outcome.message


# ---- comparisons ---------------------------------------------------------------------------------------------


def test_a_custom_comparison_is_the_sequential_test_on_its_own_counts(tmp_path: Path, prom: PromStub) -> None:
    statistics = {"checkouts": {"numerator": FAILED, "denominator": TOTAL, "description": "checkout failure rate"}}
    cfg = load_config(
        write_config(tmp_path / "canary.yaml", prometheus={"url": prom.url}, window="30s", statistics=statistics)
    )
    evidence = tmp_path / "evidence.json"
    for side, (total, failed) in (("canary", (300, 30)), ("stable", (3000, 30))):  # 10 % against 1 %
        prom.answer(rf"checkouts_total.*auth\\\\-{side}", total)  # the later rule wins
        prom.answer(rf'checkouts_total.*auth\\\\-{side}.*outcome="failed"', failed)
    verdicts = []
    for i in range(4):
        out = evaluate_comparisons(cfg, MetricsSource(cfg), ["compare_checkouts", "compare_errors"],
                                   evidence_file=evidence, at=T0 + 30 * i)  # fmt: skip
        result = out["compare_checkouts"]
        assert isinstance(result, GateResult)
        verdicts.append(result.verdict)
    assert verdicts[-1] is Verdict.FAIL, result.summary
    assert result.summary.startswith("canary checkout failure rate 10 % vs stable 1 %: ratio 10")
    assert result.severity is Severity.CRITICAL and result.threshold == 1.0
    assert any('outcome="failed"' in q and "[30s]" in q for q in result.queries)
    # its evidence accumulates in the same file as the built-in comparisons', under its own name
    saved = json.loads(evidence.read_text())
    assert saved["tests"]["checkouts"]["canary"] == [300.0 * 4, 30.0 * 4]
    assert "errors" in saved["tests"]


# ---- the runner ----------------------------------------------------------------------------------------------

PASSING_SUITE = """
def test_error_rate(record_property):
    record_property("gate", "error_rate")
    record_property("verdict", "pass")
"""


def test_the_runner_polls_a_critical_custom_gate_and_rolls_back_within_the_stage(
    tmp_path: Path, prom: PromStub
) -> None:
    from canary_checks.runner import Rollout, RolloutOptions
    from tests.unit.test_runner_undecided import Memory

    gates = {"checkout_failures": {"query": CHECKOUT, "threshold": 0.5, "fails": "above", "unit": "/s"},
             "queue_lag": {"query": LAG, "threshold": 10, "fails": "above", "severity": "warning"}}  # fmt: skip
    cfg = load_config(write_config(tmp_path / "canary.yaml", service="cart", namespace="shop",
                                   prometheus={"url": prom.url}, gates=gates))  # fmt: skip
    prom.answer(r"kafka_consumergroup_lag", 5000)  # a warning gate: never polled, never rolls back
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_stage.py").write_text(PASSING_SUITE)
    memory, lines = Memory(), []
    opts = RolloutOptions(service="cart", image="shop/cart:2", steps=(5, 100), step_duration=30, poll_interval=0.2,
                          suite=suite, reports=tmp_path / "reports", auto_promote=True)  # fmt: skip
    prom.answer(r"checkout_failed_total", 0.9)
    runner = Rollout(cfg, memory, memory, opts, source=MetricsSource(cfg), echo=lines.append,
                     on_wait=lambda *a: None)  # fmt: skip
    code = runner.run()
    assert code == 1 and memory.weight == 0 and memory.replicas == 0
    said = "\n".join(lines)
    assert (
        "critical gates failed during stage 5 %: checkout_failures (canary checkout_failures 0.9 /s > 0.5 /s)" in said
    )
    assert "queue_lag" not in said


# ---- the monitor ---------------------------------------------------------------------------------------------


def test_the_monitor_shows_a_custom_gate_per_side_with_its_threshold_and_csv_column(
    tmp_path: Path, prom: PromStub
) -> None:
    import io

    import pandas as pd
    from rich.console import Console

    from canary_checks.monitor import CsvExport, Monitor, Status, dashboard, plain_line

    healthy(prom)
    prom.answer(r'kafka_consumergroup_lag\{[^}]*"auth-canary"', 2400)
    prom.answer(r'kafka_consumergroup_lag\{[^}]*"auth-stable"', 30)
    cfg = gates_config(tmp_path, prom)
    snap = Monitor(cfg).sample()
    canary, stable = snap.readings["canary"]["custom_queue_lag"], snap.readings["stable"]["custom_queue_lag"]
    assert (canary.value, canary.status) == (2400, Status.WARNING)  # a warning gate breached: yellow
    assert (stable.value, stable.status) == (30, Status.OK)  # stable judged by the same gate
    assert snap.readings["canary"]["custom_checkout_failures"].status == Status.NO_DATA
    assert snap.recommendation.action == "hold"  # the critical custom gate has no data: never a promote
    assert "checkout_failures: no data for the canary's checkout_failures" in snap.recommendation.reason
    console = Console(file=io.StringIO(), width=200)
    console.print(dashboard(cfg, snap, interval=5, next_in=5))
    screen = console.file.getvalue()  # type: ignore[attr-defined]
    assert "consumer lag" in screen and "≤ 1000 messages (warning)" in screen
    assert "≥ 1 (critical)" in screen  # checkout_throughput fails below; it has no unit
    assert "consumer lag 30.0messages OK / 2400messages WARNING" in plain_line(snap)
    export = CsvExport(tmp_path / "monitor.csv")
    export.write(snap)
    frame = pd.read_csv(tmp_path / "monitor.csv")
    assert list(frame["custom_queue_lag"]) == [30, 2400]
    assert list(frame["custom_queue_lag_status"].fillna("")) == ["OK", "WARNING"]


# ---- the docs ------------------------------------------------------------------------------------------------


def test_the_documented_custom_gates_and_comparison_are_valid_config(tmp_path: Path) -> None:
    import re

    text = (Path(__file__).parents[2] / "docs" / "gates.md").read_text().split("## Custom gates", 1)[1]
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if b.startswith(("gates:", "statistics:"))]
    assert len(blocks) == 2
    for block in blocks:
        (tmp_path / "canary.yaml").write_text(block)
        cfg = load_config(tmp_path / "canary.yaml")
        assert cfg.gates.custom() or cfg.statistics.custom()
    (tmp_path / "canary.yaml").write_text(blocks[0])
    gates = load_config(tmp_path / "canary.yaml").gates
    assert set(gates.custom()) == {"checkout_failures", "orders_lag", "grpc_errors"}
    (python,) = re.findall(r"```python\n(.*?)```", text, re.S)
    compile(python, "docs/gates.md", "exec")


def test_a_builtin_unit_bounds_a_custom_threshold_as_it_bounds_the_builtins(tmp_path: Path) -> None:
    message = problem(
        tmp_path, gates={"checkout": {"query": CHECKOUT, "threshold": 150, "fails": "above", "unit": "%"}}
    )
    assert "gates.checkout: threshold: expected a percent from 0 to 100 (unit %); got 150" in message
    load_config(write_config(tmp_path / "canary.yaml", gates={"lag": {"query": LAG, "threshold": -5, "fails": "below",
                                                                      "unit": "°C"}}))  # fmt: skip


def test_a_custom_comparison_without_counts_is_no_data_in_its_own_words(tmp_path: Path, prom: PromStub) -> None:
    statistics = {"checkouts": {"numerator": FAILED, "denominator": TOTAL, "description": "checkout failure rate"}}
    cfg = load_config(
        write_config(tmp_path / "canary.yaml", prometheus={"url": prom.url}, window="30s", statistics=statistics)
    )
    prom.answer(r"checkouts_total.*auth\\\\-stable", 3000)
    prom.answer(r'checkouts_total.*auth\\\\-stable.*outcome="failed"', 3)
    out = evaluate_comparisons(cfg, MetricsSource(cfg), ["compare_checkouts"], evidence_file=tmp_path / "e.json", at=T0)
    result = out["compare_checkouts"]
    assert isinstance(result, GateResult) and result.verdict is Verdict.NO_DATA and result.fails()
    assert result.summary.startswith("the canary received no events; 0 of 0 canary vs 3 of 3,000 stable")
