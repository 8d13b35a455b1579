"""Kubernetes manifests and Prometheus alerting for the services, rendered from one base and per-service values.

``canary-checks manifests render`` writes them. With no values it renders the demo's four services into
``manifests/`` of this repository (a test renders again and compares, so the committed files never drift from this
code); with a values file (:class:`ManifestValues`, ``--values``) or flags it renders a team's own namespace,
services and images. Alert thresholds come from :class:`canary_checks.config.Gates`, the same defaults the gates use.

Per service (``<out>/<service>/``): ``base.yaml`` (ServiceAccount, stable and canary Deployments, three Services,
ServiceMonitors, NetworkPolicy, PodDisruptionBudgets) and one routing file per mesh: ``istio.yaml``
(VirtualService + DestinationRule), ``linkerd.yaml`` (SMI TrafficSplit), ``gateway-api.yaml`` (HTTPRoute).
Apply ``base.yaml`` and the one for your mesh.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import yaml

from canary_checks.config import Mesh
from canary_checks.errors import ConfigError
from canary_checks.manifests.alerts import render_alerts
from canary_checks.manifests.checks import (
    render_argo_analysis,
    render_checks,
    render_flagger_canary,
    render_load,
    render_rbac,
    render_watch,
)
from canary_checks.manifests.dashboard import dashboard_panels, render_dashboard, render_dashboard_configmap
from canary_checks.manifests.values import (
    DEMO,
    RUN_AS,
    SERVICES,
    LoadValues,
    ManifestValues,
    Obj,
    ServiceValues,
    load_values,
    values_reference,
    values_table,
)
from canary_checks.manifests.workloads import render_base, render_gateway_api, render_istio, render_linkerd

__all__ = [
    "DEMO",
    "RUN_AS",
    "SERVICES",
    "LoadValues",
    "ManifestValues",
    "ServiceValues",
    "dashboard_panels",
    "load_values",
    "render_alerts",
    "render_all",
    "render_dashboard",
    "values_reference",
    "values_table",
    "write_all",
]

# ---- writing ---------------------------------------------------------------------------------------------------------

_HEADER = "# Written by `canary-checks manifests render` from canary_checks/manifests/; do not edit by hand.\n"


def _dump(objects: Iterable[Obj]) -> str:
    return _HEADER + "---\n".join(yaml.safe_dump(o, sort_keys=False, width=120) for o in objects)


def render_all(values: ManifestValues = DEMO, locustfile: str | None = None) -> dict[str, str]:
    """Every file to write, path → text: per service base and routing, RBAC, the checks, Argo and Flagger
    examples, the alert rules and dashboard, and distributed Locust when ``locustfile`` (its text) is given."""
    v = values
    files = {}
    for svc in v.services:
        files[f"{svc.name}/base.yaml"] = _dump(render_base(v, svc))
        files[f"{svc.name}/istio.yaml"] = _dump(render_istio(v, svc))
        files[f"{svc.name}/linkerd.yaml"] = _dump(render_linkerd(v, svc))
        files[f"{svc.name}/gateway-api.yaml"] = _dump(render_gateway_api(v, svc))
    files["rbac/runner.yaml"] = _dump(render_rbac(v))
    files["checks/webhook.yaml"] = _dump(render_checks(v))
    files["checks/watch.yaml"] = _dump([render_watch(v)])
    files["argo/analysis-template.yaml"] = _dump([render_argo_analysis(v)])
    files[f"flagger/canary-{v.flagger.name}.yaml"] = _dump([render_flagger_canary(v, v.flagger)])
    if locustfile is not None:
        files["load/locust.yaml"] = _dump(render_load(v, locustfile))
    files["monitoring/canary-alerts.yaml"] = _dump([render_alerts(Mesh.ISTIO, values=v)])
    files["monitoring/canary-alerts-linkerd.yaml"] = _dump([render_alerts(Mesh.LINKERD, values=v)])
    dashboard = render_dashboard()
    files["monitoring/grafana-dashboard.json"] = json.dumps(dashboard, indent=2) + "\n"
    files["monitoring/grafana-dashboard-configmap.yaml"] = _dump([render_dashboard_configmap(dashboard)])
    return files


def write_all(out: Path, values: ManifestValues = DEMO, locustfile: Path | None = None) -> list[Path]:
    """Render and write under ``out``; ``locustfile`` (else ``values.load.locustfile``) adds distributed Locust."""
    locustfile = locustfile or values.load.locustfile
    text = None
    if locustfile is not None:
        try:
            text = locustfile.read_text()
        except OSError as e:
            raise ConfigError(
                f"cannot read the locustfile ({e.strerror})",
                where=str(locustfile),
                fix="pass an existing file to --locustfile (or load.locustfile in the values file), or leave it out",
            ) from None
    written = []
    for relative, content in render_all(values, text).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        written.append(path)
    return written
