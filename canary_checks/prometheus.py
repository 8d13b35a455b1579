"""The metrics source: query profiles per mesh, safe label values, concurrent instant queries.

Four outcomes reach the gates: a vector of :class:`Sample` (a value), an empty vector (no data: an empty result or
only NaN), :class:`~canary_checks.errors.PrometheusQueryError` (Prometheus answered with an error) and
:class:`~canary_checks.errors.PrometheusUnreachable`.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict
from urllib.parse import urlsplit

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from canary_checks.config import (
    DEFAULT_FAILURE_CODES,
    CanaryConfig,
    Mesh,
    PrometheusSettings,
    check_namespace,
    check_workload,
)
from canary_checks.errors import (
    InvalidLabelValue,
    PrometheusError,
    PrometheusQueryError,
    PrometheusUnreachable,
    redact_url,
)

__all__ = [
    "MESH_METRICS",
    "MeshMetrics",
    "MetricsSource",
    "QueryProfile",
    "Sample",
    "Series",
    "escape_label",
    "pod_regex",
    "profile_for",
    "render_template",
]

log = logging.getLogger(__name__)


class _RawSample(TypedDict):
    metric: dict[str, str]
    value: list[Any]


@dataclass(frozen=True)
class Series:
    """One series of a range query."""

    labels: Mapping[str, str]
    times: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    value: float


def escape_label(value: str) -> str:
    """Escape a value for a double-quoted PromQL string literal (Go string escaping)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def pod_regex(workload: str) -> str:
    """RE2 pattern for the pods of a Deployment: ``<name>-<replicaset hash>-<pod suffix>``."""
    return re.escape(workload) + "-[a-z0-9]{1,10}-[a-z0-9]{5}"


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
    firing_alerts: str = (
        'ALERTS{alertstate="firing", alertname=~"Canary.+", severity="critical", '
        'namespace="$namespace", service="$service"}'
    )
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


