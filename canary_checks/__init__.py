"""canary-checks: canary-release verification as pytest gates over live Prometheus metrics.

The public API; everything else is internal::

    from canary_checks import load_config, MetricsSource, evaluate, gate_params

The names are loaded on first use (PEP 562): ``import canary_checks.cli`` or loading the pytest plugin must not pull
in SciPy, pandas or the Kubernetes client, which only the code that uses them imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canary_checks.checks import CanaryGate, GateCheck, SmokeCheck
    from canary_checks.config import CanaryConfig, Gates, GateSettings, Mesh, Severity, find_config, load_config
    from canary_checks.errors import (
        CanaryError,
        ConfigError,
        PrometheusError,
        PrometheusQueryError,
        PrometheusUnreachable,
        SandboxError,
    )
    from canary_checks.gates import GATES, GateResult, Verdict, evaluate
    from canary_checks.plugin import compare_params, gate_params
    from canary_checks.prometheus import MetricsSource

__all__ = [
    "GATES",
    "CanaryConfig",
    "CanaryError",
    "CanaryGate",
    "ConfigError",
    "GateCheck",
    "GateResult",
    "GateSettings",
    "Gates",
    "Mesh",
    "MetricsSource",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusUnreachable",
    "SandboxError",
    "Severity",
    "SmokeCheck",
    "Verdict",
    "compare_params",
    "evaluate",
    "find_config",
    "gate_params",
    "load_config",
]

_HOMES = {
    "config": ("CanaryConfig", "Gates", "GateSettings", "Mesh", "Severity", "find_config", "load_config"),
    "errors": (
        "CanaryError",
        "ConfigError",
        "PrometheusError",
        "PrometheusQueryError",
        "PrometheusUnreachable",
        "SandboxError",
    ),
    "gates": ("GATES", "GateResult", "Verdict", "evaluate"),
    "checks": ("CanaryGate", "GateCheck", "SmokeCheck"),
    "plugin": ("compare_params", "gate_params"),
    "prometheus": ("MetricsSource",),
}
_HOME = {name: f"canary_checks.{module}" for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import the module holding a public name the first time it is asked for, and keep the name here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'canary_checks' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
