"""From a file to a :class:`~canary_checks.config.model.CanaryConfig`: finding the file, reading YAML, several
services in one file (`services:`, merged over the shared keys), command-line overrides, and one clear error per
mistake, naming the file and the section.

Seam: everything that touches a file or a flag; the models know nothing of files."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from canary_checks.config.model import CanaryConfig, _describe, _describe_one
from canary_checks.config.units import CONFIG_ENV, DEFAULT_CONFIG_NAME, check_workload
from canary_checks.errors import ConfigError


def find_config(explicit: str | os.PathLike[str] | None = None, *, search: tuple[Path, ...] = ()) -> Path | None:
    """The config file to use: ``explicit``, else ``$CANARY_CONFIG``, else the first ``canary.yaml`` in ``search``.

    An explicit or environment path that does not exist is an error; no file at all means built-in defaults."""
    for source, value in (("--canary-config", explicit), (CONFIG_ENV, os.environ.get(CONFIG_ENV))):
        if value:
            path = Path(value)
            if not path.is_file():
                raise ConfigError(
                    f"config file {str(path)!r} does not exist",
                    where=source,
                    fix=f"create it ('canary-checks init' writes one) or pass an existing file to {source}",
                )
            return path
    for folder in search:
        candidate = folder / DEFAULT_CONFIG_NAME
        if candidate.is_file():
            return candidate
    return None


def require_config(explicit: str | os.PathLike[str] | None = None, *, search: tuple[Path, ...] = ()) -> Path:
    """As :func:`find_config`, but no file at all is an error: outside the sandbox, guessing a service, namespace
    and Prometheus would judge the wrong thing (the built-in defaults are the sandbox's)."""
    path = find_config(explicit, search=search)
    if path is None:
        places = " or ".join(dict.fromkeys(str(folder) for folder in search)) or "the current directory"
        raise ConfigError(
            f"no {DEFAULT_CONFIG_NAME} in {places}: canary-checks needs to know the service, its namespace and "
            "its Prometheus",
            fix=f"run 'canary-checks init --service NAME --namespace NS --prometheus-url URL' here to write one "
            f"(with the suites and a CI example), or pass --canary-config PATH, or set {CONFIG_ENV}",
        )
    return path


# Command-line overrides: flag name → dotted config key.
_FLAG_KEYS = {
    "service": "--service",
    "namespace": "--namespace",
    "mesh": "--mesh",
    "prometheus.url": "--prometheus-url",
    "window": "--window",
}


SERVICES_KEY = "services"
"""The top-level key of a file describing several services: ``services: {NAME: {settings of NAME}}``."""


def read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, as written (a ConfigError naming the file when it is not)."""
    where = str(path)
    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the file: {e.strerror}", where=where) from e
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"not valid YAML{at}: {problem}", where=where, fix="fix the YAML syntax") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"expected a mapping of settings at the top level; got {type(loaded).__name__}", where=where)
    return loaded


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, at every depth; lists and scalars replace."""
    merged = dict(base)
    for key, value in over.items():
        below = merged.get(key)
        merged[key] = deep_merge(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged


def service_sections(raw: Mapping[str, Any], *, where: str = "") -> dict[str, dict[str, Any]]:
    """The ``services:`` sections of a raw config, by service name (empty: a one-service file)."""
    if SERVICES_KEY not in raw:
        return {}
    sections = raw[SERVICES_KEY]
    example = "services: {gateway: {namespace: edge}, user: {gates: {error_rate: {threshold: 2}}}}"
    if not isinstance(sections, Mapping) or not sections:
        raise ConfigError(
            f"services: expected a mapping of service name to its settings; got {sections!r}",
            where=where,
            fix=f"write e.g. {example}, or remove `services` for a file that describes one service",
        )
    if "service" in raw:
        raise ConfigError(
            f"service: {raw['service']!r} next to `services`: with several services, each one's name is its key "
            "under services",
            where=where,
            fix="remove the top-level `service` key; choose a service with --service NAME",
        )
    found: dict[str, dict[str, Any]] = {}
    for name, section in sections.items():
        try:
            check_workload(str(name))
        except ValueError as e:
            raise ConfigError(f"services.{name}: the service name {e}", where=where) from None
        if section is None:
            section = {}
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"services.{name}: expected a mapping of the settings that differ for {name}; got {section!r}",
                where=where,
                fix=f"write e.g. services: {{{name}: {{namespace: orion}}}}, or {{}} to take every shared setting",
            )
        for key in ("service", SERVICES_KEY):
            if key in section:
                raise ConfigError(
                    f"services.{name}.{key}: not allowed in a service's section (the section's key, {name}, is "
                    "the service's name)",
                    where=where,
                    fix=f"remove services.{name}.{key}",
                )
        found[str(name)] = dict(section)
    return found


def select_service(raw: Mapping[str, Any], service: str | None, *, where: str = "") -> tuple[dict[str, Any], str]:
    """The raw settings in force for ``service`` of a file with ``services:`` — the shared (top-level) settings
    with the service's section merged over them (:func:`deep_merge`) and ``service`` set to its name — and which
    service that is. One service needs no choice; several need ``service``."""
    sections = service_sections(raw, where=where)
    names = ", ".join(sections)
    if service is None:
        if len(sections) > 1:
            raise ConfigError(
                f"this file describes {len(sections)} services ({names}); which one is meant?",
                where=where,
                fix="pass --service NAME with one of them (canary-checks config show --service NAME shows "
                "what is in force for it)",
            )
        service = next(iter(sections))
    if service not in sections:
        raise ConfigError(
            f"no service {service!r} in this file; it describes {names}",
            where=where,
            fix=f"use one of: {names}; or add services.{service} (canary-checks init --service {service})",
        )
    shared = {k: v for k, v in raw.items() if k != SERVICES_KEY}
    return {**deep_merge(shared, sections[service]), "service": service}, service


def _in_section(section: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    """Whether the value at ``loc`` (a pydantic error location) was written in ``section``."""
    node: Any = section
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Mapping) and str(part) in {str(k) for k in node}:
            node = next(v for k, v in node.items() if str(k) == str(part))
        elif isinstance(node, list | tuple) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return bool(loc)


def _section_error(error: ValidationError, raw: Mapping[str, Any], service: str) -> str:
    """As :func:`_describe`, with the path of each mistake made in ``services.SERVICE`` written in full."""
    section = service_sections(raw).get(service, {})
    described = []
    for item in error.errors():
        text = _describe_one(item)
        if _in_section(section, tuple(item["loc"])):
            text = f"{SERVICES_KEY}.{service}.{text}"
        described.append(text)
    return "; ".join(described)


def config_from(
    raw: Mapping[str, Any], *, where: str, service: str | None = None, every_service: bool = False
) -> CanaryConfig:
    """Validate a config as read from a file (``where``); with ``services:``, the one of ``service``
    (:func:`select_service`). A mistake in another service's section does not hold this one up (its release, or
    its rollback, is not that team's typo's hostage) unless ``every_service`` (``config show``: the file's check)."""
    config = _config_of(raw, where=where, service=service)
    for other in service_sections(raw, where=where) if every_service and SERVICES_KEY in raw else ():
        if other != config.service:
            _config_of(raw, where=where, service=other)
    return config


def _config_of(raw: Mapping[str, Any], *, where: str, service: str | None) -> CanaryConfig:
    chosen: str | None = None
    merged: Mapping[str, Any] = raw
    if SERVICES_KEY in raw:
        merged, chosen = select_service(raw, service, where=where)
    at = f"{where} (service {chosen})" if chosen is not None else where
    try:
        return CanaryConfig.model_validate(merged)
    except ValidationError as e:
        what = _section_error(e, raw, chosen) if chosen is not None else _describe(e)
        raise ConfigError(what, where=at, fix="'canary-checks config reference' lists every key") from None
    except ConfigError as e:  # a stage's overrides (stage_gates.25: ...): which file, and which section
        if chosen is None:
            raise
        inside = e.where.split(".")[0] in service_sections(raw)[chosen]
        key = f"{SERVICES_KEY}.{chosen}.{e.where}" if inside else e.where
        raise ConfigError(e.what, where=f"{at}: {key}", fix=e.fix) from None


def load_config(path: Path | None, overrides: Mapping[str, Any] | None = None) -> CanaryConfig:
    """Read and validate ``path`` (``None``: defaults), then apply flag ``overrides`` (dotted keys).

    In a file with ``services:``, the ``service`` override chooses the section (:func:`select_service`) instead of
    renaming the service."""
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    raw = read_yaml(path) if path is not None else {}
    service = given.pop("service", None) if SERVICES_KEY in raw else None
    config = config_from(raw, where=str(path) if path is not None else "built-in defaults", service=service)
    if path is not None and not config.sandbox.state_dir.is_absolute():
        sandbox = config.sandbox.model_copy(update={"state_dir": path.parent.resolve() / config.sandbox.state_dir})
        config = config.model_copy(update={"sandbox": sandbox})
    if not given:
        return config
    data = config.model_dump()
    for key, value in given.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return CanaryConfig.model_validate(data)
    except ValidationError as e:
        bad = {".".join(str(p) for p in item["loc"]) for item in e.errors()}
        named = [k for k in given if any(b == k or b.startswith(f"{k}.") for b in bad)] or list(given)
        flags = ", ".join(_FLAG_KEYS.get(k, k) for k in named)
        raise ConfigError(_describe(e), where=f"command line ({flags})") from None


def default_of(key: str) -> Any:
    """The built-in default of a dotted key (``gates.error_rate.threshold`` → 5.0; in a section unset by default,
    such as ``rollout.release_windows.outside``, that section's own default), for help texts: they read the defaults
    from here instead of repeating them."""
    value: Any = CanaryConfig()
    *sections, leaf = key.split(".")
    for part in sections:
        found = getattr(value, part)
        if found is None:
            annotation = type(value).model_fields[part].annotation
            found = next(a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel))()
        value = found
    return getattr(value, leaf)


def flag_overrides(**values: Any) -> dict[str, Any]:
    """Map keyword flag values (service=..., prometheus_url=...) to the dotted keys :func:`load_config` takes."""
    keys = {"prometheus_url": "prometheus.url", "baseline": "baseline.enabled"}
    return {keys.get(name, name): value for name, value in values.items() if value is not None}


def parse_gate_flags(values: list[str] | tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``["error_rate=3", "latency_p95.severity=critical"]`` → ``{"error_rate": {"threshold": "3"}, ...}``."""
    overrides: dict[str, dict[str, str]] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        gate, _, field = key.strip().partition(".")
        if not sep or not gate or not setting.strip():
            raise ConfigError(
                f"expected GATE=THRESHOLD or GATE.FIELD=VALUE; got {value!r}",
                where="--threshold",
                fix="e.g. --threshold error_rate=3 --threshold latency_p95.severity=critical",
            )
        overrides.setdefault(gate, {})[field or "threshold"] = setting.strip()
    return overrides
