"""Values: what differs between teams and services (namespace, services, images, load), validated."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from canary_checks.config import (
    check_cookie_name,
    check_namespace,
)
from canary_checks.errors import ConfigError

Obj = dict[str, Any]

RUN_AS = 1001
"""UID and GID of the checks' image (docker/checks.Dockerfile) and the default of a service's ``run_as_user``."""
INITIAL_CANARY_WEIGHT = 5
CANARY_REPLICAS = 1
RUNBOOK = "https://github.com/orion/canary-checks/blob/main/docs/deployment/canary-strategy.md"
"""Where each alert's runbook lives: a heading per alert in docs/deployment/canary-strategy.md."""
CHECKS_IMAGE = "canary-checks:0.1.0"
"""A local tag of docker/checks.Dockerfile's image: no cluster can pull it until you push the image to your registry
and set ``checks_image`` (``manifests render`` says so)."""

# ---- values: what differs between teams and services -----------------------------------------------------------------

_SUFFIX = len("-canary")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _service_name(value: str) -> str:
    if len(value) > 63 - _SUFFIX or not _DNS_1035.match(value):
        raise ValueError(
            f"{value!r} is not a usable service name (lowercase letters, digits and '-', starting with a letter, "
            f"ending with a letter or digit, at most {63 - _SUFFIX} so that '<name>-canary' is a valid Service name)"
        )
    return value


def _image(value: str) -> str:
    if not value or any(c.isspace() for c in value) or value.startswith(("-", ":", "@")):
        raise ValueError(f"{value!r} is not an image reference such as registry.example/cart:1.2")
    return value


def _quantity(value: str) -> str:
    if not _QUANTITY.match(value):
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as 250m, 1, 128Mi or 1Gi")
    return value


def _env(value: dict[str, str]) -> dict[str, str]:
    bad = [k for k in value if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a valid environment variable name (letters, digits, '_', '-', '.')")
    return value


def _label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"{value!r} is not a valid Kubernetes label value (letters, digits, '-', '_', '.', ≤ 63)")
    return value


def _path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an HTTP path: it must start with '/'")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Quantity = Annotated[str, AfterValidator(_quantity)]


