"""docs/configuration.md, written from the models themselves so the doc and the defaults cannot drift.

Seam: reads the models only (`canary-checks config reference` prints it; a unit test compares it with the file)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, get_args

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from canary_checks.config.environment import (
    KubernetesSettings,
    SandboxSettings,
    SmokeRequest,
    SmokeSettings,
    SmokeTarget,
)
from canary_checks.config.gates import CustomGate, Gates, GateSettings
from canary_checks.config.model import CanaryConfig
from canary_checks.config.notifications import NotificationSettings, NotificationTarget
from canary_checks.config.prometheus import BasicAuth, CustomQueries, PrometheusSettings, Secret, Workloads
from canary_checks.config.rollout import Baseline, ReleaseWindows, RolloutSettings, Scaling
from canary_checks.config.routing import RoutingSettings, StickySessions
from canary_checks.config.statistics import ComparisonSettings, CustomComparison, Statistics
from canary_checks.config.units import DURATION, parse_duration, range_of


def _shown(value: Any) -> str:
    if isinstance(value, StrEnum):
        return f"`{value.value}`"
    if isinstance(value, tuple):
        return f"`{list(value)}`"
    if value is None or value is PydanticUndefined:
        return "—" if value is None else "required"
    return f"`{value}`"


def _allowed(model: type[BaseModel], name: str) -> str:
    found = range_of(model, name)
    if found is not None:
        return str(found)
    info = model.model_fields[name]
    metadata = [*info.metadata, *(m for a in get_args(info.annotation) for m in getattr(a, "__metadata__", ()))]
    return str(DURATION) if any(getattr(m, "func", None) is parse_duration for m in metadata) else ""


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        factory = info.default_factory
        nested = (factory is not None and not isinstance(factory(), dict)) or name in ("gates", "targets")  # type: ignore[call-arg]
        if nested:
            default = "see below"
        elif factory is not None:
            default = f"`{factory()}`"  # type: ignore[call-arg]
        else:
            default = _shown(info.default)
        text = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {default} | {_allowed(model, name)} | {text} |")
    return rows


def reference_markdown() -> str:
    """docs/configuration.md, written from the models themselves so the doc and the defaults cannot drift."""
    return "\n".join([*_top_and_services(), *_prometheus(), *_gates(), *_statistics(), *_the_rest()])


def _top_and_services() -> list[str]:
    """The top level and `services` (several services in one file)."""
    return [
        "# Configuration reference",
        "",
        "<!-- Written by `canary-checks config reference`; a test keeps it equal to the code. -->",
        "",
        "One YAML file: `canary.yaml` in the current directory, or `--canary-config PATH`, or `$CANARY_CONFIG`.",
        "Unknown keys are errors. Durations are written `30s`, `5m`, `1h` or as seconds.",
        "",
        "## Top level",
        "",
        *_table(CanaryConfig, ""),
        "",
        "## `services` (several services in one file)",
        "",
        "The top-level keys are the settings every service shares; `services` maps each service's name to what",
        "differs for it, written with the same keys (any but `service`: the name is the key). A service's settings",
        "are the shared ones with its section merged over them: mappings key by key at every depth (`gates:",
        "{error_rate: {threshold: 2}}` keeps the shared severity), lists and single values replace (`stages`,",
        "`smoke.requests`). `--service NAME` chooses the service in the suites (`pytest suites/gate --service NAME`)",
        "and the commands (`run NAME IMAGE`, `gates --service NAME`, `monitor NAME`, `config show --service NAME`,",
        "which lists the keys the section sets); `serve` answers for each of them. One section is chosen without",
        "`--service`. A mistake in a section is named with its full path (`services.gateway.gates.error_rate.",
        "threshold`); a command acts on its service's settings only, so another team's mistake never blocks its",
        "release or rollback, while `config show` checks every section (run it in the file's CI). `canary-checks",
        "init --service NAME` adds a section to an existing file. Without `services`, the file describes one",
        "service, named by `service`.",
        "",
        "```yaml",
        "namespace: orion                      # shared by every service unless its section says otherwise",
        "prometheus: {url: http://prometheus.monitoring:9090}",
        "gates: {latency_p95: {threshold: 300}}",
        "services:",
        "  auth: {}                            # every setting shared",
        "  gateway:",
        "    namespace: edge",
        "    gates: {error_rate: {threshold: 2}}",
        "```",
        "",
    ]


def _prometheus() -> list[str]:
    """`prometheus` with its auth, `workloads` and `queries`."""
    return [
        "## `prometheus`",
        "",
        *_table(PrometheusSettings, "prometheus."),
        "",
        "Behind authentication (Thanos, Mimir, Cortex, a gateway): docs/integrations.md, *Prometheus behind auth*.",
        "Secrets are named, never written: an environment variable or a file, read when a run starts.",
        "",
        "### `prometheus.basic_auth`",
        "",
        *_table(BasicAuth, "prometheus.basic_auth."),
        "",
        "### A secret header value: `prometheus.headers.NAME: {env: VAR}` or `{file: PATH}`",
        "",
        *_table(Secret, "prometheus.headers.NAME."),
        "",
        "## `workloads`",
        "",
        *_table(Workloads, "workloads."),
        "",
        "## `queries` (with `mesh: custom`)",
        "",
        *_table(CustomQueries, "queries."),
        "",
    ]


def _gates() -> list[str]:
    """`gates`: the built-in gates' defaults and custom gates."""
    lines = [
        "## `gates`",
        "",
        "Each gate takes `threshold`, `severity` (critical | warning | info), `on_no_data` (fail | skip) and",
        "`enabled`. Give only what you change; `stage_gates: {25: {error_rate: {threshold: 3}}}` changes a stage,",
        "`--threshold error_rate=3` one run.",
        "",
        "| gate | threshold | allowed | severity | meaning |",
        "|---|---|---|---|---|",
    ]
    defaults = Gates()
    for name, info in Gates.model_fields.items():
        gate: GateSettings = getattr(defaults, name)
        text = " ".join((info.description or "").split())
        lines.append(f"| `{name}` | {gate.threshold:g} | {Gates.range_of(name)} | {gate.severity.value} | {text} |")
    lines += [
        "",
        "### Custom gates",
        "",
        "Any other key under `gates:` is a gate of your own (docs/gates.md#custom-gates); `stage_gates` and",
        "`--threshold NAME=VALUE` change it as they change a built-in one. Its name: lowercase letters, digits and",
        "`_`, not a built-in gate's, not starting with `compare_`.",
        "",
        *_table(CustomGate, "gates.<name>."),
        "",
    ]
    return lines