@dataclass
class MetricsSource:
    """Reads instant vectors from one Prometheus, many queries at once, all at the same evaluation time."""

    config: CanaryConfig
    max_workers: int = 16
    _client: PrometheusConnect = field(init=False, repr=False)

    def __post_init__(self) -> None:
        settings = self.config.prometheus
        headers = settings.header_values()
        token = settings.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        session = requests.Session()
        session.verify = str(settings.ca_file) if settings.ca_file else settings.verify_tls
        if settings.cert_file and settings.key_file:
            session.cert = (str(settings.cert_file), str(settings.key_file))
        if settings.proxy_url:
            # requests lets HTTPS_PROXY and friends override a session's proxies; the configured one must win
            session.trust_env = False
            session.proxies = {"http": settings.proxy_url, "https": settings.proxy_url}
        retry = Retry(
            total=settings.retries,
            connect=0,  # a refused connection is an answer: Prometheus is down; say so at once
            backoff_factor=0.2,
            status_forcelist=[502, 503, 504],
            allowed_methods=["GET"],
        )
        base = settings.base_url
        self._client = PrometheusConnect(
            url=base,
            headers=headers,
            disable_ssl=not settings.verify_tls,
            retry=retry,
            auth=settings.basic_credentials(),
            session=session,
            timeout=settings.timeout,
        )
        # One pooled connection per concurrent query (requests' default pool keeps 10).
        session.mount(base, HTTPAdapter(max_retries=retry, pool_maxsize=self.max_workers))

    @property
    def url(self) -> str:
        """The Prometheus URL as shown: a password in it is ``***``."""
        return self.config.prometheus.shown_url

    def now(self) -> float:
        """The instant a check evaluates at: ``prometheus.query_offset`` before the clock, so every scrape stored
        under it has landed and concurrent queries read the same samples."""
        return time.time() - self.config.prometheus.query_offset

    def render(self, name: str, *, side: str, quantile: float = 0.0, window: float | None = None) -> str:
        """The query ``name`` of the profile for ``side`` (stable|canary), with every value escaped; ``window``
        (seconds) replaces the configured window."""
        template: str = getattr(profile_for(self.config), name)
        return self.render_template(template, side=side, quantile=quantile, window=window, where=f"queries.{name}")

    def render_template(
        self, template: str, *, side: str, quantile: float = 0.0, window: float | None = None, where: str = "query"
    ) -> str:
        """Any PromQL template (a custom gate's) for ``side``, by the rules of :meth:`render`; ``where`` names the
        template's config key in messages."""
        try:
            return render_template(
                template,
                namespace=self.config.namespace,
                workload=self.config.workload(side),
                window=self.config.window if window is None else window,
                quantile=quantile,
                service=self.config.service,
            )
        except KeyError as e:
            raise InvalidLabelValue(
                f"unknown placeholder ${e.args[0]}",
                where=where,
                fix="use only $namespace, $workload, $service, $pods, $window and $quantile",
            ) from None
        except ValueError as e:
            raise InvalidLabelValue(str(e), where=f"{where} for {side}") from None

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """One instant query; an empty list is no data."""
        params = {"time": f"{at:.3f}"} if at is not None else None
        raw = self._call(promql, lambda: self._client.custom_query(promql, params=params))
        return list(_samples(raw))

    def query_range(self, promql: str, start: float, end: float, step: float) -> list[Series]:
        """One range query: every series' values from ``start`` to ``end`` every ``step`` seconds (NaN dropped)."""
        raw = self._call(
            promql,
            lambda: self._client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, tz=UTC),
                end_time=datetime.fromtimestamp(end, tz=UTC),
                step=f"{step:g}s",
            ),
        )
        out = []
        for item in raw or ():
            points = [(float(t), float(v)) for t, v in item.get("values", ())]
            kept = [(t, v) for t, v in points if not math.isnan(v)]
            out.append(Series(dict(item.get("metric", {})), tuple(t for t, _ in kept), tuple(v for _, v in kept)))
        return out

    def _call(self, promql: str, call: Callable[[], Any]) -> Any:
        settings = self.config.prometheus
        try:
            return call()
        except PrometheusApiClientException as e:
            status, detail = _parse_api_error(str(e))
            if _looks_like_html(detail):
                detail = f"an HTML page ({_title(detail)})"
            raise PrometheusQueryError(
                f"answered HTTP {status}: {detail}" if status else f"answered with an error: {detail}",
                url=self.url,
                query=promql,
                status=status,
                fix=_fix_for(status, settings),
            ) from e
        except requests.exceptions.RetryError as e:
            raise PrometheusQueryError(
                f"kept answering with server errors ({_reason(e)})",
                url=self.url,
                query=promql,
                fix="check Prometheus' own logs and health (/-/healthy)",
            ) from e
        except requests.exceptions.ProxyError as e:
            raise PrometheusUnreachable(
                f"could not be reached through the proxy {redact_url(self._proxy() or '?')} ({_reason(e)})",
                url=self.url,
                query=promql,
                fix="check prometheus.proxy_url (or HTTPS_PROXY/HTTP_PROXY): is the proxy running, and does it "
                "allow this host?",
            ) from e
        except requests.exceptions.SSLError as e:
            raise _tls_error(e, self.url, promql, settings) from e
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as e:
            if _client_cert_refused(e):
                raise _tls_error(e, self.url, promql, settings) from e
            raise PrometheusUnreachable(
                f"is unreachable ({_reason(e)})",
                url=self.url,
                query=promql,
                fix=_unreachable_fix(self.config),
            ) from e
        except (requests.exceptions.JSONDecodeError, KeyError, TypeError) as e:
            # a 200 answer that is not the query API's JSON: a web UI, a login page, another service
            raise PrometheusQueryError(
                f"answered with something that is not the Prometheus query API ({_not_api(e)})",
                url=self.url,
                query=promql,
                fix="prometheus.url must be the API's base URL (the one /api/v1/query is under), e.g. "
                "http://prometheus:9090 or a Thanos/Mimir query frontend's /prometheus path; a login page means the "
                "authentication is not configured (see prometheus.basic_auth, bearer_token_env, headers)",
            ) from e
        except requests.exceptions.RequestException as e:
            raise PrometheusUnreachable(f"could not be read ({_reason(e)})", url=self.url, query=promql) from e
        except OSError as e:  # requests' own check of the certificate files, gone since the config was loaded
            raise PrometheusUnreachable(
                f"could not be read: {e}",
                url=self.url,
                query=promql,
                fix="point prometheus.ca_file, cert_file and key_file at readable PEM files",
            ) from e

    def _proxy(self) -> str | None:
        settings = self.config.prometheus
        if settings.proxy_url:
            return settings.proxy_url
        proxies = requests.utils.get_environ_proxies(settings.base_url)
        return proxies.get(settings.base_url.partition(":")[0]) or proxies.get("all")

    def meshes_with_series(self, side: str, at: float | None = None) -> list[Mesh]:
        """The meshes whose request counter has series for ``side``'s workload now (any value, any window): asked
        only when a gate saw no traffic, to tell "no requests" from "the wrong mesh's metrics". Unreadable: none."""
        workload, namespace = self.config.workload(side), self.config.namespace
        probes = {}
        for mesh, metrics in MESH_METRICS.items():
            selector = metrics.matchers(
                f'{metrics.namespace}="{escape_label(namespace)}"', f'{metrics.workload}="{escape_label(workload)}"'
            )
            probes[mesh] = f"count({metrics.requests}{{{selector}}})"
        found = self.query_many(probes.values(), at=at)
        return [mesh for mesh, q in probes.items() if isinstance(r := found[q], list) and r and r[0].value > 0]

    def query_many(self, queries: Iterable[str], at: float | None = None) -> dict[str, list[Sample] | PrometheusError]:
        """Send every query concurrently, all evaluated at the same instant ``at`` (default: :meth:`now`)."""
        unique = list(dict.fromkeys(queries))
        when = self.now() if at is None else at
        results: dict[str, list[Sample] | PrometheusError] = {}
        if not unique:
            return results
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(unique))) as pool:
            futures = {q: pool.submit(self.query, q, when) for q in unique}
            for q, future in futures.items():
                try:
                    results[q] = future.result()
                except PrometheusError as e:
                    results[q] = e
        log.debug("ran %d queries against %s", len(unique), self.url)
        return results


