"""The Grafana dashboard: Grafana's own dashboard model keeps every field we write; panels read our recording rules."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as grafana

from canary_checks.manifests import render_alerts, render_dashboard

MONITORING = Path(__file__).parents[2] / "manifests" / "monitoring"


def dropped(ours: Any, theirs: Any, path: str = "") -> list[str]:
    """Fields of ``ours`` that Grafana's model did not keep (unknown or misspelt)."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        out = [f"{path}/{k}" for k in ours if k not in theirs]
        return out + [d for k in ours if k in theirs for d in dropped(ours[k], theirs[k], f"{path}/{k}")]
    if isinstance(ours, list) and isinstance(theirs, list):
        if len(ours) != len(theirs):
            return [f"{path} (length)"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) for d in dropped(a, b, f"{path}[{i}]")]
    return [] if ours == theirs else [f"{path} ({ours!r} became {theirs!r})"]


def test_grafanas_dashboard_model_keeps_every_field() -> None:
    ours = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    parsed = grafana.Dashboard.from_json(ours)
    theirs = json.loads(json.dumps(parsed, cls=JSONEncoder))
    assert dropped(ours, theirs) == []


def test_the_check_catches_a_misspelt_field() -> None:
    ours = render_dashboard()
    ours["panels"][0]["gridPoss"] = ours["panels"][0].pop("gridPos")
    theirs = json.loads(json.dumps(grafana.Dashboard.from_json(ours), cls=JSONEncoder))
    assert "/panels[0]/gridPoss" in dropped(ours, theirs)


def test_panels_show_stable_and_canary_from_the_recording_rules() -> None:
    board = render_dashboard()
    titles = [p["title"] for p in board["panels"]]
    for needed in ("Error rate", "Request rate", "Latency", "Success rate", "Traffic", "CPU", "Memory", "Restarts"):
        assert any(t.startswith(needed) for t in titles), needed
    recorded = {r["record"] for r in render_alerts()["spec"]["groups"][0]["rules"]}
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    for expr in exprs:
        assert "$namespace" in expr and "$service" in expr, expr  # templated by namespace and service
        for name in re.findall(r"\b((?:canary|stable):[a-z_0-9]+:5m)\b", expr):
            assert name in recorded, name
    error_panel = board["panels"][0]
    assert {t["legendFormat"] for t in error_panel["targets"]} == {"canary", "stable"}
    latency = next(p for p in board["panels"] if p["title"] == "Latency")
    assert {t["legendFormat"] for t in latency["targets"]} >= {"canary p50", "canary p95", "canary p99"}
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "namespace", "service"]
    decisions = next(a for a in board["annotations"]["list"] if a["name"] == "canary decisions")
    assert decisions["target"]["tags"] == ["canary-checks", "$service"]  # what the grafana notifier tags


def test_the_configmap_carries_the_same_dashboard_for_the_sidecar() -> None:
    (configmap,) = yaml.safe_load_all((MONITORING / "grafana-dashboard-configmap.yaml").read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["canary-overview.json"]) == json.loads(
        (MONITORING / "grafana-dashboard.json").read_text()
    )