class ServiceValues(BaseModel):
    """One service: what differs between the services; everything else is the base."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: Annotated[str, AfterValidator(_service_name)]
    """The service: Deployments and Services `<name>-stable`, `<name>-canary`, Service and routing `<name>`."""
    image: Annotated[str, AfterValidator(_image)]
    """Image of the stable Deployment, e.g. `registry.example/cart:1.2`."""
    canary_image: Annotated[str, AfterValidator(_image)] | None = None
    """Image the canary Deployment starts with (default: `image`; `canary-checks run` sets the release's)."""
    port: Port = 8080
    """Container port of the service's HTTP traffic (the Services expose it as port 80)."""
    metrics_port: Port = 9090
    """Container port of the service's own /metrics (ServiceMonitors scrape it)."""
    health_path: Annotated[str, AfterValidator(_path)] = "/healthz"
    """HTTP path of the startup and liveness probes."""
    ready_path: Annotated[str, AfterValidator(_path)] = "/readyz"
    """HTTP path of the readiness probe."""
    replicas: Annotated[int, Field(ge=1)] = 3
    """Replicas of the stable Deployment (the canary has 1; its PodDisruptionBudget keeps all but one)."""
    cpu_request: Quantity = "100m"
    """CPU request of each pod."""
    cpu_limit: Quantity = "500m"
    """CPU limit of each pod (the cpu gate and alert measure usage against it)."""
    memory_request: Quantity = "128Mi"
    """Memory request of each pod."""
    memory_limit: Quantity = "256Mi"
    """Memory limit of each pod (the memory gate and alert measure the working set against it)."""
    env: Annotated[dict[str, str], AfterValidator(_env)] = Field(default_factory=dict)
    """Environment variables of both Deployments (`VERSION` is set to stable or canary)."""
    run_as_user: Annotated[int, Field(ge=1)] = RUN_AS
    """UID and GID the containers run as (non-root; read-only root file system, /tmp writable)."""

    @model_validator(mode="after")
    def _distinct_ports(self) -> ServiceValues:
        if self.port == self.metrics_port:
            raise ValueError(f"port and metrics_port are both {self.port}; give the metrics their own port")
        return self


class LoadValues(BaseModel):
    """Distributed Locust (``load/locust.yaml``), written only when there is a locustfile."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    locustfile: Path | None = None
    """Locustfile for a distributed Locust, relative to the values file (default: ./load/locustfile.py if it
    exists; --locustfile wins)."""
    host: str | None = None
    """URL Locust sends its requests to (default: `http://<first service>.<namespace>.svc.cluster.local`)."""
    workers: Annotated[int, Field(ge=1)] = 4
    """Locust worker replicas."""


class ManifestValues(BaseModel):
    """What ``canary-checks manifests render`` renders: a namespace and its services (``--values FILE``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    namespace: Annotated[str, AfterValidator(check_namespace)]
    """Namespace of the services, the runner's RBAC, the checks and the alert rules."""
    services: Annotated[list[ServiceValues], Field(min_length=1)]
    """The services, each with at least `name` and `image`."""
    part_of: Annotated[str, AfterValidator(_label_value)] | None = None
    """Value of the `app.kubernetes.io/part-of` label (default: the namespace)."""
    checks_image: Annotated[str, AfterValidator(_image)] = CHECKS_IMAGE
    """Image built from docker/checks.Dockerfile, run by checks/ (`canary-checks serve`) and argo/ (the Job)."""
    runbook_url: str | None = None
    """Your runbook page (e.g. a copy of docs/deployment/canary-strategy.md): each alert links to
    `<runbook_url>#<alert name in lower case>`; unset, the alerts carry no runbook link."""
    flagger_service: str | None = None
    """Service the Flagger Canary example (`flagger/canary-<service>.yaml`) is written for (default: the first)."""
    load: LoadValues = Field(default_factory=LoadValues)
    """Distributed Locust."""
    sticky_cookie: Annotated[str, AfterValidator(check_cookie_name)] | None = None
    """Sticky canary sessions' cookie (canary.yaml `routing.sticky.cookie`, e.g. `canary-checks`): set, every
    VirtualService and HTTPRoute carries the cookie routes from the start; unset, the runner adds them at its first
    weight change when `routing.sticky.enabled`. Either way it keeps them in step with the weight and removes them
    on rollback. The rendered cookies are the same at every render: applying the file again brings them back, as
    it brings back the initial weights (a client kept from an earlier rollout's canary would reach the canary),
    so apply it once and let the runner own the routes."""

    baseline: bool = False
    """Render each service's baseline (canary.yaml `baseline.enabled`, `canary-checks run --baseline`): a
    `<service>-baseline` Deployment at 0 replicas — stable's image and spec, labelled `version: baseline` — its
    Service and ServiceMonitor, a `baseline` subset, and a weight-0 backend beside stable and canary in every route.
    The runner scales it up with a fresh copy of stable's pod template beside the canary, gives it the canary's
    share, and scales it back to 0 on promotion and rollback (so its Role needs no `create`). Not with
    `sticky_cookie`."""

    @model_validator(mode="after")
    def _check(self) -> ManifestValues:
        if self.baseline and self.sticky_cookie is not None:
            raise ValueError("baseline and sticky_cookie are both set: a sticky client's cookie names canary or "
                             "stable, and a baseline would take clients of neither; leave one of them out")  # fmt: skip
        names = [s.name for s in self.services]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"service {twice[0]!r} is listed twice; give each service once")
        if self.flagger_service is not None and self.flagger_service not in names:
            raise ValueError(f"flagger_service {self.flagger_service!r} is not one of the services {names}")
        return self

    @property
    def labels_part_of(self) -> str:
        return self.part_of or self.namespace

    @property
    def load_host(self) -> str:
        return self.load.host or f"http://{self.services[0].name}.{self.namespace}.svc.cluster.local"

    @property
    def flagger(self) -> ServiceValues:
        return next(s for s in self.services if s.name == (self.flagger_service or self.services[0].name))


_DEMO_REGISTRY = "ghcr.io/orion"


def _demo(name: str, stable: str, canary: str, **more: Any) -> ServiceValues:
    return ServiceValues(
        name=name, image=f"{_DEMO_REGISTRY}/{name}:{stable}", canary_image=f"{_DEMO_REGISTRY}/{name}:{canary}", **more
    )


SERVICES: tuple[ServiceValues, ...] = (
    _demo("auth", "1.8.2", "1.9.0", env={"TOKEN_TTL_SECONDS": "900"}),
    _demo("gateway", "2.3.1", "2.4.0", cpu_request="250m", cpu_limit="1", memory_limit="512Mi"),
    _demo("notifications", "1.2.0", "1.3.0", memory_request="96Mi", memory_limit="192Mi"),
    _demo("user", "3.0.4", "3.1.0", memory_request="192Mi", memory_limit="384Mi"),
)
"""The demo's four services (the original system's), what ``manifests render`` writes with no values."""

DEMO = ManifestValues(
    namespace="orion",
    services=list(SERVICES),
    checks_image=f"{_DEMO_REGISTRY}/canary-checks:0.1.0",
    runbook_url=RUNBOOK,
    load=LoadValues(host="http://gateway.orion.svc.cluster.local"),
)
"""This repository's manifests/: the demo's namespace, services and images."""


def _describe(error: ValidationError, raw: Mapping[str, Any]) -> str:
    """One line per problem, naming the key as written in the values file (``services[1] (cart).port``)."""
    lines = []
    for item in error.errors():
        parts: list[str] = []
        loc = list(item["loc"])
        for i, part in enumerate(loc):
            if isinstance(part, int) and i > 0 and loc[i - 1] == "services":
                services = raw.get("services")
                entry = services[part] if isinstance(services, list) and part < len(services) else None
                name = entry.get("name") if isinstance(entry, dict) else None
                parts[-1] += f"[{part}]" + (f" ({name})" if isinstance(name, str) else "")
            else:
                parts.append(str(part))
        key = ".".join(parts) or "(top level)"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling)"
        bad = item.get("input")
        quiet = item["type"] in ("missing", "extra_forbidden") or isinstance(bad, dict | list) or repr(bad) in msg
        lines.append(f"{key}: {msg}" + ("" if quiet else f" (got {bad!r})"))
    return "; ".join(lines)


