"""What a failed connection to Prometheus means and how to fix it: the auth setting to check, TLS and client
certificate errors, a page that is not the API.

Seam: words only, from exceptions and answers :mod:`canary_checks.prometheus.source` met."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from canary_checks.config import CanaryConfig, PrometheusSettings
from canary_checks.errors import PrometheusUnreachable

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
