"""``canary-checks init``: what a service's repository needs, written into it.

- ``canary.yaml`` — every setting with its default visible and its meaning in a comment (generated from the config
  models, so it never drifts from what the tool reads), with the service, namespace, mesh and Prometheus given;
- ``suites/gate/``, ``suites/smoke/`` — copies of the packaged suites (thin test files over the plugin) for the team
  to extend;
- ``conftest.py`` — the team's own fixtures and hooks;
- a CI example (GitHub Actions or GitLab CI) from this folder's templates.

Nothing is overwritten without ``force``; when anything would be, nothing at all is written.
"""

from __future__ import annotations

import re
import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel

from canary_checks.config import (
    CanaryConfig,
    ComparisonSettings,
    GateSettings,
    flag_overrides,
    load_config,
    parse_duration,
)
from canary_checks.errors import ConfigError, redact_url
from canary_checks.suite import SUITES, packaged

__all__ = ["CI_TARGETS", "Scaffold", "config_yaml", "init"]

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
Fixtures defined here are available to every test in this repository.
"""
'''


@dataclass(frozen=True)
class Scaffold:
    """What ``init`` wrote: the files (relative to its directory), the config, and the CI file if any."""

    written: list[Path]
    config: CanaryConfig
    ci: Path | None


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
    anything is written."""
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
    return Scaffold(list(files), config, ci_path)


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
