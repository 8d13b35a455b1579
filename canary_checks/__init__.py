"""canary-checks: canary-release verification as pytest gates over live Prometheus metrics.

The public API; everything else is internal::

    from canary_checks import load_config, MetricsSource, evaluate, gate_params
"""

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
from canary_checks.plugin import GateCheck, SmokeCheck, compare_params, gate_params
from canary_checks.prometheus import MetricsSource

__all__ = [
    "GATES",
    "CanaryConfig",
    "CanaryError",
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
