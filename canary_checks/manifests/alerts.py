"""Prometheus recording and alerting rules, with the thresholds of the gates."""

from __future__ import annotations

from canary_checks.config import (
    DEFAULT_FAILURE_CODES,
    Gates,
    Mesh,
    check_failure_codes,
    describe_failures,
)
from canary_checks.manifests.values import DEMO, ManifestValues, Obj
from canary_checks.manifests.workloads import _meta
from canary_checks.prometheus import MESH_METRICS, RULES_INTERVAL

# ---- Prometheus alerting -------------------------------------------------------------------------------------------

_CANARY_POD = ".+-canary-[a-z0-9]+-[a-z0-9]+"
_STABLE_POD = ".+-stable-[a-z0-9]+-[a-z0-9]+"


def _by_service(expr: str, label: str, side: str, namespace_label: str = "namespace", *, pod: bool = False) -> str:
    """``expr`` with a ``service`` label taken from the workload (or pod) name, and a ``namespace`` label."""
    pattern = f"(.+)-{side}-[a-z0-9]+-[a-z0-9]+" if pod else f"(.+)-{side}"
    with_service = f'label_replace({expr}, "service", "$1", "{label}", "{pattern}")'
    if namespace_label == "namespace":
        return with_service
    return f'label_replace({with_service}, "namespace", "$1", "{namespace_label}", "(.*)")'


def _recording_rules(mesh: Mesh, failure_codes: str) -> list[Obj]:
    m = MESH_METRICS[mesh]
    failed, succeeded = m.outcomes(failure_codes)

    def side_of(side: str) -> str:
        return f'{m.workload}=~".+-{side}"'

    def traffic(side: str, *more: str) -> str:
        selector = f"{m.requests}{{{m.matchers(*more, side_of(side))}}}"
        return f"sum by (namespace, service) ({_by_service(f'rate({selector}[5m])', m.workload, side, m.namespace)})"

    def latency(quantile: float, side: str) -> str:
        selector = f"{m.buckets}{{{m.matchers(side_of(side))}}}"
        inner = _by_service(f"rate({selector}[5m])", m.workload, side, m.namespace)
        return f"histogram_quantile({quantile}, sum by (le, namespace, service) ({inner}))"

    def resource(usage: str, resource_name: str) -> str:
        used = _by_service(usage, "pod", "canary", pod=True)
        limit = _by_service(
            f'kube_pod_container_resource_limits{{resource="{resource_name}", pod=~"{_CANARY_POD}"}}',
            "pod",
            "canary",
            pod=True,
        )
        return f"100 * sum by (namespace, service, pod) ({used}) / sum by (namespace, service, pod) ({limit})"

    rules: list[Obj] = []
    for side in ("canary", "stable"):
        rules.append({"record": f"{side}:request_rate:5m", "expr": traffic(side)})
        # No failed series yet means no errors: count them as 0 where the side has traffic.
        errors = f"({traffic(side, failed)} or {side}:request_rate:5m * 0)"
        rules.append({"record": f"{side}:error_rate:5m", "expr": f"100 * {errors} / {side}:request_rate:5m"})
    successes = f"({traffic('canary', succeeded)} or canary:request_rate:5m * 0)"
    rules.append({"record": "canary:success_rate:5m", "expr": f"100 * {successes} / canary:request_rate:5m"})
    for quantile in (0.5, 0.95, 0.99):
        rules.append({"record": f"canary:latency_p{round(quantile * 100)}:5m", "expr": latency(quantile, "canary")})
    rules.append({"record": "stable:latency_p95:5m", "expr": latency(0.95, "stable")})
    rules.append(
        {
            "record": "canary:traffic_percentage:5m",
            "expr": "100 * canary:request_rate:5m / (canary:request_rate:5m + stable:request_rate:5m)",
        }
    )
    cpu = f'rate(container_cpu_usage_seconds_total{{container!="", container!="POD", pod=~"{_CANARY_POD}"}}[5m])'
    memory = f'container_memory_working_set_bytes{{container!="", container!="POD", pod=~"{_CANARY_POD}"}}'
    rules.append({"record": "canary:cpu_usage:5m", "expr": resource(cpu, "cpu")})
    rules.append({"record": "canary:memory_usage:5m", "expr": resource(memory, "memory")})
    return rules


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, description: str) -> Obj:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
        },
    }


