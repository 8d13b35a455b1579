"""What to ask Prometheus: the query profiles per mesh (Istio, Linkerd, a custom one), template rendering with
label values escaped, and the pod regex of a Deployment.

Seam: pure text, no I/O; :class:`~canary_checks.prometheus.source.MetricsSource` sends what this renders."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

from canary_checks.config import DEFAULT_FAILURE_CODES, CanaryConfig, Mesh, check_namespace, check_workload
from canary_checks.errors import ConfigError


def escape_label(value: str) -> str:
    """Escape a value for a double-quoted PromQL string literal (Go string escaping)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def selectors_in(query: str, *, where: str) -> list[str]:
    """The series selectors ``query`` reads — each metric name with its label matchers, without range, offset or
    ``@`` — as PromQL, in order and once each: what a recording must hold to answer it. PromQL is parsed by
    promql-parser (GreptimeDB's, the Prometheus grammar); a query it cannot read is a ConfigError naming ``where``."""
    import promql_parser

    try:
        expr = promql_parser.parse(query)
    except ValueError as e:
        raise ConfigError(f"not a PromQL query the export can read: {e}", where=where,
                          fix="check the query in Prometheus' own expression browser") from e  # fmt: skip
    op = promql_parser.MatchOp
    ops = ((op.Equal, "="), (op.NotEqual, "!="), (op.Re, "=~"), (op.NotRe, "!~"))  # the enum is not hashable
    found: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            # `{a="1" or b="2"}` (Prometheus 3) is one selector per alternative
            for group in node.matchers.or_matchers or [node.matchers.matchers]:
                text = ",".join(f'{m.name}{next(s for o, s in ops if m.op == o)}"{escape_label(m.value)}"'
                                for m in group)  # fmt: skip
                found.append(f"{node.name or ''}{{{text}}}" if text else node.name or "")

    promql_parser.walk(expr, visit)
    return [selector for selector in dict.fromkeys(found) if selector]


def pod_regex(workload: str) -> str:
    """RE2 pattern for the pods of a Deployment: ``<name>-<replicaset hash>-<pod suffix>``."""
    return re.escape(workload) + "-[a-z0-9]{1,10}-[a-z0-9]{5}"


#: seconds between evaluations of the canary rules of manifests/monitoring (both groups)
RULES_INTERVAL = 30
_ALERTS = (
    'ALERTS{alertstate="firing", alertname=~"Canary.+", severity="critical", namespace="$namespace", '
    'service="$service"}'
)


@dataclass(frozen=True)
class QueryProfile:
    """PromQL templates for one mesh. Placeholders: $namespace, $workload, $window, $quantile, $pods.

    Every value substituted is validated as a Kubernetes name and escaped first, so no configured name can change
    what a query means."""

    requests: str
    errors: str
    successes: str
    latency: str
    buckets: str = ""
    """Latency histogram bucket counts by le in $window; empty when the profile has none (custom without it)."""
    # cAdvisor and kube-state-metrics series: the same for every mesh.
    cpu_usage: str = (
        'sum by (pod) (rate(container_cpu_usage_seconds_total{namespace="$namespace", pod=~"$pods", '
        'container!="", container!="POD"}[$window]))'
    )
    cpu_seconds: str = (
        'sum(increase(container_cpu_usage_seconds_total{namespace="$namespace", pod=~"$pods", '
        'container!="", container!="POD"}[$window]))'
    )
    cpu_limit: str = (
        'sum by (pod) (kube_pod_container_resource_limits{namespace="$namespace", pod=~"$pods", resource="cpu"})'
    )
    memory_usage: str = (
        'sum by (pod) (container_memory_working_set_bytes{namespace="$namespace", pod=~"$pods", '
        'container!="", container!="POD"})'
    )
    memory_limit: str = (
        'sum by (pod) (kube_pod_container_resource_limits{namespace="$namespace", pod=~"$pods", resource="memory"})'
    )
    pods_ready: str = 'max by (pod) (kube_pod_status_ready{namespace="$namespace", pod=~"$pods", condition="true"})'
    replicas_desired: str = 'max(kube_deployment_spec_replicas{namespace="$namespace", deployment="$workload"})'
    restarts: str = (
        "sum by (pod, container) (increase(kube_pod_container_status_restarts_total"
        '{namespace="$namespace", pod=~"$pods"}[$window]))'
    )
    # The canary recording and alerting rules of manifests/monitoring, where Prometheus has them loaded.
    rules_loaded: str = 'canary:request_rate:5m{namespace="$namespace", service="$service"}'
    # Only ALERTS samples of the last few evaluations: a Prometheus stopped while an alert fired writes no stale
    # marker, so after its restart the old "firing" sample would answer for the 5-minute lookback.
    firing_alerts: str = f"{_ALERTS} and (time() - timestamp({_ALERTS}) <= {3 * RULES_INTERVAL})"
    waiting: str = (
        'max by (pod, container, reason) (kube_pod_container_status_waiting_reason{namespace="$namespace", '
        'pod=~"$pods", reason=~"CrashLoopBackOff|ImagePullBackOff|ErrImagePull|CreateContainerConfigError"}) == 1'
    )

    def render(
        self, name: str, *, namespace: str, workload: str, window: float, quantile: float = 0.0, service: str = ""
    ) -> str:
        template: str = getattr(self, name)
        return render_template(
            template, namespace=namespace, workload=workload, window=window, quantile=quantile, service=service
        )


