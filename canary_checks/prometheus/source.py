"""Asking Prometheus: :class:`MetricsSource` with its auth (bearer, basic, headers, mTLS, proxy), retries, and
concurrent instant queries at one instant, and the four outcomes a query has (samples, no data, a query error,
unreachable).

Seam: the one module that sends queries; what a failure means to a user is :mod:`canary_checks.prometheus.diagnosis`."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from canary_checks.config import CanaryConfig, Mesh
from canary_checks.errors import (
    InvalidLabelValue,
    PrometheusError,
    PrometheusQueryError,
    PrometheusUnreachable,
    redact_url,
)
from canary_checks.prometheus.diagnosis import (
    _client_cert_refused,
    _fix_for,
    _looks_like_html,
    _not_api,
    _reason,
    _title,
    _tls_error,
    _unreachable_fix,
)
from canary_checks.prometheus.profiles import MESH_METRICS, escape_label, profile_for, render_template

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