def _alerting_rules(gates: Gates, failure_codes: str, runbook: str | None) -> list[Obj]:
    g = gates
    svc = "{{ $labels.service }} in {{ $labels.namespace }}"
    canary_pods = f'pod=~"{_CANARY_POD}"'

    def pods(expr: str, side: str = "canary") -> str:
        return _by_service(expr, "pod", side, pod=True)

    def deployments(expr: str) -> str:
        return _by_service(expr, "deployment", "canary")

    ready_pods = f'kube_pod_status_ready{{condition="true", {canary_pods}}}'
    working_set = 'container_memory_working_set_bytes{container!="", container!="POD", pod=~"%s"}'
    crash_looping = f'kube_pod_container_status_waiting_reason{{reason="CrashLoopBackOff", {canary_pods}}} == 1'
    stable_ready = f'kube_pod_status_ready{{condition="true", pod=~"{_STABLE_POD}"}}'
    created = 'kube_deployment_created{deployment=~".+-canary"}'
    desired = 'kube_deployment_spec_replicas{deployment=~".+-canary"}'
    available = 'kube_deployment_status_replicas_available{deployment=~".+-canary"}'
    gate_severity = {name: getattr(g, name).severity.value for name in Gates.model_fields}
    alerts = [
        _alert(
            "CanaryHighErrorRate",
            f"canary:error_rate:5m > {g.error_rate.threshold:g}",
            "2m",
            gate_severity["error_rate"],
            f"Canary of {svc} answers more than {g.error_rate.threshold:g} % of requests with "
            f"{describe_failures(failure_codes)}",
            'Canary error rate is {{ $value | printf "%.2f" }} % over 5 minutes '
            f"(threshold {g.error_rate.threshold:g} %).",
        ),
        _alert(
            "CanaryErrorRateHigherThanStable",
            f"canary:error_rate:5m > {g.error_rate_vs_stable.threshold:g} * stable:error_rate:5m",
            "5m",
            gate_severity["error_rate_vs_stable"],
            f"Canary of {svc} fails more than {g.error_rate_vs_stable.threshold:g}x as often as stable",
            'Canary error rate is {{ $value | printf "%.2f" }} %, more than '
            f"{g.error_rate_vs_stable.threshold:g} times stable's.",
        ),
        _alert(
            "CanaryHighLatencyP95",
            f"canary:latency_p95:5m > {g.latency_p95.threshold:g}",
            "5m",
            gate_severity["latency_p95"],
            f"Canary of {svc} p95 latency above {g.latency_p95.threshold:g} ms",
            f'Canary p95 latency is {{{{ $value | printf "%.0f" }}}} ms (threshold {g.latency_p95.threshold:g} ms).',
        ),
        _alert(
            "CanaryHighLatencyP99",
            f"canary:latency_p99:5m > {g.latency_p99.threshold:g}",
            "5m",
            gate_severity["latency_p99"],
            f"Canary of {svc} p99 latency above {g.latency_p99.threshold:g} ms",
            f'Canary p99 latency is {{{{ $value | printf "%.0f" }}}} ms (threshold {g.latency_p99.threshold:g} ms).',
        ),
        _alert(
            "CanaryLatencyHigherThanStable",
            f"canary:latency_p95:5m > {g.latency_vs_stable.threshold:g} * stable:latency_p95:5m",
            "5m",
            gate_severity["latency_vs_stable"],
            f"Canary of {svc} is more than {g.latency_vs_stable.threshold:g}x slower than stable at p95",
            'Canary p95 latency is {{ $value | printf "%.0f" }} ms, more than '
            f"{g.latency_vs_stable.threshold:g} times stable's.",
        ),
        _alert(
            "CanaryLowSuccessRate",
            f"canary:success_rate:5m < {g.success_rate.threshold:g}",
            "2m",
            gate_severity["success_rate"],
            f"Canary of {svc} succeeds on fewer than {g.success_rate.threshold:g} % of requests",
            f'Canary success rate is {{{{ $value | printf "%.2f" }}}} % (threshold {g.success_rate.threshold:g} %).',
        ),
        _alert(
            "CanaryPodsNotReady",
            f"max by (namespace, service, pod) ({pods(ready_pods)}) == 0",
            "5m",
            "warning",
            f"A canary pod of {svc} is not ready",
            "Pod {{ $labels.pod }} has not been ready for 5 minutes.",
        ),
        _alert(
            "CanaryHighCPUUsage",
            f"canary:cpu_usage:5m > {g.cpu.threshold:g}",
            "5m",
            gate_severity["cpu"],
            f"Canary pod of {svc} uses more than {g.cpu.threshold:g} % of its CPU limit",
            'Pod {{ $labels.pod }} uses {{ $value | printf "%.0f" }} % of its CPU limit.',
        ),
        _alert(
            "CanaryHighMemoryUsage",
            f"canary:memory_usage:5m > {g.memory.threshold:g}",
            "5m",
            gate_severity["memory"],
            f"Canary pod of {svc} uses more than {g.memory.threshold:g} % of its memory limit",
            'Pod {{ $labels.pod }} uses {{ $value | printf "%.0f" }} % of its memory limit.',
        ),
        _alert(
            "CanaryMemoryUsageHigherThanStable",
            f"avg by (namespace, service) ({pods(working_set % _CANARY_POD)}) > {g.memory_vs_stable.threshold:g} "
            f"* avg by (namespace, service) ({pods(working_set % _STABLE_POD, 'stable')})",
            "10m",
            gate_severity["memory_vs_stable"],
            f"Canary of {svc} uses more than {g.memory_vs_stable.threshold:g}x stable's memory per pod",
            "Canary working set per pod is {{ $value | humanize1024 }}B.",
        ),
        _alert(
            "CanaryReceivingNoTraffic",
            f"canary:request_rate:5m <= {g.traffic_received.threshold:g} or (sum by (namespace, service) "
            f"({pods(ready_pods)}) > 0 unless canary:request_rate:5m)",
            "5m",
            gate_severity["traffic_received"],
            f"Canary of {svc} receives no traffic",
            "The canary has ready pods but has received no request for 5 minutes; check the routing weights.",
        ),
        _alert(
            "CanaryTrafficSplitMisconfigured",
            "canary:traffic_percentage:5m > 50",
            "5m",
            gate_severity["traffic_split"],
            f"Canary of {svc} receives more than half of the traffic",
            'The canary receives {{ $value | printf "%.0f" }} % of requests; before promotion it should not '
            "carry the majority.",
        ),
        _alert(
            "CanaryVersionDivergence",
            f"count by (namespace, service) ({pods(ready_pods)}) unless count by (namespace, service) "
            f"({pods(stable_ready, 'stable')})",
            "10m",
            "info",
            f"Canary of {svc} runs with no stable baseline",
            "There are canary pods but no stable pods: nothing to compare the canary with.",
        ),
        _alert(
            "CanaryStagnant",
            f"time() - max by (namespace, service) ({deployments(created)}) > 86400 "
            f"and on (namespace, service) ({deployments(desired)} > 0)",
            "1h",
            "info",
            f"Canary of {svc} has been running for more than 24 hours",
            "The canary Deployment was created {{ $value | humanizeDuration }} ago; promote it or roll it back.",
        ),
        _alert(
            "CanaryPodCrashLooping",
            f"max by (namespace, service, pod, container) ({pods(crash_looping)}) == 1",
            "1m",
            gate_severity["crash_loop"],
            f"Canary pod of {svc} is crash looping",
            "Container {{ $labels.container }} of {{ $labels.pod }} is in CrashLoopBackOff.",
        ),
        _alert(
            "CanaryReadinessProbesFailing",
            "sum by (namespace, service, pod) ("
            + pods(f'increase(prober_probe_total{{probe_type="Readiness", result="failed", {canary_pods}}}[5m])')
            + ") > 0",
            "5m",
            "warning",
            f"Readiness probes of a canary pod of {svc} fail",
            '{{ $labels.pod }} failed {{ $value | printf "%.0f" }} readiness probes in 5 minutes.',
        ),
        _alert(
            "CanaryLivenessProbesFailing",
            "sum by (namespace, service, pod) ("
            + pods(f'increase(prober_probe_total{{probe_type="Liveness", result="failed", {canary_pods}}}[5m])')
            + ") > 0",
            "2m",
            "critical",
            f"Liveness probes of a canary pod of {svc} fail",
            '{{ $labels.pod }} failed {{ $value | printf "%.0f" }} liveness probes in 5 minutes.',
        ),
        _alert(
            "CanaryRolloutStalled",
            f"{deployments(desired)} > {deployments(available)}",
            "15m",
            "warning",
            f"Canary rollout of {svc} is stalled",
            "The canary Deployment has had fewer available replicas than desired for 15 minutes.",
        ),
        _alert(
            "CanaryAutomatedRollbackRecommended",
            f"canary:error_rate:5m > {g.error_rate.threshold:g}"
            f" or canary:success_rate:5m < {g.success_rate.threshold:g}"
            f" or canary:latency_p99:5m > {g.latency_p99.threshold:g}"
            f" or count by (namespace, service) ({pods(crash_looping)}) > 0",
            "2m",
            "critical",
            f"Roll back the canary of {svc}",
            "A critical canary gate has been breached for 2 minutes: set the canary weight to 0 and scale the "
            "canary down (see the runbook).",
        ),
    ]
    for alert in alerts if runbook else ():
        alert["annotations"]["runbook_url"] = f"{runbook}#{alert['alert'].lower()}"
    return alerts


def render_alerts(
    mesh: Mesh = Mesh.ISTIO,
    gates: Gates | None = None,
    failure_codes: str = DEFAULT_FAILURE_CODES,
    values: ManifestValues | None = None,
) -> Obj:
    """The PrometheusRule with every alert of the original system and the recording rules they use, in the
    namespace of ``values`` (default: the demo's) with its ``runbook_url``; a request failed when its status matches
    ``failure_codes`` (the config's), as in the gates."""
    gates = gates or Gates()
    check_failure_codes(failure_codes)
    v = values or DEMO
    suffix = "" if mesh is Mesh.ISTIO else f"-{mesh.value}"
    every = f"{RULES_INTERVAL}s"  # the alerts gate counts an ALERTS sample older than three of these as gone
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(
            v,
            f"canary-alerts{suffix}",
            {"app.kubernetes.io/name": "canary-checks", "prometheus": "k8s", "role": "alert-rules"},
        ),
        "spec": {
            "groups": [
                {"name": "canary.recording", "interval": every, "rules": _recording_rules(mesh, failure_codes)},
                {
                    "name": "canary.alerts",
                    "interval": every,
                    "rules": _alerting_rules(gates, failure_codes, v.runbook_url),
                },
            ]
        },
    }
