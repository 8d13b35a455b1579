"""``canary-checks init``: what a service's repository needs, written into it.

- ``canary.yaml`` — every setting with its default visible and its meaning in a comment (generated from the config
  models, so it never drifts from what the tool reads), with the service, namespace, mesh and Prometheus given;
- ``suites/gate/``, ``suites/smoke/`` — copies of the packaged suites (thin test files over the plugin) for the team
  to extend;
- ``conftest.py`` — the team's own fixtures and hooks;
- a CI example (GitHub Actions or GitLab CI) from this folder's templates.

Nothing is overwritten without ``force``; when anything would be, nothing at all is written.

Run with ``--service`` where a canary.yaml exists already, it adds that service to it instead
(:func:`add_service`): a section under ``services:``, over the shared settings; a one-service file becomes a
several-service one first (its service a section of its own, with every setting shared as before).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel

from canary_checks.config import (
    DEFAULT_CONFIG_NAME,
    SERVICES_KEY,
    CanaryConfig,
    ComparisonSettings,
    GateSettings,
    config_from,
    flag_overrides,
    load_config,
    parse_duration,
    read_yaml,
    service_sections,
)
from canary_checks.errors import ConfigError, redact_url
from canary_checks.suite import SUITES, packaged

__all__ = ["CI_TARGETS", "Scaffold", "add_service", "config_yaml", "init"]

HERE = Path(__file__).parent
CI_TARGETS = {
    "github": (HERE / "github-actions.yml", Path(".github/workflows/canary.yml")),
    "gitlab": (HERE / "gitlab-ci.yml", Path("ci/canary.gitlab-ci.yml")),
}
"""--ci choice → (template in this package, where it is written in the service's repository)."""
SERVICE_TOKEN = "SERVICE_NAME"
"""Replaced by the service's name in the CI templates."""
LEFT_OUT = {"sandbox": "the local sandbox of canary-checks' own repository", "queries": "only with mesh: custom"}
"""Top-level settings a service's canary.yaml does not need written out."""

CONFTEST = '''"""Your own pytest fixtures and hooks, beside those of canary-checks (its plugin loads on its own).

The suites in suites/ use the plugin's fixtures: `gate` (an evaluated gate; `gate.verify()` turns its verdict into
the test's outcome), `smoke` (requests through the canary's header route), `canary_target` (the resolved config,
stage and thresholds) and `canary_source` (the Prometheus of canary.yaml: `canary_source.query("promql")`).
A gate of your own: a key with a `query` under `gates:` in canary.yaml, or a test taking `canary_gate`, which
queries that Prometheus and records its result as a gate (docs/gates.md#custom-gates).
Fixtures defined here are available to every test in this repository.
"""
'''


@dataclass(frozen=True)
class Scaffold:
    """What ``init`` wrote: the files (relative to its directory), the config, and the CI file if any."""

    written: list[Path]
    config: CanaryConfig
    ci: Path | None
    added: bool = False
    """The service was added to an existing canary.yaml (only that file changed)."""


def _service_from(directory: Path) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", directory.resolve().name.lower()).strip("-")
    return name or "my-service"


def init(
    directory: Path,
    *,
    service: str | None = None,
    namespace: str | None = None,
    mesh: str | None = None,
    prometheus_url: str | None = None,
    url: str | None = None,
    ci: str = "github",
    force: bool = False,
) -> Scaffold:
    """Write the scaffold into ``directory``. Bad values or files in the way raise :class:`ConfigError` before
    anything is written. A ``service`` other than the one (or those) of an existing canary.yaml is added to it
    (:func:`add_service`)."""
    existing = directory / DEFAULT_CONFIG_NAME
    if service is not None and existing.is_file() and _adds(existing, service, force):
        config = add_service(existing, service, namespace=namespace, mesh=mesh, prometheus_url=prometheus_url,
                             url=url, force=force)  # fmt: skip
        return Scaffold([Path(DEFAULT_CONFIG_NAME)], config, None, added=True)
    service = service or _service_from(directory)
    namespace = namespace or "default"
    if prometheus_url and urlsplit(prometheus_url).password is not None:
        user = urlsplit(prometheus_url).username
        raise ConfigError(
            f"{redact_url(prometheus_url)} holds a password, and canary.yaml is committed; nothing was written",
            where="--prometheus-url",
            fix=f"pass it without 'user:password@', then set prometheus.basic_auth: {{username: {user}, "
            "password_env: PROMETHEUS_PASSWORD} in canary.yaml and the secret in your CI",
        )
    overrides = flag_overrides(
        service=service,
        namespace=namespace,
        mesh=mesh or "istio",
        prometheus_url=prometheus_url or "http://prometheus.monitoring.svc:9090",
    )
    overrides["smoke.url"] = url or f"http://{service}.{namespace}.svc.cluster.local"
    config = load_config(None, overrides)
    files: dict[Path, str] = {Path("canary.yaml"): config_yaml(config)}
    for kind in SUITES:
        for source in sorted(packaged(kind).glob("test_*.py")):
            files[Path("suites") / kind / source.name] = source.read_text()
    files[Path("conftest.py")] = CONFTEST
    ci_path = None
    if ci != "none":
        template, ci_path = CI_TARGETS[ci]
        files[ci_path] = template.read_text().replace(SERVICE_TOKEN, config.service)
    taken = [path for path in files if (directory / path).exists()]
    if taken and not force:
        raise ConfigError(
            f"{', '.join(str(p) for p in taken)} already exist{'s' if len(taken) == 1 else ''} in {directory}; "
            "nothing was written",
            where="canary-checks init",
            fix="move them aside, or pass --force to overwrite them",
        )
    for path, text in files.items():
        target = directory / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_dir():
            shutil.rmtree(target)
        target.write_text(text)
    written = list(files)
    if _ignore(directory / ".gitignore"):
        written.append(Path(".gitignore"))
    return Scaffold(written, config, ci_path)


IGNORED = ("reports/", ".canary-checks/", ".sandbox/")
"""What runs write into the repository: reports, the sequential evidence, a local sandbox's state."""


def _ignore(path: Path) -> bool:
    """Add what runs write to ``.gitignore`` (created if missing; lines already there are kept): whether it
    changed."""
    text = path.read_text() if path.is_file() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [entry for entry in IGNORED if entry not in present and entry.rstrip("/") not in present]
    if not missing:
        return False
    lead = "" if not text or text.endswith("\n") else "\n"
    path.write_text(f"{text}{lead}# canary-checks: what its runs write\n" + "".join(f"{m}\n" for m in missing))
    return True


# ---- a service more in an existing canary.yaml ------------------------------------------------------------------


def _adds(path: Path, service: str, force: bool) -> bool:
    """Whether ``init --service`` adds to ``path`` rather than writing a new scaffold: always with ``services:``;
    to a one-service file, a service other than its own (its own is today's init, refused without --force)."""
    raw = read_yaml(path)
    if SERVICES_KEY in raw:
        return True
    return service != load_config(path).service


def add_service(
    path: Path,
    service: str,
    *,
    namespace: str | None = None,
    mesh: str | None = None,
    prometheus_url: str | None = None,
    url: str | None = None,
    force: bool = False,
) -> CanaryConfig:
    """Add ``service`` to the canary.yaml at ``path`` as a section of ``services:`` holding what differs for it
    (the namespace, mesh and Prometheus given, its smoke URL); every other setting is shared. A one-service file
    becomes a several-service one: its ``service:`` line makes way for a section of that service, taking every
    setting as before. The rest of the file (comments too) is left as it is. A section of that name is replaced
    only with ``force``; the result is validated before the file is replaced. Returns ``service``'s config."""
    text = path.read_text()
    raw = read_yaml(path)
    sections = service_sections(raw, where=str(path))
    if service in sections and not force:
        raise ConfigError(
            f"services.{service} already exists; nothing was written",
            where=str(path),
            fix=f"edit services.{service} in {path.name}, or pass --force to replace that section",
        )
    # what the new service gets where its section says nothing: the shared settings (of a one-service file: all)
    settings = {k: v for k, v in raw.items() if k != "service"}
    shared = config_from({**settings, SERVICES_KEY: {service: {}}}, where=str(path), service=service)
    lines = text.splitlines()
    if not sections:  # one service: it becomes services.<its name>, every setting shared as before
        first = load_config(path).service
        lines = _without_service_key(text, lines, first)
        lines += ["", f"{SERVICES_KEY}:", "  # each service's own settings, over the shared ones above; "
                  "choose one with --service NAME", f"  {first}: {{}}",
                  *_section(service, shared, namespace=namespace, mesh=mesh, prometheus_url=prometheus_url,
                            url=url)]  # fmt: skip
    else:
        key, services = next((key, value) for key, value in _top_level(text) if key.value == SERVICES_KEY)
        assert isinstance(services, yaml.MappingNode)
        indent = 2 if services.flow_style else services.value[0][0].start_mark.column
        section = _section(service, shared, indent=indent, namespace=namespace, mesh=mesh,
                           prometheus_url=prometheus_url, url=url)  # fmt: skip
        lines = _with_section(lines, key.start_mark.line, services, service, section)
    new_text = "\n".join(lines) + "\n"
    handle, temporary = tempfile.mkstemp(prefix=".canary-", suffix=".yaml", dir=path.parent)
    os.close(handle)
    try:
        Path(temporary).write_text(new_text)
        shutil.copymode(path, temporary)
        config = load_config(Path(temporary), {"service": service})
        for other in service_sections(read_yaml(Path(temporary))):  # the others still load as they did
            load_config(Path(temporary), {"service": other})
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return config


def _section(
    service: str,
    shared: CanaryConfig,
    *,
    indent: int = 2,
    namespace: str | None,
    mesh: str | None,
    prometheus_url: str | None,
    url: str | None,
) -> list[str]:
    """The lines of ``services.<service>`` (indented under ``services:``): what differs from ``shared``."""
    own: dict[str, Any] = {}
    if namespace is not None and namespace != shared.namespace:
        own["namespace"] = namespace
    if mesh is not None and mesh != shared.mesh.value:
        own["mesh"] = mesh
    if prometheus_url is not None and prometheus_url.rstrip("/") != shared.prometheus.url:
        own["prometheus"] = {"url": prometheus_url}
    own["smoke"] = {"url": url or f"http://{service}.{namespace or shared.namespace}.svc.cluster.local"}
    body = yaml.safe_dump(own, sort_keys=False, default_flow_style=False, indent=2).splitlines()
    pad, inner = " " * indent, " " * (indent + 2)
    return [f"{pad}{service}:", f"{inner}# added by 'canary-checks init --service {service}': what differs from the "
            "shared settings", *(f"{inner}{line}" for line in body)]  # fmt: skip


def _top_level(text: str) -> list[tuple[yaml.Node, yaml.Node]]:
    root = yaml.compose(text)
    return list(root.value) if isinstance(root, yaml.MappingNode) else []


def _end_line(node: yaml.Node) -> int:
    """The line after the last line of ``node``'s text (a block collection's own end mark lies on the next key's
    line, so it ends where its last value does)."""
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _end_line(last[1] if isinstance(last, tuple) else last)
    end = node.end_mark
    return int(end.line) if end.column == 0 else int(end.line) + 1


def _without_service_key(text: str, lines: list[str], service: str) -> list[str]:
    for key, value in _top_level(text):
        if key.value == "service":
            note = f"# service: {service} is now services.{service} below (this file describes several services)"
            return [*lines[: key.start_mark.line], note, *lines[_end_line(value) :]]
    return lines


def _with_section(
    lines: list[str], start: int, services: yaml.MappingNode, service: str, section: list[str]
) -> list[str]:
    """``lines`` with ``section`` added to (or, when there, in place of) ``services.<service>``; ``services`` is
    the ``services:`` mapping, its key on line ``start``."""
    if services.flow_style:  # services: {a: {...}}: written out as a block, a line per service
        entries = [f"  {k.value}: {_scalar(yaml.safe_load(yaml.serialize(v)))}" for k, v in services.value
                   if k.value != service]  # fmt: skip
        return [*lines[:start], f"{SERVICES_KEY}:", *entries, *section, *lines[_end_line(services) :]]
    for key, value in services.value:
        if key.value == service:  # --force: in place of the old one
            return [*lines[: key.start_mark.line], *section, *lines[_end_line(value) :]]
    at = _end_line(services)
    while at > 0 and (not lines[at - 1].strip() or lines[at - 1].startswith("#")):
        at -= 1  # blank lines and comments at the left edge belong to what follows
    return [*lines[:at], *section, *lines[at:]]


# ---- canary.yaml, every default visible -------------------------------------------------------------------------


def config_yaml(config: CanaryConfig) -> str:
    """``config`` as a commented canary.yaml: every setting a service uses, its value, and its meaning."""
    lines = [
        "# canary-checks configuration (written by 'canary-checks init'). Every setting is shown with its default;",
        "# delete what you do not change. All keys: 'canary-checks config reference'.",
        "",
    ]
    data = config.model_dump(mode="json")
    for name, field in CanaryConfig.model_fields.items():
        if name in LEFT_OUT:
            lines.append(f"# {name}: left out here ({LEFT_OUT[name]})")
            continue
        lines += _field(name, field, data[name], getattr(config, name), 0)
    return "\n".join(lines) + "\n"


def _comment(text: str | None, indent: int) -> list[str]:
    if not text:
        return []
    pad = " " * indent
    return textwrap.wrap(" ".join(text.split()), width=116 - indent, initial_indent=f"{pad}# ",
                         subsequent_indent=f"{pad}# ")  # fmt: skip


def _field(name: str, field: Any, value: Any, model_value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines = _comment(field.description, indent)
    if isinstance(model_value, GateSettings | ComparisonSettings):  # one line each
        shown = ", ".join(f"{k}: {_scalar(v)}" for k, v in value.items())
        return [*lines, f"{pad}{name}: {{{shown}}}"]
    if isinstance(model_value, BaseModel) and value:
        lines.append(f"{pad}{name}:")
        fields = type(model_value).model_fields
        present = {type(getattr(model_value, f)) for f in fields}
        # the gates' (or the comparisons') fields, explained once
        for kind in (k for k in (GateSettings, ComparisonSettings) if k in present):
            each = "; ".join(f"{f}: {(d.description or '').rstrip('.')}" for f, d in kind.model_fields.items())
            lines += _comment(f"Each: {each}.", indent + 2)
        for sub, sub_field in fields.items():
            lines += _field(sub, sub_field, value[sub], getattr(model_value, sub), indent + 2)
        return lines
    if any(getattr(m, "func", None) is parse_duration for m in field.metadata) and isinstance(value, int | float):
        return [*lines, f"{pad}{name}: {_seconds(float(value))}"]
    return [*lines, f"{pad}{name}: {_scalar(value)}"]


def _scalar(value: Any) -> str:
    shown = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return shown.removesuffix("...").strip()


def _seconds(value: float) -> str:
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if value >= size and (value / size).is_integer():
            return f"{value / size:g}{unit}"
    return f"{value:g}s"