def _samples(raw: Any) -> Iterable[Sample]:
    # A scalar result arrives as [time, "value"]; a vector as a list of {"metric", "value"}.
    if isinstance(raw, list) and len(raw) == 2 and not isinstance(raw[0], dict):
        raw = [{"metric": {}, "value": raw}]
    for item in raw or ():
        sample: _RawSample = item
        try:
            value = float(sample["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if math.isnan(value):
            continue
        yield Sample(labels=dict(sample.get("metric", {})), value=value)


def _parse_api_error(text: str) -> tuple[int | None, str]:
    match = re.match(r"HTTP Status Code (\d+) \((.*)\)$", text, re.S)
    if not match:
        return None, text[:300]
    status = int(match.group(1))
    body = match.group(2)
    if body.startswith(("b'", 'b"')):
        body = body[2:-1].encode().decode("unicode_escape", errors="replace")
    try:
        detail = str(json.loads(body).get("error", body))
    except (ValueError, AttributeError):
        detail = body
    return status, detail[:300]


_AUTH_SETTINGS = (
    "the settings: prometheus.bearer_token_env or bearer_token_file (a token), prometheus.basic_auth "
    "{username, password_env or password_file}, prometheus.headers (e.g. X-Scope-OrgID for a Mimir/Cortex/Thanos "
    "tenant), prometheus.cert_file and key_file (a client certificate)"
)


def _fix_for(status: int | None, settings: PrometheusSettings) -> str:
    if status in (401, 403):
        refused = "refused" if status == 403 else "not accepted"
        configured = settings.describe_auth()
        return f"the credentials were {refused}; configured: {configured}. Check them, or use {_AUTH_SETTINGS}"
    if status == 407:
        return "the proxy wants credentials: put them in prometheus.proxy_url (http://user:password@proxy:3128)"
    if status in (400, 422):
        return (
            "the query is not valid PromQL for this server; check the templates of canary.yaml that made it: a custom "
            "gate's `gates.NAME.query`, a custom comparison's `numerator`/`denominator`, or `queries` (mesh: custom)"
        )
    if status == 404:
        return "check prometheus.url: it should be the base URL, without /api/v1"
    return "check Prometheus' own logs and health (/-/healthy)"


def _unreachable_fix(config: CanaryConfig) -> str:
    where = "--prometheus-url / prometheus.url in canary.yaml"
    parts = urlsplit(config.prometheus.base_url)
    if parts.hostname in ("127.0.0.1", "localhost") and parts.port == config.sandbox.prometheus_port:
        return f"is it running? Start the local one with 'canary-checks sandbox up', or set {where}"
    return f"is it running, and is this the right address? Check {where} (and prometheus.proxy_url if it needs one)"


def _tls_error(error: Exception, url: str, promql: str, settings: PrometheusSettings) -> PrometheusUnreachable:
    text = str(error)
    closed = "EOF occurred in violation of protocol" in text or "UNEXPECTED_EOF" in text
    if _client_cert_refused(error) or (closed and settings.cert_file):
        have = f"the client certificate {settings.cert_file}" if settings.cert_file else "no client certificate"
        how = (
            "refused the TLS client certificate"
            if not closed
            else "closed the TLS handshake (refused the client certificate?)"
        )
        return PrometheusUnreachable(
            f"{how}: {have} was offered",
            url=url,
            query=promql,
            fix="set prometheus.cert_file and prometheus.key_file to a certificate (and its key) signed by a CA the "
            "server trusts for clients",
        )
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        why = re.search(r"certificate verify failed: ([^(')]+)", text)
        trusted = f"prometheus.ca_file {settings.ca_file}" if settings.ca_file else "the system's CA bundle"
        return PrometheusUnreachable(
            f"certificate not trusted ({why.group(1).strip() if why else 'verify failed'}; checked against {trusted})",
            url=url,
            query=promql,
            fix="set prometheus.ca_file to the CA that signed the server's certificate (PEM), or, for a test "
            "server only, prometheus.verify_tls: false",
        )
    return PrometheusUnreachable(
        f"failed the TLS handshake ({_ssl_reason(text)})",
        url=url,
        query=promql,
        fix="check that prometheus.url speaks HTTPS at that port (http:// for a plain one), and prometheus.ca_file, "
        "verify_tls, cert_file and key_file",
    )


_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "certificate required", "BAD_CERTIFICATE", "bad certificate",
                       "UNKNOWN_CA", "unknown ca")  # fmt: skip


def _client_cert_refused(error: Exception) -> bool:
    """The server sent a TLS alert about the client's certificate (none sent, or one it does not trust)."""
    text = str(error)
    return "alert" in text.lower() and any(marker in text for marker in _CLIENT_CERT_ALERTS)


def _ssl_reason(text: str) -> str:
    match = re.search(r"\[SSL: ([A-Z0-9_]+)\]|SSLError\(\d+, '([^']+)'", text)
    if match:
        return (match.group(1) or match.group(2)).lower()
    return "SSLError"


def _looks_like_html(text: str) -> bool:
    return text.lstrip()[:15].lower().startswith(("<!doctype html", "<html", "<head", "<body"))


def _title(html: str) -> str:
    match = re.search(r"<title[^>]*>([^<]{0,80})", html, re.I)
    return f"title {match.group(1).strip()!r}" if match else "no title"


def _not_api(error: Exception) -> str:
    doc = getattr(error, "doc", None)
    if isinstance(doc, str):
        if _looks_like_html(doc):
            return f"an HTML page, {_title(doc)}"
        shown = " ".join(doc.split())[:60]
        return f"not JSON: {shown!r}" if shown else "an empty body"
    return "JSON without the query API's data.result"


def _reason(error: Exception) -> str:
    text = str(error)
    if "Proxy Authentication Required" in text:
        return "407 Proxy Authentication Required: put the proxy's user:password@ in prometheus.proxy_url"
    for marker in ("Connection refused", "timed out", "Name or service not known", "too many"):
        if marker in text:
            return marker.lower() if marker != "too many" else text[text.find("too many") :][:80].rstrip("')\"")
    return type(error).__name__