_VALUES_FIX = "see every key of the values file in `canary-checks manifests render --help`"


def values_reference() -> list[tuple[str, str, str]]:
    """Every key of the values file as (key, default, meaning), for ``--help`` and manifests/README.md."""
    rows = []
    for prefix, model in (("", ManifestValues), ("services[].", ServiceValues), ("load.", LoadValues)):
        for name, info in model.model_fields.items():
            if name == "load" and model is ManifestValues:
                continue
            if info.is_required():
                default = "required"
            elif info.default_factory is not None:
                default = str(info.default_factory())  # type: ignore[call-arg]
            else:
                default = "—" if info.default is None else str(info.default)
            rows.append((f"{prefix}{name}", default, " ".join((info.description or "").split())))
    return rows


def values_table() -> str:
    """:func:`values_reference` as the Markdown table in manifests/README.md."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, meaning in values_reference():
        shown = default if default in ("required", "—") else f"`{default}`"
        rows.append(f"| `{key}` | {shown} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(rows) + "\n"


def load_values(
    path: Path | None = None, *, namespace: str | None = None, services: Sequence[tuple[str, str]] = ()
) -> ManifestValues:
    """The values to render: ``path`` (a values file), then the flags on top of it — ``namespace`` replaces the
    file's, each ``(name, image)`` sets that service's image or adds the service. Nothing given: :data:`DEMO`.

    A values file's ``load.locustfile`` is made relative to the file's folder."""
    if path is None and namespace is None and not services:
        return DEMO
    raw: dict[str, Any] = {}
    where = "command line (--namespace, --service)"
    if path is not None:
        where = str(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read the values file ({e.strerror})", where=where, fix=_VALUES_FIX) from None
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}", where=where, fix="fix the YAML syntax") from None
        if not isinstance(loaded, dict):
            raise ConfigError(
                "expected a mapping with at least `namespace:` and `services:`", where=where, fix=_VALUES_FIX
            )
        raw = loaded
        if path is not None and (namespace is not None or services):
            where += " and the command line"
    if namespace is not None:
        raw["namespace"] = namespace
    if services and isinstance(raw.get("services", []), list):  # anything else is the file's error, named below
        entries: list[Any] = list(raw.get("services", []))
        for name, image in services:
            same = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
            if same:
                same[0]["image"] = image
            else:
                entries.append({"name": name, "image": image})
        raw["services"] = entries
    missing = [k for k in ("namespace", "services") if k not in raw]
    if missing:
        flags = {"namespace": "--namespace NS", "services": "--service NAME=IMAGE"}
        raise ConfigError(
            f"{' and '.join(missing)} missing",
            where=where,
            fix=" and ".join(
                f"add `{k}:` to the values file or pass {flags[k]}" if path else f"pass {flags[k]}" for k in missing
            ),
        )
    try:
        values = ManifestValues.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, raw), where=where, fix=_VALUES_FIX) from None
    if path is not None and values.load.locustfile is not None and not values.load.locustfile.is_absolute():
        load = values.load.model_copy(update={"locustfile": path.parent / values.load.locustfile})
        values = values.model_copy(update={"load": load})
    return values
