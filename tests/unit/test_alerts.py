"""The canary PrometheusRule, checked by promtool: syntax, and unit tests with input series under which each alert
fires and under which it stays silent; each recording rule's value on known input."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_checks.config import DEFAULT_FAILURE_CODES, CanaryConfig, Gates, Mesh
from canary_checks.manifests import render_alerts
from canary_checks.prometheus import profile_for

NS, SVC = "orion", "auth"
POD = {"canary": "auth-canary-7d9f8c6b5-x2k9p", "stable": "auth-stable-6c8d7b5f4-a1b2c"}
MINUTES = 40


def requests(mesh: Mesh, side: str, code: str) -> str:
    if mesh is Mesh.ISTIO:
        return (
            f'istio_requests_total{{reporter="destination", destination_workload="{SVC}-{side}", '
            f'destination_workload_namespace="{NS}", response_code="{code}"}}'
        )
    classification = "failure" if code.startswith("5") else "success"
    return (
        f'response_total{{direction="inbound", deployment="{SVC}-{side}", namespace="{NS}", '
        f'classification="{classification}", status_code="{code}"}}'
    )


def bucket(mesh: Mesh, side: str, le: str) -> str:
    if mesh is Mesh.ISTIO:
        return (
            f'istio_request_duration_milliseconds_bucket{{reporter="destination", destination_workload="{SVC}-{side}", '
            f'destination_workload_namespace="{NS}", le="{le}"}}'
        )
    return f'response_latency_ms_bucket{{direction="inbound", deployment="{SVC}-{side}", namespace="{NS}", le="{le}"}}'


def per_minute(rate: float) -> str:
    return f"0+{rate:g}x{MINUTES}"


def latency(mesh: Mesh, side: str, counts: dict[str, float]) -> dict[str, str]:
    """Cumulative bucket increments per minute, e.g. {"50": 300, "100": 600, ...}."""
    return {bucket(mesh, side, le): per_minute(n) for le, n in counts.items()}


HEALTHY_LATENCY = {"50": 300, "100": 600, "500": 600, "1000": 600, "2500": 600, "+Inf": 600}


def healthy(mesh: Mesh) -> dict[str, str]:
    """A canary at 10 % of traffic, as good as stable: 600 req/min vs 5400, no errors, p95 95 ms."""
    series = {
        requests(mesh, "canary", "200"): per_minute(600),
        requests(mesh, "canary", "500"): per_minute(0),
        requests(mesh, "stable", "200"): per_minute(5400),
        requests(mesh, "stable", "500"): per_minute(0),
        **latency(mesh, "canary", HEALTHY_LATENCY),
        **latency(mesh, "stable", {le: 9 * n for le, n in HEALTHY_LATENCY.items()}),
        f'kube_deployment_created{{namespace="{NS}", deployment="{SVC}-canary"}}': f"0x{MINUTES}",
        f'kube_deployment_spec_replicas{{namespace="{NS}", deployment="{SVC}-canary"}}': f"1x{MINUTES}",
        f'kube_deployment_status_replicas_available{{namespace="{NS}", deployment="{SVC}-canary"}}': f"1x{MINUTES}",
    }
    for pod in POD.values():
        c = f'namespace="{NS}", pod="{pod}", container="app"'
        series |= {
            f'kube_pod_status_ready{{namespace="{NS}", pod="{pod}", condition="true"}}': f"1x{MINUTES}",
            f"container_cpu_usage_seconds_total{{{c}}}": per_minute(7.5),  # 0.125 core
            f'kube_pod_container_resource_limits{{{c}, resource="cpu", unit="core"}}': f"0.5x{MINUTES}",
            f"container_memory_working_set_bytes{{{c}}}": f"{100 * 2**20}x{MINUTES}",
            f'kube_pod_container_resource_limits{{{c}, resource="memory", unit="byte"}}': f"{256 * 2**20}x{MINUTES}",
            f'prober_probe_total{{{c}, probe_type="Readiness", result="successful"}}': per_minute(6),
            f'prober_probe_total{{{c}, probe_type="Readiness", result="failed"}}': per_minute(0),
            f'prober_probe_total{{{c}, probe_type="Liveness", result="successful"}}': per_minute(6),
            f'prober_probe_total{{{c}, probe_type="Liveness", result="failed"}}': per_minute(0),
        }
    return series


def scenarios(mesh: Mesh) -> dict[str, tuple[dict[str, str | None], str]]:
    """alert → (changes to the healthy series; None removes one, eval time)."""
    c = f'namespace="{NS}", pod="{POD["canary"]}", container="app"'
    errors = {requests(mesh, "canary", "200"): per_minute(540), requests(mesh, "canary", "500"): per_minute(60)}
    return {
        "CanaryHighErrorRate": (errors, "10m"),
        "CanaryErrorRateHigherThanStable": (
            {
                requests(mesh, "canary", "200"): per_minute(582),
                requests(mesh, "canary", "500"): per_minute(18),  # 3 %: under the 5 % gate
                requests(mesh, "stable", "200"): per_minute(5346),
                requests(mesh, "stable", "500"): per_minute(54),  # 1 %
            },
            "12m",
        ),
        "CanaryHighLatencyP95": (
            latency(mesh, "canary", {"50": 0, "100": 0, "500": 0, "1000": 600, "2500": 600, "+Inf": 600}),
            "12m",
        ),
        "CanaryHighLatencyP99": (
            latency(mesh, "canary", {"50": 300, "100": 580, "500": 585, "1000": 588, "2500": 600, "+Inf": 600}),
            "12m",
        ),
        "CanaryLatencyHigherThanStable": (
            latency(mesh, "canary", {"50": 0, "100": 300, "500": 600, "1000": 600, "2500": 600, "+Inf": 600}),
            "12m",
        ),
        "CanaryLowSuccessRate": (errors, "10m"),
        "CanaryPodsNotReady": (
            {f'kube_pod_status_ready{{namespace="{NS}", pod="{POD["canary"]}", condition="true"}}': f"0x{MINUTES}"},
            "10m",
        ),
        "CanaryHighCPUUsage": ({f"container_cpu_usage_seconds_total{{{c}}}": per_minute(27)}, "12m"),
        "CanaryHighMemoryUsage": ({f"container_memory_working_set_bytes{{{c}}}": f"{220 * 2**20}x{MINUTES}"}, "12m"),
        "CanaryMemoryUsageHigherThanStable": (
            {f"container_memory_working_set_bytes{{{c}}}": f"{200 * 2**20}x{MINUTES}"},  # 78 % of limit, 2x stable
            "15m",
        ),
        "CanaryReceivingNoTraffic": (
            {requests(mesh, "canary", "200"): f"0x{MINUTES}", requests(mesh, "canary", "500"): f"0x{MINUTES}"},
            "12m",
        ),
        "CanaryTrafficSplitMisconfigured": ({requests(mesh, "canary", "200"): per_minute(6000)}, "12m"),
        "CanaryVersionDivergence": (
            {f'kube_pod_status_ready{{namespace="{NS}", pod="{POD["stable"]}", condition="true"}}': None},
            "15m",
        ),
        "CanaryPodCrashLooping": (
            {f'kube_pod_container_status_waiting_reason{{{c}, reason="CrashLoopBackOff"}}': f"1x{MINUTES}"},
            "5m",
        ),
        "CanaryReadinessProbesFailing": (
            {f'prober_probe_total{{{c}, probe_type="Readiness", result="failed"}}': per_minute(1)},
            "12m",
        ),
        "CanaryLivenessProbesFailing": (
            {f'prober_probe_total{{{c}, probe_type="Liveness", result="failed"}}': per_minute(1)},
            "10m",
        ),
        "CanaryRolloutStalled": (
            {f'kube_deployment_status_replicas_available{{namespace="{NS}", deployment="{SVC}-canary"}}': "0x40"},
            "20m",
        ),
        "CanaryAutomatedRollbackRecommended": (errors, "10m"),
    }


def input_series(series: dict[str, str]) -> list[dict[str, str]]:
    return [{"series": name, "values": values} for name, values in series.items()]


def unit_tests(mesh: Mesh) -> dict[str, Any]:
    alerts = render_alerts(mesh)["spec"]["groups"][1]["rules"]
    severity = {a["alert"]: a["labels"]["severity"] for a in alerts}
    base = healthy(mesh)
    groups: list[dict[str, Any]] = [
        {
            "name": "healthy: every recording rule, no alert",
            "interval": "1m",
            "input_series": input_series(base),
            "promql_expr_test": [
                {"expr": "ALERTS", "eval_time": "30m", "exp_samples": []},
                *(
                    {
                        "expr": record,
                        "eval_time": "10m",
                        "exp_samples": [
                            {"labels": f'{record}{{namespace="{NS}", service="{SVC}"{extra}}}', "value": value}
                        ],
                    }
                    for record, value, extra in (
                        ("canary:request_rate:5m", 10, ""),
                        ("stable:request_rate:5m", 90, ""),
                        ("canary:error_rate:5m", 0, ""),
                        ("stable:error_rate:5m", 0, ""),
                        ("canary:success_rate:5m", 100, ""),
                        ("canary:latency_p50:5m", 50, ""),
                        ("canary:latency_p95:5m", 95, ""),
                        ("canary:latency_p99:5m", 99, ""),
                        ("stable:latency_p95:5m", 95, ""),
                        ("canary:traffic_percentage:5m", 10, ""),
                        ("canary:cpu_usage:5m", 25, f', pod="{POD["canary"]}"'),
                        ("canary:memory_usage:5m", 39.0625, f', pod="{POD["canary"]}"'),
                    )
                ),
            ],
        }
    ]
    for alert, (changes, at) in scenarios(mesh).items():
        series = {k: v for k, v in {**base, **changes}.items() if v is not None}
        groups.append(
            {
                "name": f"{alert} fires",
                "interval": "1m",
                "input_series": input_series(series),
                "promql_expr_test": [
                    {
                        "expr": f'count(ALERTS{{alertname="{alert}", alertstate="firing", '
                        f'severity="{severity[alert]}", namespace="{NS}", service="{SVC}"}})',
                        "eval_time": at,
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    },
                    # ... and not at once: each alert waits out its `for` before it fires.
                    {
                        "expr": f'ALERTS{{alertname="{alert}", alertstate="firing"}}',
                        "eval_time": "0m",
                        "exp_samples": [],
                    },
                ],
            }
        )
    stagnant = {
        f'kube_deployment_created{{namespace="{NS}", deployment="{SVC}-canary"}}': "0x1700",
        f'kube_deployment_spec_replicas{{namespace="{NS}", deployment="{SVC}-canary"}}': "1x1700",
    }
    groups.append(
        {
            "name": "CanaryStagnant fires after 24 hours, not before",
            "interval": "1m",
            "input_series": input_series(stagnant),
            "promql_expr_test": [
                {"expr": 'ALERTS{alertname="CanaryStagnant"}', "eval_time": "23h", "exp_samples": []},
                {
                    "expr": 'count(ALERTS{alertname="CanaryStagnant", alertstate="firing", severity="info"})',
                    "eval_time": "26h",
                    "exp_samples": [{"labels": "{}", "value": 1}],
                },
            ],
        }
    )
    error_rule = next(a for a in alerts if a["alert"] == "CanaryHighErrorRate")
    groups.append(
        {
            "name": "CanaryHighErrorRate annotations carry the value",
            "interval": "1m",
            "input_series": input_series({**base, **scenarios(mesh)["CanaryHighErrorRate"][0]}),
            "alert_rule_test": [
                {
                    "alertname": "CanaryHighErrorRate",
                    "eval_time": "10m",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "critical", "namespace": NS, "service": SVC},
                            "exp_annotations": {
                                "summary": "Canary of auth in orion answers more than 5 % of requests with 5xx",
                                "description": "Canary error rate is 10.00 % over 5 minutes (threshold 5 %).",
                                "runbook_url": error_rule["annotations"]["runbook_url"],
                            },
                        }
                    ],
                }
            ],
        }
    )
    return {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": groups}


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool comes with the Debian prometheus package; ./dev installs it"
    return path


def write_rules(folder: Path, mesh: Mesh, failure_codes: str = DEFAULT_FAILURE_CODES) -> Path:
    rules = folder / "rules.yaml"
    groups = render_alerts(mesh, failure_codes=failure_codes)["spec"]["groups"]
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return rules


@pytest.mark.parametrize("mesh", [Mesh.ISTIO, Mesh.LINKERD])
def test_promtool_checks_the_rules(promtool: str, tmp_path: Path, mesh: Mesh) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(write_rules(tmp_path, mesh))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 31 rules found" in done.stdout


@pytest.mark.parametrize("mesh", [Mesh.ISTIO, Mesh.LINKERD])
def test_every_alert_fires_on_its_fault_and_stays_silent_when_healthy(
    promtool: str, tmp_path: Path, mesh: Mesh
) -> None:
    rules = write_rules(tmp_path, mesh)
    tests = unit_tests(mesh)
    # CanaryStagnant's test spans 26 hours of 1-minute evaluations: against its own rule alone (it reads raw series
    # only, no recording rule), not all 31 rules 1,560 times over — the same rule as rendered, a tenth of the time
    day_long = [t for t in tests["tests"] if t["name"].startswith("CanaryStagnant")]
    assert day_long and all(t["name"].startswith("CanaryStagnant") for t in day_long)
    groups = yaml.safe_load(rules.read_text())["groups"]
    stagnant = [{**g, "rules": [r for r in g["rules"] if r.get("alert") == "CanaryStagnant"]} for g in groups]
    (tmp_path / "stagnant.yaml").write_text(yaml.safe_dump({"groups": [g for g in stagnant if g["rules"]]}))
    files = {
        "tests.yaml": {**tests, "tests": [t for t in tests["tests"] if t not in day_long]},
        "stagnant-tests.yaml": {**tests, "rule_files": ["stagnant.yaml"], "tests": day_long},
    }
    for name, content in files.items():
        (tmp_path / name).write_text(yaml.safe_dump(content, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert done.stdout.count("SUCCESS") == 2, done.stdout


def test_every_alert_and_recording_rule_is_covered() -> None:
    spec = render_alerts(Mesh.ISTIO)["spec"]["groups"]
    alerts = {r["alert"] for r in spec[1]["rules"]}
    assert alerts == set(scenarios(Mesh.ISTIO)) | {"CanaryStagnant"}
    assert len(alerts) == 19
    records = {r["record"] for r in spec[0]["rules"]}
    tested = {t["expr"] for t in unit_tests(Mesh.ISTIO)["tests"][0]["promql_expr_test"]}
    assert records <= tested


def test_alert_thresholds_come_from_the_gate_defaults() -> None:
    tighter = Gates.model_validate({"error_rate": {"threshold": 2, "severity": "warning"}})
    rule = next(
        r
        for r in render_alerts(Mesh.ISTIO, tighter)["spec"]["groups"][1]["rules"]
        if r["alert"] == "CanaryHighErrorRate"
    )
    assert rule["expr"] == "canary:error_rate:5m > 2" and rule["labels"]["severity"] == "warning"
    default = next(r for r in render_alerts()["spec"]["groups"][1]["rules"] if r["alert"] == "CanaryHighLatencyP99")
    assert default["expr"] == f"canary:latency_p99:5m > {Gates().latency_p99.threshold:g}"


def test_the_sandbox_gets_the_same_rules_made_quick(promtool: str, tmp_path: Path) -> None:
    from canary_checks.sandbox import sandbox_rules

    groups = render_alerts(Mesh.ISTIO)["spec"]["groups"]
    quick = sandbox_rules(groups, "1s")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": quick}, sort_keys=False))
    done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS: 31 rules found" in done.stdout, done.stdout + done.stderr
    original = {r.get("record") or r["alert"]: r for g in groups for r in g["rules"]}
    for group in quick:
        assert group["interval"] == "1s"
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            assert "[5m]" not in rule["expr"]
            # the same rule, only its look-back windows changed
            windows = re.compile(r"\[\d+[smh]\]")
            assert windows.sub("[W]", rule["expr"]) == windows.sub("[W]", original[name]["expr"])
    high_error = next(r for g in quick for r in g["rules"] if r.get("alert") == "CanaryHighErrorRate")
    assert high_error["for"] == "12s"  # 2m in a cluster
    # [5m] is [15s]: a fault's alert resolves about 15 s after the rollback; never under four evaluations
    assert {w for g in quick for r in g["rules"] for w in re.findall(r"\[\w+\]", r["expr"])} == {"[15s]"}
    slow = sandbox_rules(groups, "5s")
    assert {w for g in slow for r in g["rules"] for w in re.findall(r"\[\w+\]", r["expr"])} == {"[20s]"}


@pytest.mark.parametrize(
    ("mesh", "failure_codes", "error_rate"),
    [
        (Mesh.ISTIO, DEFAULT_FAILURE_CODES, 10),
        (Mesh.ISTIO, "[45]..", 20),
        (Mesh.LINKERD, DEFAULT_FAILURE_CODES, 20),  # Linkerd's classification: the failed stream fails too
        (Mesh.LINKERD, "[45]..", 30),  # status_code: a response without one still fails
    ],
)
def test_a_404_succeeds_unless_failure_codes_say_otherwise_in_the_gates_and_the_rules_alike(
    promtool: str, tmp_path: Path, mesh: Mesh, failure_codes: str, error_rate: float
) -> None:
    """An auth canary answering 200, and 10 % each 404 and 500 (on Linkerd also 10 % failed streams, without a
    status): Prometheus itself evaluates the gates' queries and the recording rules, which agree, and the success
    rate is 100 − the error rate."""
    success_rate = 100 - error_rate
    write_rules(tmp_path, mesh, failure_codes)
    config = CanaryConfig(mesh=mesh, failure_codes=failure_codes, window=300)
    gate = {
        name: profile_for(config).render(name, namespace=NS, workload=f"{SVC}-canary", window=config.window)
        for name in ("requests", "errors", "successes")
    }
    canary = {
        requests(mesh, "canary", "200"): per_minute(480),
        requests(mesh, "canary", "404"): per_minute(60),
        requests(mesh, "canary", "500"): per_minute(60),
    }
    if mesh is Mesh.LINKERD:
        canary[requests(mesh, "canary", "200")] = per_minute(420)
        no_status = f'direction="inbound", deployment="{SVC}-canary", namespace="{NS}", classification="failure"'
        canary[f'response_total{{{no_status}, error="reset"}}'] = per_minute(60)
    rule = f'{{namespace="{NS}", service="{SVC}"}}'
    expected = [  # (expression, labels of its one sample, value), rounded to 0.001 against float noise
        ("canary:error_rate:5m", rule, error_rate),
        ("canary:success_rate:5m", rule, success_rate),
        (f"100 * {gate['errors']} / {gate['requests']}", "{}", error_rate),
        (f"100 * {gate['successes']} / {gate['requests']}", "{}", success_rate),
    ]
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": input_series({**healthy(mesh), **canary}),
                "promql_expr_test": [
                    {
                        "expr": f"round({expr}, 0.001)",
                        "eval_time": "10m",
                        "exp_samples": [{"labels": labels, "value": value}],
                    }
                    for expr, labels, value in expected
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