def render_template(
    template: str, *, namespace: str, workload: str, window: float, quantile: float = 0.0, service: str = ""
) -> str:
    """A PromQL template with its placeholders replaced: $namespace, $workload, $service, $pods, $window, $quantile.
    Every name is validated as a Kubernetes name and escaped first (the built-in profiles and custom gates alike)."""
    check_namespace(namespace)
    check_workload(workload)
    if service:
        check_workload(service)
    values = {
        "namespace": escape_label(namespace),
        "workload": escape_label(workload),
        "service": escape_label(service),
        "pods": escape_label(pod_regex(workload)),
        "window": f"{round(window)}s",
        "quantile": repr(quantile),
    }
    return string.Template(template).substitute(values)


@dataclass(frozen=True)
class MeshMetrics:
    """One mesh's request metrics: the gates' query profile and the alert rules are both written from these."""

    requests: str
    """Counter of requests, by response."""
    buckets: str
    """Histogram buckets of request latency, milliseconds."""
    base: str
    """Matcher picking the receiving side's view of a request."""
    status: str
    """Label holding the HTTP status code of the answer."""
    workload: str
    """Label naming the Deployment that answered."""
    namespace: str
    """Label naming its namespace."""
    classification: str = ""
    """Label the mesh sets to success or failure by its own rule, read for the default failure codes; empty where
    the mesh has none."""

    def matchers(self, *more: str) -> str:
        return ", ".join((self.base, *more))

    def outcomes(self, failure_codes: str = DEFAULT_FAILURE_CODES) -> tuple[str, str]:
        """Matchers for (failed, succeeded) requests: two halves of every request, so successes are requests
        minus errors (see ``failure_codes`` in the config)."""
        if self.classification and failure_codes == DEFAULT_FAILURE_CODES:
            return f'{self.classification}="failure"', f'{self.classification}="success"'
        codes = escape_label(failure_codes)
        if self.classification:
            # Linkerd: a response that never got a status (a failed stream) has no status_code label; the empty
            # alternative matches it, so it fails, as Linkerd's own classification says.
            codes += "|"
        return f'{self.status}=~"{codes}"', f'{self.status}!~"{codes}"'

    def profile(self, failure_codes: str = DEFAULT_FAILURE_CODES) -> QueryProfile:
        sel = self.matchers(f'{self.namespace}="$namespace"', f'{self.workload}="$workload"')
        # The codes go into a string.Template: a "$" of the regex (an anchor) is written "$$".
        errors, successes = (m.replace("$", "$$") for m in self.outcomes(failure_codes))
        return QueryProfile(
            requests=f"sum(increase({self.requests}{{{sel}}}[$window]))",
            errors=f"sum(increase({self.requests}{{{sel}, {errors}}}[$window]))",
            successes=f"sum(increase({self.requests}{{{sel}, {successes}}}[$window]))",
            latency=f"histogram_quantile($quantile, sum by (le) (increase({self.buckets}{{{sel}}}[$window])))",
            buckets=f"sum by (le) (increase({self.buckets}{{{sel}}}[$window]))",
        )


MESH_METRICS = {
    Mesh.ISTIO: MeshMetrics(
        requests="istio_requests_total",
        buckets="istio_request_duration_milliseconds_bucket",
        base='reporter="destination"',
        status="response_code",
        workload="destination_workload",
        namespace="destination_workload_namespace",
    ),
    Mesh.LINKERD: MeshMetrics(
        requests="response_total",
        buckets="response_latency_ms_bucket",
        base='direction="inbound"',
        status="status_code",
        workload="deployment",
        namespace="namespace",
        classification="classification",
    ),
}
ISTIO = MESH_METRICS[Mesh.ISTIO].profile()
LINKERD = MESH_METRICS[Mesh.LINKERD].profile()


def profile_for(config: CanaryConfig) -> QueryProfile:
    if config.mesh is not Mesh.CUSTOM:
        return MESH_METRICS[config.mesh].profile(config.failure_codes)
    assert config.queries is not None  # the config validator guarantees it
    return QueryProfile(
        requests=config.queries.requests,
        errors=config.queries.errors,
        successes=config.queries.successes,
        latency=config.queries.latency,
        buckets=config.queries.buckets or "",
    )
