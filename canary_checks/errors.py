"""The exception tree of canary-checks.

Every error says *what* went wrong, *where* (a file and key, a URL and query, a port) and *how to fix it*::

    CanaryError
    ├── ConfigError            a bad canary.yaml, flag or environment value
    │   └── InvalidLabelValue  a name that would change what a PromQL query means
    ├── PrometheusError        the metrics source could not answer (a gate *errors*, never passes)
    │   ├── PrometheusUnreachable   no connection / timeout
    │   └── PrometheusQueryError    Prometheus answered with an error (bad query, 4xx/5xx)
    ├── KubeError              the Kubernetes API refused or failed a call (status and cut body carried)
    │   ├── KubeNotFound       404: the object or its resource type does not exist
    │   ├── KubeConflict       409: someone else changed the object first
    │   ├── KubeServerError    5xx: the API server failed
    │   └── KubeUnreachable    no connection / timeout
    ├── RoutingError           a traffic router could not be read or set
    │   └── WeightNotApplied   the router did not confirm the weight that was set
    └── SandboxError           the local sandbox could not start or be driven
        ├── MissingBinary      prometheus / haproxy / locust is not installed
        └── PortInUse          a port the sandbox needs is taken
"""

from __future__ import annotations

import re

__all__ = [
    "CanaryError",
    "ConfigError",
    "InvalidLabelValue",
    "KubeConflict",
    "KubeError",
    "KubeNotFound",
    "KubeServerError",
    "KubeUnreachable",
    "MissingBinary",
    "PortInUse",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusUnreachable",
    "RoutingError",
    "SandboxError",
    "WeightNotApplied",
    "redact_url",
]

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*)(?P<password>:[^/\s]*)?@")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it replaced: ``https://u:secret@host`` → ``https://u:***@host``
    (a user alone, often a token, becomes ``***@``).

    Every place that shows or stores a URL a user configured (messages, the pytest header, run.json, reports, the
    monitor, ``config show``) goes through this."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["password"] else f"{m['scheme']}***@", text)


class CanaryError(Exception):
    """Root of all canary-checks errors: a message a user can act on, never a traceback."""

    def __init__(self, what: str, *, where: str = "", fix: str = "") -> None:
        self.what = what
        self.where = where
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.fix:
            text = f"{text}\n  fix: {self.fix}"
        return text


class ConfigError(CanaryError):
    """A configuration value (file, flag or environment) is wrong."""


class InvalidLabelValue(ConfigError):
    """A value meant for a PromQL label matcher is not a valid Kubernetes name."""


class PrometheusError(CanaryError):
    """Prometheus could not be read; the gate that needed it errors (it neither passes nor fails)."""

    def __init__(self, what: str, *, url: str, query: str = "", fix: str = "") -> None:
        url = redact_url(url)
        self.url = url
        self.query = query
        where = f"Prometheus at {url}" + (f" (query {query!r})" if query else "")
        super().__init__(what, where=where, fix=fix)

    @property
    def headline(self) -> str:
        """One line without the query: the same for every query a broken source failed."""
        return f"Prometheus at {self.url}: {self.what}"


class PrometheusUnreachable(PrometheusError):
    """No connection could be made, or it timed out."""


class PrometheusQueryError(PrometheusError):
    """Prometheus answered, with an error (HTTP status and cut body in the message)."""

    def __init__(self, what: str, *, url: str, query: str = "", status: int | None = None, fix: str = "") -> None:
        self.status = status
        super().__init__(what, url=url, query=query, fix=fix)


class KubeError(CanaryError):
    """A Kubernetes API call failed: ``status`` is the HTTP status (None when there was no answer)."""

    def __init__(self, what: str, *, where: str = "", fix: str = "", status: int | None = None, body: str = "") -> None:
        self.status = status
        self.body = body[:500]
        super().__init__(what, where=where, fix=fix)


class KubeNotFound(KubeError):
    """404: the object, or its resource type (a CRD not installed), does not exist."""


class KubeConflict(KubeError):
    """409: the object changed since it was read; read it again and retry."""


class KubeServerError(KubeError):
    """5xx: the API server failed; retrying may help."""


class KubeUnreachable(KubeError):
    """No connection to the API server, or it timed out."""


class RoutingError(CanaryError):
    """A routing resource (VirtualService, TrafficSplit, HTTPRoute, HAProxy) could not be read or changed."""


class WeightNotApplied(RoutingError):
    """The router did not confirm the weight that was set."""


class SandboxError(CanaryError):
    """The local sandbox could not be started, stopped or changed."""


class MissingBinary(SandboxError):
    """A program the sandbox runs is not installed."""


class PortInUse(SandboxError):
    """A loopback port the sandbox needs is already taken."""
