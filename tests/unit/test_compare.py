"""The canary-vs-stable comparisons over a stand-in Prometheus: evidence kept across checks, decisions, messages."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

from canary_checks.compare import COMPARISONS, Evidence, evaluate_comparisons
from canary_checks.config import CanaryConfig, load_config
from canary_checks.errors import PrometheusError
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import MetricsSource
from tests.conftest import PYTESTER_ARGS, PromStub, write_config

T0 = 1_800_000_000.0
LE = ("5", "10", "25", "50", "100", "250", "500", "1000", "+Inf")


def config(tmp_path: Path, prom: PromStub, **more: object) -> CanaryConfig:
    return load_config(write_config(tmp_path / "canary.yaml", prometheus={"url": prom.url}, window="30s", **more))


def traffic(prom: PromStub, *, canary: tuple[int, int], stable: tuple[int, int]) -> None:
    """Requests and errors each side answers for any interval."""
    for side, (requests, errors) in (("canary", canary), ("stable", stable)):
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}"\}}', requests)
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}", response_code=~"5..', errors)


def buckets(prom: PromStub, side: str, per_bucket: list[int]) -> None:
    cumulative, total = [], 0
    for n in per_bucket:
        total += n
        cumulative.append(total)
    prom.answer(
        rf'istio_request_duration_milliseconds_bucket\{{[^}}]*"auth-{side}"',
        [({"le": le}, c) for le, c in zip(LE, cumulative, strict=True)],
    )


def run(cfg: CanaryConfig, names: list[str], evidence: Path, at: float) -> dict[str, GateResult]:
    out = evaluate_comparisons(cfg, MetricsSource(cfg), names, evidence_file=evidence, at=at)
    assert all(isinstance(r, GateResult) for r in out.values()), out
    return out  # type: ignore[return-value]


def test_error_evidence_accumulates_across_checks_until_a_worse_canary_fails(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(300, 9), stable=(5700, 57))  # 3 % against 1 %
    verdicts = []
    for i in range(6):
        result = run(cfg, ["compare_errors"], evidence, T0 + 30 * i)["compare_errors"]
        verdicts.append(result.verdict)
        if result.verdict is Verdict.FAIL:
            break
    assert verdicts[0] is Verdict.INCONCLUSIVE  # one 30 s interval: too few errors to tell
    assert verdicts[-1] is Verdict.FAIL
    assert "ratio 3" in result.summary and "confidence sequence" in result.summary
    assert f"{9 * len(verdicts)} of {300 * len(verdicts):,} canary" in result.summary
    assert result.details["intervals"] == len(verdicts)
    assert result.details["p_value"] <= 0.05 and result.details["adjusted_p_value"] <= 0.05
    # the counts span every check, not the window printed under them: the summary says since when, and the way out
    assert f"evidence since {time.strftime('%H:%M:%S', time.localtime(T0 - 30))}" in result.summary
    assert f"{len(verdicts)} check(s) of this canary" in result.summary and "--fresh-evidence" in result.summary
    # each check asks for the interval since the previous one, not the whole window again
    assert any("[30s]" in q for q in prom.queries)
    saved = json.loads(evidence.read_text())
    assert saved["checks"] == len(verdicts) and saved["tests"]["errors"]["canary"] == [
        300.0 * len(verdicts),
        9.0 * len(verdicts),
    ]


def test_an_identical_canary_passes_once_the_counts_suffice_and_never_fails(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(1500, 15), stable=(28500, 285))
    seen = [run(cfg, ["compare_errors"], evidence, T0 + 30 * i)["compare_errors"].verdict for i in range(8)]
    assert Verdict.FAIL not in seen
    assert seen[-1] is Verdict.PASS


def test_evidence_for_another_canary_or_too_old_starts_afresh(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(300, 3), stable=(5700, 57))
    run(cfg, ["compare_errors"], evidence, T0)
    run(cfg, ["compare_errors"], evidence, T0 + 30)
    assert json.loads(evidence.read_text())["checks"] == 2
    later = run(cfg, ["compare_errors"], evidence, T0 + 30 + 7200)["compare_errors"]
    assert "new evidence (the last check was 7200 s ago" in later.details["evidence"]
    other = config(tmp_path, prom, service="user")
    fresh = run(other, ["compare_errors"], evidence, T0 + 7260)["compare_errors"]
    assert "another canary" in fresh.details["evidence"]
    evidence.write_text("{not json")
    broken = run(cfg, ["compare_errors"], evidence, T0 + 7290)["compare_errors"]
    assert "unreadable" in broken.details["evidence"]
    assert Evidence.from_json(evidence.read_text()).checks == 1


def test_a_slower_canary_fails_the_latency_comparison_with_bucket_bounds(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(2000, 0), stable=(38000, 0))
    buckets(prom, "stable", [0, 100, 2000, 17000, 17000, 1500, 300, 100, 0])  # p95 in the 100 ms bucket
    buckets(prom, "canary", [0, 0, 50, 600, 700, 500, 120, 30, 0])  # slower: 32.5 % over 100 ms
    names = ["compare_latency_p50", "compare_latency_p95", "compare_latency_p99"]
    results = run(cfg, names, evidence, T0)
    p95 = results["compare_latency_p95"]
    assert p95.verdict is Verdict.FAIL
    assert "requests slower than 100 ms (stable's p95 bucket)" in p95.summary
    assert re.search(r"p95 canary in \(\d+, (\d+|inf)\] ms, stable in \(\d+, \d+\] ms", p95.summary), p95.summary
    assert p95.details["bound_ms"] == 100.0
    assert Evidence.from_json(evidence.read_text()).bounds["latency_p95"] == 100.0
    # the bucket bound was fixed from stable's data before the evidence started
    assert any(t == f"{T0 - 30:.3f}" for t in prom.times)


def test_an_undecided_latency_comparison_speaks_of_slow_requests_not_errors(tmp_path: Path, prom: PromStub) -> None:
    traffic(prom, canary=(40, 0), stable=(38000, 0))
    buckets(prom, "stable", [0, 100, 2000, 17000, 17000, 1500, 300, 100, 0])
    buckets(prom, "canary", [0, 0, 2, 18, 15, 4, 1, 0, 0])  # 40 requests: too few to tell
    p95 = run(config(tmp_path, prom), ["compare_latency_p95"], tmp_path / "evidence.json", T0)["compare_latency_p95"]
    assert p95.verdict is Verdict.INCONCLUSIVE, p95.summary
    assert "only a canary share of requests slower than 100 ms of" in p95.summary
    assert "canary error rate" not in p95.summary


def test_custom_mesh_without_buckets_has_no_latency_data_and_says_why(tmp_path: Path, prom: PromStub) -> None:
    queries = {"requests": "sum(r)", "errors": "sum(e)", "successes": "sum(s)", "latency": "sum(l)"}
    cfg = config(tmp_path, prom, mesh="custom", queries=queries)
    result = run(cfg, ["compare_latency_p95"], tmp_path / "e.json", T0)["compare_latency_p95"]
    assert result.verdict is Verdict.NO_DATA and "queries.buckets" in result.summary
    assert result.breached and result.fails(strict=True)  # no data is never a pass


def test_cpu_is_compared_only_at_comparable_load_per_pod(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom, statistics={"sample_interval": "5s"})
    for side, requests in (("canary", 300), ("stable", 5700)):
        prom.answer(rf'istio_requests_total\{{[^}}]*"auth-{side}"\}}', requests)
        prom.answer(rf"container_cpu_usage_seconds_total.*auth\\\\-{side}", [({"pod": f"auth-{side}-a-b"}, 0.2)])
    result = run(cfg, ["compare_cpu"], tmp_path / "e.json", T0)["compare_cpu"]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "comparable load per pod" in result.summary
    # at 50 % with one pod each, a canary burning twice the CPU per request is High
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"\}', 3000)
    prom.answer(r'istio_requests_total\{[^}]*"auth-stable"\}', 3000)
    prom.answer(
        r"\(sum\(increase\(container_cpu.*auth\\\\-canary.*\) / \(",
        [({}, [0.020 + 0.0005 * (i % 3) for i in range(7)])],
    )
    prom.answer(
        r"\(sum\(increase\(container_cpu.*auth\\\\-stable.*\) / \(",
        [({}, [0.010 + 0.0005 * (i % 3) for i in range(7)])],
    )
    result = run(cfg, ["compare_cpu"], tmp_path / "e2.json", T0)["compare_cpu"]
    assert result.verdict is Verdict.FAIL, result.summary
    assert result.value == pytest.approx(2.0, rel=0.1)
    assert "CPU seconds per request" in result.summary and "High" in result.summary


def test_a_prometheus_error_makes_the_comparison_error_never_pass(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    prom.answer("istio_requests_total", ("error", 422, "query processing would load too many samples"))
    out = evaluate_comparisons(cfg, MetricsSource(cfg), ["compare_errors"], evidence_file=tmp_path / "e.json", at=T0)
    assert isinstance(out["compare_errors"], PrometheusError)
    assert "too many samples" in out["compare_errors"].message


def test_every_result_states_the_multiplicity_correction(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom, statistics={"correction": "fdr"})
    traffic(prom, canary=(300, 3), stable=(5700, 57))
    names = list(COMPARISONS)
    out = evaluate_comparisons(cfg, MetricsSource(cfg), names, evidence_file=tmp_path / "e.json", at=T0)
    for result in out.values():
        assert isinstance(result, GateResult)
        assert "false discovery rate ≤ 0.05 across 6 comparisons (Benjamini–Hochberg)" in result.summary
        assert result.details["correction"].startswith("false discovery rate")


def test_the_suite_reports_p_value_interval_and_counts_in_junit(pytester: pytest.Pytester, prom: PromStub) -> None:
    suite = Path(__file__).parents[2] / "canary_checks" / "suites" / "gate" / "test_compare.py"
    pytester.makepyfile(test_canary_compare=suite.read_text())
    pytester.makefile(".yaml", canary=f"service: auth\nnamespace: orion\nprometheus: {{url: '{prom.url}'}}\n")
    traffic(prom, canary=(3000, 300), stable=(57000, 570))  # 10 % against 1 %
    result = pytester.runpytest(*PYTESTER_ARGS, "-k", "errors", "--junitxml", "out.xml", "--canary-evidence", "ev.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*comparisons at 95% confidence*",
            "*compare_errors: FAIL (critical)*canary error rate 10 % vs stable 1 %: ratio 10*",
        ]
    )
    xml = (pytester.path / "out.xml").read_text()
    for prop in ("p_value", "adjusted_p_value", "interval_low", "interval_high", "canary_requests", "e_value"):
        assert f'name="{prop}"' in xml
    assert json.loads((pytester.path / "ev.json").read_text())["checks"] == 1
    again = pytester.runpytest(*PYTESTER_ARGS, "-k", "errors", "--canary-evidence", "ev.json", "--fresh-evidence")
    again.assert_outcomes(failed=1)
    assert json.loads((pytester.path / "ev.json").read_text())["checks"] == 1  # started afresh
    assert not math.isnan(float(re.search(r'name="p_value" value="([^"]+)"', xml).group(1)))  # type: ignore[union-attr]


def test_damaged_evidence_starts_afresh_says_so_and_a_tenfold_canary_still_fails(
    tmp_path: Path, prom: PromStub
) -> None:
    """A saved state with a NaN log-likelihood once made a 10x canary pass; now it is refused and said so."""
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(300, 30), stable=(5700, 57))  # 10 % against 1 %
    run(cfg, ["compare_errors"], evidence, T0)
    saved = json.loads(evidence.read_text())
    saved["tests"]["errors"]["max_log_e"] = math.nan
    saved["tests"]["errors"]["a"] = math.nan
    evidence.write_text(json.dumps(saved))
    results = [run(cfg, ["compare_errors"], evidence, T0 + 30 * i)["compare_errors"] for i in range(1, 6)]
    first = results[0]
    assert "damaged" in first.details["evidence"] and "max_log_e is nan" in first.summary  # said where people read
    verdicts = [r.verdict for r in results]
    assert Verdict.PASS not in verdicts and verdicts[-1] is Verdict.FAIL
    assert json.loads(evidence.read_text())["checks"] == 5  # started afresh at the damaged file


def test_an_impossible_interval_is_reported_with_its_reason(tmp_path: Path, prom: PromStub) -> None:
    cfg = config(tmp_path, prom)
    evidence = tmp_path / "evidence.json"
    traffic(prom, canary=(300, 500), stable=(5700, 57))  # more errors than requests: a broken query or counter
    result = run(cfg, ["compare_errors"], evidence, T0)["compare_errors"]
    assert result.verdict is Verdict.NO_DATA
    assert "errors (500) exceed requests (300)" in result.summary
    assert "received no requests" not in result.summary
    assert "stable's side kept" in result.details["rejected_intervals"]