def _statistics() -> list[str]:
    """`statistics`: the comparisons' defaults and custom comparisons."""
    lines = [
        "## `statistics`",
        "",
        "Canary-versus-stable comparisons (`suites/gate/test_compare.py`; docs/statistics.md explains the tests).",
        "",
        *[row for row in _table(Statistics, "statistics.") if "see below" not in row],
        "",
        f"Each comparison takes `margin` (allowed ratio canary / stable: {range_of(ComparisonSettings, 'margin')}),"
        f" `margin_delta` (an absolute allowance with it: {range_of(ComparisonSettings, 'margin_delta')}; the canary"
        " is acceptable up to max(margin × stable, stable + margin_delta), the absolute part at most 1.5 × stable),"
        " `severity`, `on_no_data` and `enabled`.",
        "",
        "| comparison | margin | margin_delta | severity | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, info in Statistics.model_fields.items():
        if info.default_factory is None:
            continue
        comparison: ComparisonSettings = info.default_factory()  # type: ignore[call-arg]
        text = " ".join((info.description or "").split())
        lines.append(
            f"| `{name}` | {comparison.margin:g} | {comparison.margin_delta:g} | {comparison.severity.value} | {text} |"
        )
    lines += [
        "",
        "### Custom comparisons",
        "",
        "Any other key under `statistics:` is a canary-vs-stable comparison of your own (docs/gates.md#custom-gates),",
        "named `compare_<name>` in results, judged by the sequential test of `errors`.",
        "",
        *_table(CustomComparison, "statistics.<name>."),
    ]
    return lines


def _the_rest() -> list[str]:
    """`notifications`, `rollout`, `baseline`, `routing`, `kubernetes`, `smoke` and `sandbox`."""
    lines: list[str] = []
    lines += ["", "## `notifications`", "", "What the runner sends on each decision (docs/runner.md).", ""]
    lines += [*[row for row in _table(NotificationSettings, "notifications.") if "`notifications.targets`" not in row]]
    lines += ["", "Each of `notifications.targets`:", "", *_table(NotificationTarget, "")]
    lines += ["", "## `rollout`", "", "What `canary-checks run` does (docs/runner.md).", ""]
    lines += [*_table(RolloutSettings, "rollout.")]
    lines += ["", "### `rollout.release_windows`", "", ReleaseWindows.__doc__ or "", ""]
    lines += [*_table(ReleaseWindows, "rollout.release_windows.")]
    lines += ["", "### `rollout.scaling`", "", " ".join((Scaling.__doc__ or "").split()), ""]
    lines += [*_table(Scaling, "rollout.scaling.")]
    lines += ["", "## `baseline`", "", " ".join((Baseline.__doc__ or "").split()), ""]
    lines += [*_table(Baseline, "baseline.")]
    lines += ["", "## `routing`", "", RoutingSettings.__doc__ or "", ""]
    lines += [*_table(RoutingSettings, "routing.")]
    lines += ["", "### `routing.sticky`", "", " ".join((StickySessions.__doc__ or "").split()), ""]
    lines += [*_table(StickySessions, "routing.sticky.")]
    lines += ["", "## `kubernetes`", "", *_table(KubernetesSettings, "kubernetes.")]
    lines += ["", "## `smoke`", "", "What `pytest suites/smoke [--target canary|stable]` requests.", ""]
    lines += [*_table(SmokeSettings, "smoke.")]
    lines += ["", "Each of `smoke.targets` (`canary`, `stable`):", "", *_table(SmokeTarget, "")]
    lines += ["", "Each of `smoke.requests`:", "", *_table(SmokeRequest, "")]
    lines += ["", "## `sandbox`", "", *_table(SandboxSettings, "sandbox."), ""]
    return lines
