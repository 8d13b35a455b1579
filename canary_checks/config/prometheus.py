"""Reaching Prometheus: its URL, query profile and auth (bearer, basic, headers, mTLS, proxy) with secrets named,
never written; the workloads' names and the custom mesh's queries.

Seam: the models only; querying is :mod:`canary_checks.prometheus`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from canary_checks.config.units import Duration, Range, _Model
from canary_checks.errors import ConfigError, redact_url


class Workloads(_Model):
    stable: str = "{service}-stable"
    """Name of the stable Deployment (Istio destination_workload, Linkerd deployment); {service} is replaced."""
    canary: str = "{service}-canary"
    """Name of the canary Deployment; {service} is replaced."""
    baseline: str = "{service}-baseline"
    """Name of the baseline Deployment (baseline.enabled: a fresh copy of stable); {service} is replaced."""


class CustomQueries(_Model):
    """PromQL templates for ``mesh: custom``. Placeholders: $namespace, $workload, $window, $quantile.

    Each must return one number (a single-element vector) for the named workload."""

    requests: str
    """Requests received in $window (a count, e.g. sum(increase(...[$window])))."""
    errors: str
    """Requests answered with an error in $window (a count)."""
    successes: str
    """Requests answered successfully in $window (a count)."""
    latency: str
    """Latency quantile $quantile in milliseconds over $window."""
    buckets: str | None = None
    """Latency histogram bucket counts in $window by le, milliseconds (sum by (le) (increase(..._bucket[$window])));
    without it the latency comparisons have no data."""


class Secret(_Model):
    """A secret read when a query is sent, never stored: from an environment variable or a file (one of them)."""

    env: str | None = None
    """Name of an environment variable holding the value."""
    file: Path | None = None
    """A file holding the value (e.g. a mounted Kubernetes Secret); surrounding whitespace is dropped."""

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of env (a variable name) or file (a path)")
        return self


class BasicAuth(_Model):
    """HTTP basic authentication: a user name and a password read from the environment or a file."""

    username: str
    """The user name (not a secret: written as is)."""
    password_env: str | None = None
    """Name of an environment variable holding the password (never logged)."""
    password_file: Path | None = None
    """A file holding the password (never logged)."""

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file are both set: choose one")
        if not (self.password_env or self.password_file):
            raise ValueError(
                "no password: set password_env (an environment variable's name) or password_file (a path); a "
                "password is never written in the config itself"
            )
        return self


HeaderValue = Annotated[
    Annotated[str, Tag("value")] | Annotated[Secret, Tag("secret")],
    Discriminator(lambda v: "value" if isinstance(v, str) else "secret"),
]
"""A header's value: written as is, or a :class:`Secret` (one error naming the key when it is neither)."""

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _read_secret(env: str | None, file: Path | None, keys: tuple[str, str]) -> str:
    """The value of a secret from the environment variable ``env`` or the file ``file``; ``keys`` name the two
    settings (env, file) in the messages. Never logged."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(
                f"environment variable {env} is empty or unset",
                where=keys[0],
                fix=f"export {env}=<value>, or change the setting",
            )
        return value.strip()
    assert file is not None
    try:
        return file.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"cannot read {file}: {e.strerror}",
            where=keys[1],
            fix="point it at a readable file (a mounted Secret?), or remove the setting",
        ) from e


class PrometheusSettings(_Model):
    url: str = "http://127.0.0.1:19090"
    """Base URL of the Prometheus HTTP API (also Thanos/Mimir query frontends). A `user:password@` in it is used as
    basic auth and shown and stored as `user:***@`; prefer basic_auth with password_env."""
    bearer_token_env: str | None = None
    """Name of an environment variable holding a bearer token (never logged)."""
    bearer_token_file: Path | None = None
    """A file holding a bearer token, e.g. a mounted ServiceAccount token (never logged)."""
    basic_auth: BasicAuth | None = None
    """HTTP basic auth: `{username: U, password_env: VAR}` or `{username: U, password_file: PATH}`."""
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    """Extra HTTP headers on every query, e.g. `{X-Scope-OrgID: team-a}` for a Mimir/Cortex/Thanos tenant; a
    secret value as `{env: VAR}` or `{file: PATH}` (never logged)."""
    verify_tls: bool = True
    """Verify the server's TLS certificate."""
    ca_file: Path | None = None
    """CA bundle to verify the server's certificate with."""
    cert_file: Path | None = None
    """Client certificate (PEM) for mutual TLS; needs key_file."""
    key_file: Path | None = None
    """Private key (PEM, unencrypted) of cert_file; may be the same file."""
    proxy_url: str | None = None
    """HTTP(S) proxy to reach Prometheus through (http://proxy:3128); when set, HTTPS_PROXY/HTTP_PROXY are
    ignored. Unset: those environment variables apply."""
    timeout: Duration = 10.0
    """Per-query timeout, seconds."""
    retries: Annotated[int, Range("a number of retries", 0, 10)] = 1
    """Retries on 502/503/504 answers and read timeouts before a gate errors (a refused connection is final)."""
    query_offset: Annotated[Duration, Range("a duration", 0.0, 600.0)] = 1.0
    """How far in the past every query is evaluated. A scrape in flight is stored under the time it started, so
    queries at "now" can see it in one query and miss it in the next, and the requests of a window stop adding up to
    its errors plus successes. Raise it where ingestion lags (remote write into Mimir, Thanos Receive, Cortex)."""

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// URL; got {redact_url(value)!r}")
        return value.rstrip("/")

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"expected an http:// or https:// proxy URL; got {redact_url(value)!r}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str | Secret]) -> dict[str, str | Secret]:
        for name, given in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() == "authorization":
                raise ValueError(
                    "set Authorization through bearer_token_env/bearer_token_file or basic_auth, not headers"
                )
            if isinstance(given, str) and ("\n" in given or "\r" in given):
                raise ValueError(f"the value of header {name} has a line break")
        return value

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSettings:
        if self.bearer_token_env and self.bearer_token_file:
            raise ValueError("bearer_token_env and bearer_token_file are both set: choose one")
        ways = [
            name
            for name, on in (
                ("bearer_token_env/bearer_token_file", self.bearer_token_env or self.bearer_token_file),
                ("basic_auth", self.basic_auth),
                ("a user:password@ in url", urlsplit(self.url).username is not None),
            )
            if on
        ]
        if len(ways) > 1:
            raise ValueError(f"{' and '.join(ways)} are both set: choose one way to authenticate")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file is set without cert_file: set cert_file to the client certificate (PEM)")
        if self.cert_file and not self.key_file:
            raise ValueError(
                "cert_file is set without key_file: set key_file to its private key (the same path if the PEM "
                "file holds both)"
            )
        return self

    @property
    def base_url(self) -> str:
        """The URL queries go to: without any ``user:password@`` (that is sent as basic auth)."""
        parts = urlsplit(self.url)
        if parts.username is None:
            return self.url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))

    def open_at(self, url: str) -> PrometheusSettings:
        """These settings for an open local Prometheus at ``url`` (a replay's): no credentials, headers, client
        certificate or proxy, so none is needed or sent to it."""
        cleared: dict[str, Any] = {"url": url, "bearer_token_env": None, "bearer_token_file": None, "basic_auth": None,
                   "headers": {}, "ca_file": None, "cert_file": None, "key_file": None, "proxy_url": None}  # fmt: skip
        return self.model_copy(update=cleared)

    @property
    def shown_url(self) -> str:
        """The URL as shown and stored: a password in it replaced by ``***``."""
        return redact_url(self.url)

    def bearer_token(self) -> str | None:
        """The token, read now from the environment or the file; ``None`` when none is configured."""
        if not (self.bearer_token_env or self.bearer_token_file):
            return None
        return _read_secret(
            self.bearer_token_env,
            self.bearer_token_file,
            ("prometheus.bearer_token_env", "prometheus.bearer_token_file"),
        )

    def basic_credentials(self) -> tuple[str, str] | None:
        """(user, password) for basic auth, read now: from ``basic_auth`` or the URL; ``None`` when neither."""
        if self.basic_auth is not None:
            a = self.basic_auth
            return a.username, _read_secret(
                a.password_env,
                a.password_file,
                ("prometheus.basic_auth.password_env", "prometheus.basic_auth.password_file"),
            )
        parts = urlsplit(self.url)
        if parts.username is not None:
            return unquote(parts.username), unquote(parts.password or "")
        return None

    def header_values(self) -> dict[str, str]:
        """The extra headers with their secret values read now."""
        values = {}
        for name, value in self.headers.items():
            if isinstance(value, str):
                values[name] = value
                continue
            keys = (f"prometheus.headers.{name}.env", f"prometheus.headers.{name}.file")
            values[name] = read = _read_secret(value.env, value.file, keys)
            if "\n" in read or "\r" in read:
                raise ConfigError(
                    "the value has a line break inside (one header value is one line)",
                    where=keys[0] if value.env else keys[1],
                    fix="store the value alone on one line",
                )
        return values

    def check_secrets(self) -> None:
        """Read every configured secret and file once: a missing variable or unreadable file is a
        :class:`ConfigError` naming its key, before any query is sent."""
        self.bearer_token()
        self.basic_credentials()
        self.header_values()
        for key in ("ca_file", "cert_file", "key_file"):
            path: Path | None = getattr(self, key)
            # a CA may also be a directory of hashed certificates (c_rehash), as OpenSSL's CApath
            if path is not None and not (path.is_file() or (key == "ca_file" and path.is_dir())):
                raise ConfigError(
                    f"{path} does not exist or is not a file",
                    where=f"prometheus.{key}",
                    fix="point it at a readable PEM file, or remove the setting",
                )

    def describe_auth(self) -> str:
        """How queries authenticate, as a person reads it (never a secret): ``bearer token from $PROM_TOKEN``."""
        parts = []
        if self.bearer_token_env:
            parts.append(f"a bearer token from ${self.bearer_token_env}")
        elif self.bearer_token_file:
            parts.append(f"a bearer token from {self.bearer_token_file}")
        elif self.basic_auth is not None:
            a = self.basic_auth
            source = f"${a.password_env}" if a.password_env else str(a.password_file)
            parts.append(f"basic auth as user {a.username!r} (password from {source})")
        elif urlsplit(self.url).username is not None:
            parts.append(f"basic auth as user {unquote(urlsplit(self.url).username or '')!r} from the URL")
        else:
            parts.append("no authentication")
        if self.headers:
            parts.append("headers " + ", ".join(self.headers))
        if self.cert_file:
            parts.append(f"client certificate {self.cert_file}")
        return "; ".join(parts)
