"""The metrics source: query profiles per mesh, safe label values, concurrent instant queries.

Four outcomes reach the gates: a vector of :class:`Sample` (a value), an empty vector (no data: an empty result or
only NaN), :class:`~canary_checks.errors.PrometheusQueryError` (Prometheus answered with an error) and
:class:`~canary_checks.errors.PrometheusUnreachable`.

The package's seams: ``profiles`` is what to ask (pure text), ``source`` asks it, ``diagnosis`` says what a
failure means and how to fix it. Import from here.
"""

from canary_checks.prometheus.profiles import ISTIO as ISTIO
from canary_checks.prometheus.profiles import LINKERD as LINKERD
from canary_checks.prometheus.profiles import (
    MESH_METRICS,
    RULES_INTERVAL,
    MeshMetrics,
    QueryProfile,
    escape_label,
    pod_regex,
    profile_for,
    render_template,
    selectors_in,
)
from canary_checks.prometheus.source import MetricsSource, Sample, Series

__all__ = [
    "MESH_METRICS",
    "RULES_INTERVAL",
    "MeshMetrics",
    "MetricsSource",
    "QueryProfile",
    "Sample",
    "Series",
    "escape_label",
    "pod_regex",
    "profile_for",
    "render_template",
    "selectors_in",
]
