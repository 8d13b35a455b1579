"""The Grafana dashboard of the canary and its ConfigMap."""

from __future__ import annotations

import json

from canary_checks.config import (
    Gates,
)
from canary_checks.manifests.values import Obj

# ---- Grafana dashboard -----------------------------------------------------------------------------------------------

DASHBOARD_UID = "canary-checks"
_SEL = 'namespace="$namespace", service="$service"'


def dashboard_panels(gates: Gates | None = None) -> list[Obj]:
    """The dashboard's panels: (title, unit, [(legend, PromQL)], threshold) as Grafana timeseries panels. The
    queries are the recording rules the alerts use (manifests/monitoring) and the gates' own series."""
    g = gates or Gates()
    canary_pods = 'pod=~"$service-canary-[a-z0-9]{1,10}-[a-z0-9]{5}"'
    specs: list[tuple[str, str, list[tuple[str, str]], float | None]] = [
        ("Error rate, canary vs stable", "percent",
         [("canary", f"canary:error_rate:5m{{{_SEL}}}"), ("stable", f"stable:error_rate:5m{{{_SEL}}}")],
         g.error_rate.threshold),
        ("Request rate", "reqps",
         [("canary", f"canary:request_rate:5m{{{_SEL}}}"), ("stable", f"stable:request_rate:5m{{{_SEL}}}")], None),
        ("Latency", "ms",
         [("canary p50", f"canary:latency_p50:5m{{{_SEL}}}"), ("canary p95", f"canary:latency_p95:5m{{{_SEL}}}"),
          ("canary p99", f"canary:latency_p99:5m{{{_SEL}}}"), ("stable p95", f"stable:latency_p95:5m{{{_SEL}}}")],
         g.latency_p95.threshold),
        ("Success rate, canary", "percent", [("canary", f"canary:success_rate:5m{{{_SEL}}}")],
         g.success_rate.threshold),
        ("Traffic to the canary", "percent", [("canary share", f"canary:traffic_percentage:5m{{{_SEL}}}")], None),
        ("CPU, canary pods", "percent", [("{{pod}}", f"canary:cpu_usage:5m{{{_SEL}}}")], g.cpu.threshold),
        ("Memory, canary pods", "percent", [("{{pod}}", f"canary:memory_usage:5m{{{_SEL}}}")], g.memory.threshold),
        ("Restarts, canary containers", "short",
         [("{{pod}}/{{container}}", "sum by (pod, container) (increase(kube_pod_container_status_restarts_total"
           f'{{namespace="$namespace", {canary_pods}}}[5m]))')], None),
    ]  # fmt: skip
    panels = []
    for i, (title, unit, targets, threshold) in enumerate(specs):
        steps: list[Obj] = [{"color": "green", "value": None}]
        if threshold is not None:
            steps.append({"color": "red", "value": threshold})
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {
                    "defaults": {
                        "unit": unit,
                        "thresholds": {"mode": "absolute", "steps": steps},
                        "custom": {"thresholdsStyle": {"mode": "line" if threshold is not None else "off"}},
                    },
                    "overrides": [],
                },
                "options": {
                    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "none"},
                },
                "targets": [
                    {
                        "refId": chr(ord("A") + k),
                        "expr": expr,
                        "legendFormat": legend,
                        "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    }
                    for k, (legend, expr) in enumerate(targets)
                ],
            }
        )
    return panels


def render_dashboard(gates: Gates | None = None) -> Obj:
    """Grafana dashboard (the dashboard JSON model) for one service's canary, templated by namespace and service."""
    return {
        "uid": DASHBOARD_UID,
        "title": "Canary overview",
        "description": "Stable vs canary for one service, from the canary-checks recording rules; decisions of "
        "the runner as annotations (notifications kind grafana).",
        "tags": ["canary-checks", "canary"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "namespace",
                    "type": "query",
                    "label": "namespace",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(canary:request_rate:5m, namespace)", "refId": "namespace"},
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "service",
                    "type": "query",
                    "label": "service",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {
                        "query": 'label_values(canary:request_rate:5m{namespace="$namespace"}, service)',
                        "refId": "service",
                    },
                    "refresh": 2,
                    "current": {},
                    "hide": 0,
                },
            ]
        },
        "annotations": {
            "list": [
                {
                    "name": "canary decisions",
                    "enable": True,
                    "hide": False,
                    "iconColor": "orange",
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "target": {"type": "tags", "tags": ["canary-checks", "$service"], "matchAny": False, "limit": 100},
                },
                {
                    "name": "canary alerts",
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": f'ALERTS{{alertstate="firing", alertname=~"Canary.+", {_SEL}}}',
                },
            ]
        },
        "panels": dashboard_panels(gates),
    }


def render_dashboard_configmap(dashboard: Obj) -> Obj:
    """The dashboard as a ConfigMap the Grafana sidecar (kiwigrid k8s-sidecar, label grafana_dashboard) loads."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "canary-checks-dashboard", "namespace": "monitoring",
                     "labels": {"app.kubernetes.io/name": "canary-checks", "grafana_dashboard": "1"}},
        "data": {"canary-overview.json": json.dumps(dashboard, indent=2)},
    }  # fmt: skip
