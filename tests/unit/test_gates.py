"""Gate evaluation: each verdict from what Prometheus answers (a real HTTP server speaking its API)."""

import pytest

from canary_checks.config import CanaryConfig, Mesh, NoDataPolicy, Severity
from canary_checks.errors import CanaryError, KubeUnreachable, PrometheusQueryError
from canary_checks.gates import GATES, GateResult, Verdict, evaluate
from canary_checks.kube import CanaryHealth, PodHealth
from canary_checks.prometheus import MetricsSource
from tests.conftest import PromStub, healthy

PROMETHEUS_GATES = [name for name, gate in GATES.items() if gate.source == "prometheus"]


def run(config: CanaryConfig, *names: str, stage: int | None = 25) -> dict[str, GateResult]:
    results = evaluate(config, MetricsSource(config), names or PROMETHEUS_GATES, stage=stage)
    out = {}
    for name, result in results.items():
        assert isinstance(result, GateResult), result
        out[name] = result
    return out


def test_a_healthy_canary_passes_every_gate(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    results = run(stub_config)
    assert {n: r.verdict for n, r in results.items()} == dict.fromkeys(PROMETHEUS_GATES, Verdict.PASS)
    assert results["error_rate"].value == 0
    assert results["traffic_split"].value == 25
    assert results["cpu"].value == pytest.approx(20.0)
    assert results["memory"].value == pytest.approx(25.0)


def test_error_rate_and_success_rate_fail_with_the_measured_rate(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r'"auth-canary", response_code=~"5..', 200)
    prom.answer(r'"auth-canary", response_code!~"5..', 800)
    results = run(stub_config, "error_rate", "success_rate", "error_rate_vs_stable")
    assert results["error_rate"].verdict is Verdict.FAIL
    assert "20 % > 5 %" in results["error_rate"].summary
    assert "200 of 1000" in results["error_rate"].summary
    assert results["success_rate"].verdict is Verdict.FAIL and results["success_rate"].value == 80
    assert results["error_rate_vs_stable"].verdict is Verdict.FAIL  # stable had none


def test_error_rate_exactly_at_the_threshold_passes(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r'"auth-canary", response_code=~"5..', 50)
    assert run(stub_config, "error_rate")["error_rate"].verdict is Verdict.PASS


def test_latency_quantiles(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r"histogram_quantile\(0.95.*auth-canary", 975)
    prom.answer(r"histogram_quantile\(0.99.*auth-canary", 2100)
    results = run(stub_config, "latency_p95", "latency_p99", "latency_vs_stable")
    assert results["latency_p95"].verdict is Verdict.FAIL and results["latency_p95"].severity is Severity.WARNING
    assert results["latency_p99"].verdict is Verdict.FAIL and results["latency_p99"].severity is Severity.CRITICAL
    assert "2100 ms > 1000 ms" in results["latency_p99"].summary
    assert results["latency_vs_stable"].value == pytest.approx(975 / 120)


def test_no_traffic_is_never_a_pass(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"', 0)
    prom.answer(r"histogram_quantile.*auth-canary", "NaN")
    results = run(stub_config)
    for name in ("error_rate", "success_rate", "latency_p95", "latency_p99", "error_rate_vs_stable"):
        assert results[name].verdict is Verdict.NO_DATA, name
        assert "received no traffic" in results[name].summary
    assert results["traffic_received"].verdict is Verdict.FAIL
    assert results["traffic_split"].verdict is Verdict.FAIL


def test_absent_series_are_no_data(prom: PromStub, stub_config: CanaryConfig) -> None:
    # Prometheus answers, but with empty vectors for everything.
    results = run(stub_config)
    assert all(r.verdict in (Verdict.NO_DATA, Verdict.FAIL) for r in results.values())
    assert all(r.fails() or r.severity is not Severity.CRITICAL or r.on_no_data is NoDataPolicy.SKIP
               for r in results.values())  # fmt: skip
    assert results["firing_alerts"].verdict is Verdict.NO_DATA  # rules not loaded: skipped, not passed


def test_too_few_requests_is_inconclusive(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"', 7)
    result = run(stub_config, "error_rate")["error_rate"]
    assert result.verdict is Verdict.INCONCLUSIVE
    assert "only 7 canary requests" in result.summary and "need at least 20" in result.summary
    assert result.fails()


def test_traffic_split(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    assert run(stub_config, "traffic_split", stage=5)["traffic_split"].verdict is Verdict.FAIL  # 25 % at stage 5
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"', 3100)
    majority = run(stub_config, "traffic_split", stage=50)["traffic_split"]
    assert majority.verdict is Verdict.PASS  # 50.8 % at stage 50 is within tolerance
    prom.answer(r'istio_requests_total\{[^}]*"auth-stable"', 2000)
    early = run(stub_config, "traffic_split", stage=5)["traffic_split"]
    assert early.verdict is Verdict.FAIL and "off by" in early.summary
    unstaged = run(stub_config, "traffic_split", stage=None)["traffic_split"]
    assert unstaged.verdict is Verdict.NO_DATA and "--stage" in unstaged.summary


def test_pods_restarts_and_crash_loops(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    pod = "auth-canary-abcdefghij-klmno"
    prom.answer(r"kube_pod_status_ready.*auth\\\\-canary", [({"pod": pod}, 0), ({"pod": pod[:-1] + "p"}, 1)])
    prom.answer(r'kube_deployment_spec_replicas.*"auth-canary"', 2)
    prom.answer(r"restarts_total.*auth\\\\-canary", [({"pod": pod, "container": "app"}, 1.7)])
    prom.answer(
        r"waiting_reason.*auth\\\\-canary", [({"pod": pod, "container": "app", "reason": "CrashLoopBackOff"}, 1)]
    )
    results = run(stub_config, "pods_ready", "restarts", "crash_loop")
    assert results["pods_ready"].verdict is Verdict.FAIL
    assert f"not ready: {pod}" in results["pods_ready"].summary
    assert results["restarts"].verdict is Verdict.FAIL and results["restarts"].value == 2
    assert results["crash_loop"].verdict is Verdict.FAIL and "CrashLoopBackOff" in results["crash_loop"].summary


def test_no_pods_is_no_data_not_a_pass(prom: PromStub, stub_config: CanaryConfig) -> None:
    results = run(stub_config, "pods_ready", "restarts", "crash_loop")
    assert {r.verdict for r in results.values()} == {Verdict.NO_DATA}


def test_resources_name_the_busiest_pod_and_need_a_limit(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(
        r"container_cpu_usage_seconds_total.*auth\\\\-canary",
        [({"pod": "auth-canary-a-11111"}, 0.1), ({"pod": "auth-canary-b-22222"}, 0.45)],
    )
    prom.answer(
        r'resource_limits.*auth\\\\-canary.*"cpu"',
        [({"pod": "auth-canary-a-11111"}, 0.5), ({"pod": "auth-canary-b-22222"}, 0.5)],
    )
    cpu = run(stub_config, "cpu")["cpu"]
    assert cpu.verdict is Verdict.FAIL and cpu.value == pytest.approx(90)
    assert "auth-canary-b-22222" in cpu.summary
    prom.answer(r'resource_limits.*auth\\\\-canary.*"cpu"', [])
    unlimited = run(stub_config, "cpu")["cpu"]
    assert unlimited.verdict is Verdict.NO_DATA and "no cpu limit" in unlimited.summary


def test_a_prometheus_error_is_carried_to_the_gate_not_turned_into_a_verdict(
    prom: PromStub, stub_config: CanaryConfig
) -> None:
    healthy(prom)
    prom.answer("response_code", ("error", 503, "too many queries"))
    results = evaluate(stub_config, MetricsSource(stub_config), ["error_rate", "latency_p95"], stage=25)
    assert isinstance(results["error_rate"], PrometheusQueryError)
    assert isinstance(results["latency_p95"], GateResult)


def test_severity_decides_what_fails(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r"histogram_quantile\(0.95.*auth-canary", 975)
    result = run(stub_config, "latency_p95")["latency_p95"]
    assert not result.fails() and result.fails(strict=True)
    memory = CanaryConfig().gates.memory_vs_stable
    assert memory.severity is Severity.INFO


def test_skip_on_no_data_is_still_not_a_pass(prom: PromStub, stub_config: CanaryConfig) -> None:
    config = stub_config.model_copy(
        update={
            "gates": stub_config.gates.model_copy(
                update={"error_rate": stub_config.gates.error_rate.model_copy(update={"on_no_data": NoDataPolicy.SKIP})}
            )
        }
    )
    result = run(config, "error_rate")["error_rate"]
    assert result.verdict is Verdict.NO_DATA and result.breached and not result.fails()


KUBE_GATES = [name for name, gate in GATES.items() if gate.source == "kubernetes"]


def kube_run(config: CanaryConfig, health: CanaryHealth) -> dict[str, GateResult]:
    results = evaluate(config, MetricsSource(config), KUBE_GATES, kube=lambda: health)
    assert all(isinstance(r, GateResult) for r in results.values()), results
    return {n: r for n, r in results.items() if isinstance(r, GateResult)}


def test_kube_gates_pass_on_a_healthy_deployment(stub_config: CanaryConfig) -> None:
    health = CanaryHealth(
        "auth-canary", 2, (PodHealth("auth-canary-a-1", True, 0, ()), PodHealth("auth-canary-a-2", True, 0, ()))
    )
    assert {r.verdict for r in kube_run(stub_config, health).values()} == {Verdict.PASS}


def test_kube_gates_name_the_pods_and_reasons(stub_config: CanaryConfig) -> None:
    health = CanaryHealth(
        "auth-canary",
        2,
        (PodHealth("auth-canary-a-1", False, 4, ("CrashLoopBackOff",)), PodHealth("auth-canary-a-2", True, 0, ())),
        probe_failures={"Readiness": 3, "Liveness": 1},
    )
    results = kube_run(stub_config, health)
    assert {r.verdict for r in results.values()} == {Verdict.FAIL}
    assert "not ready: auth-canary-a-1" in results["kube_pods_ready"].summary
    assert "auth-canary-a-1 x4" in results["kube_restarts"].summary
    assert "auth-canary-a-1 CrashLoopBackOff" in results["kube_waiting"].summary
    assert results["kube_readiness_probes"].value == 3 and results["kube_readiness_probes"].severity is Severity.WARNING
    assert results["kube_liveness_probes"].fails()


def test_kube_gates_without_pods_or_api_never_pass(prom: PromStub, stub_config: CanaryConfig) -> None:
    empty = kube_run(stub_config, CanaryHealth("auth-canary", 1, ()))
    assert {r.verdict for r in empty.values()} == {Verdict.NO_DATA}
    unreachable = evaluate(stub_config, MetricsSource(stub_config), KUBE_GATES, kube=None)
    assert all(isinstance(r, CanaryError) for r in unreachable.values())

    def broken() -> CanaryHealth:
        raise KubeUnreachable("GET deployments/auth-canary got no answer")

    errored = evaluate(stub_config, MetricsSource(stub_config), KUBE_GATES, kube=broken)
    assert all(isinstance(r, KubeUnreachable) for r in errored.values())


def test_a_firing_critical_canary_alert_fails_the_alerts_gate(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    assert run(stub_config, "firing_alerts")["firing_alerts"].verdict is Verdict.PASS
    prom.answer(r"ALERTS\{", [({"alertname": "CanaryPodCrashLooping"}, 1), ({"alertname": "CanaryHighErrorRate"}, 1)])
    result = run(stub_config, "firing_alerts")["firing_alerts"]
    assert result.verdict is Verdict.FAIL and result.value == 2
    assert "CanaryHighErrorRate, CanaryPodCrashLooping" in result.summary


def test_no_traffic_on_the_wrong_meshs_metrics_names_the_mesh_that_has_them(
    prom: PromStub, stub_config: CanaryConfig
) -> None:
    healthy(prom)  # Istio's metrics: istio_requests_total for auth-canary and auth-stable
    linkerd = stub_config.model_copy(update={"mesh": Mesh.LINKERD})
    results = run(linkerd, "error_rate", "success_rate")
    for result in results.values():
        assert result.verdict is Verdict.NO_DATA
        assert result.summary.endswith(
            "no response_total series for auth-canary in orion, but istio_requests_total (Istio) has some: "
            "set mesh: istio (or --mesh istio)"
        )
    probes = [q for q in prom.queries if q.startswith("count(")]
    assert len(probes) == 2, "the meshes are probed once per evaluation, not once per gate"


def test_no_traffic_on_the_right_mesh_says_only_that(prom: PromStub, stub_config: CanaryConfig) -> None:
    healthy(prom)
    prom.answer(r'istio_requests_total\{[^}]*"auth-canary"', 0)  # series exist, with no increase
    (result,) = run(stub_config, "error_rate").values()
    assert result.summary == "the canary received no traffic in the 30s window (auth-canary in orion)"
