"""What the sandbox writes into its state directory before it starts anything: the node agent's pods, the faults,
Prometheus' scrape configuration and the cluster's rules made quick, Alertmanager's route, HAProxy's configuration,
and each component's command line.

Seam: pure rendering from a :class:`~canary_checks.config.CanaryConfig` to files and argument lists; starting and
stopping the processes is :mod:`canary_checks.sandbox.processes`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from canary_checks.config import CanaryConfig, Mesh, parse_duration
from canary_checks.manifests import render_alerts
from canary_checks.sticky import cookie_value, next_state
from canary_checks.weights import side_of, spread

PER_USER_RPS = 1.0
"""Each Locust user sends one request a second: many users, each mostly idle, is close to open-loop traffic, so a
slow canary does not get fewer requests than its share."""

_K8S_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def pod_name(workload: str, version: str, salt: str = "") -> str:
    """A Deployment pod name: ``<workload>-<replicaset hash>-<suffix>``, stable for the same inputs."""
    digest = hashlib.sha256(f"{workload}/{version}/{salt}".encode()).digest()
    chars = [_K8S_ALPHABET[b % len(_K8S_ALPHABET)] for b in digest]
    return f"{workload}-{''.join(chars[:10])}-{''.join(chars[10:15])}"


def sandbox_rules(groups: list[dict[str, Any]], interval: str) -> list[dict[str, Any]]:
    """The cluster's recording and alerting rules, made quick for the sandbox: evaluated every ``interval``, their
    look-back windows a twentieth as long (at least 15 s and four evaluations: [5m] becomes [15s]) and their ``for`` a
    tenth (at least 5 s), so a fault fires its alert within half a minute and the alert resolves within half a minute
    of the rollback. Names stay (the gates read canary:request_rate:5m)."""
    shortest = max(15, math.ceil(4 * parse_duration(interval)))

    def window(match: re.Match[str]) -> str:
        seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
        return f"[{max(shortest, seconds // 20)}s]"

    def tenth(duration: str) -> str:
        seconds = parse_duration(duration)
        return f"{max(5, round(seconds / 10))}s"

    out = []
    for group in groups:
        rules = []
        for rule in group["rules"]:
            rule = {**rule, "expr": re.sub(r"\[(\d+)([smh])\]", window, rule["expr"])}
            if "for" in rule:
                rule["for"] = tenth(rule["for"])
            rules.append(rule)
        out.append({**group, "interval": interval, "rules": rules})
    return out


def canary_slots(config: CanaryConfig) -> int:
    """How many canary pods the sandbox can run: one, or with proportional scaling its size at 100 %."""
    scaling = config.rollout.scaling
    return scaling.canary_replicas(config.sandbox.stable_replicas, 100) if scaling.proportional else 1


def extra_ports(config: CanaryConfig) -> int:
    """How many pods beyond each side's first (on stable_port and canary_port) need a port of their own."""
    return config.sandbox.stable_replicas - 1 + canary_slots(config) - 1


def pods(config: CanaryConfig, ports: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The demo pods the node agent can run, each with its HAProxy server (``stable``, ``stable-2``, ...,
    ``canary``, ``canary-2``, ...): stable's `sandbox.stable_replicas`, all running, and the canary's slots, the
    first running (more start when it is scaled up). Pods beyond each side's first take ``ports`` in turn."""
    s = config.sandbox
    more = iter(ports)
    found = []
    for side, version, count, first in (("stable", "v1", s.stable_replicas, s.stable_port),
                                        ("canary", "v2", canary_slots(config), s.canary_port)):  # fmt: skip
        workload = config.workload(side)
        for i in range(count):
            found.append({
                "name": pod_name(workload, version, config.namespace if i == 0 else f"{config.namespace}/{i + 1}"),
                "workload": workload, "port": first if i == 0 else next(more), "version": version,
                "server": side if i == 0 else f"{side}-{i + 1}", "running": side == "stable" or i == 0,
            })  # fmt: skip
    if config.baseline.enabled:
        found.append({"name": pod_name(config.workload("baseline"), "v1", config.namespace),
                      "workload": config.workload("baseline"), "port": s.baseline_port, "version": "v1",
                      "server": "baseline", "running": True})  # fmt: skip
    return found


def _servers(pods: Sequence[Mapping[str, Any]], side: str, weight: int | None = None, backup: bool = False) -> str:
    """A backend's server lines for ``side``'s pods; in a weighted split (the canary's ``weight``, percent) each side's
    share is spread over its running pods (:func:`~canary_checks.weights.spread`); pods not running are in
    maintenance."""
    weights = spread(weight, [p["server"] for p in pods if p["running"]]) if weight is not None else {}
    lines = []
    for pod in (p for p in pods if side_of(p["server"]) == side):
        share = "" if weight is None else f" weight {weights.get(pod['server'], 0)}"
        more = (" backup" if backup else "") + ("" if pod["running"] else " disabled")
        lines.append(f"    server {pod['server']} 127.0.0.1:{pod['port']}{share} check{more}\n")
    return "".join(lines)


def write_files(
    config: CanaryConfig, d: Path, weight: int, faults: Mapping[str, Mapping[str, float]], ports: Sequence[int] = ()
) -> None:
    """Every file the components read, in the state directory ``d``; the canary gets ``weight`` percent; pods
    beyond each side's first listen on ``ports`` (:func:`extra_ports` of them)."""
    d.mkdir(parents=True, exist_ok=True)
    every = pods(config, ports)
    _write_node(config, d, every)
    (d / "faults.json").write_text(json.dumps(dict(faults), indent=2))
    interval = f"{max(1, round(config.sandbox.scrape_interval))}s"
    _write_alerting(config, d, interval)
    _write_prometheus(config, d, interval, every)
    _write_haproxy(config, d, weight, every)


def _write_node(config: CanaryConfig, d: Path, pods: list[dict[str, Any]]) -> None:
    """The node agent's pods and their limits."""
    s = config.sandbox
    (d / "node.json").write_text(
        json.dumps(
            {
                "namespace": config.namespace,
                "cpu_limit": s.cpu_limit,
                "memory_limit_bytes": s.memory_limit_mb * 2**20,
                "pods": pods,
            },
            indent=2,
        )
    )


def _write_alerting(config: CanaryConfig, d: Path, interval: str) -> None:
    """The cluster's rules, made quick, and Alertmanager's route to the node agent."""
    s = config.sandbox
    # The same recording and alerting rules a cluster gets (manifests/monitoring), for the sandbox's mesh.
    mesh = config.mesh if config.mesh is not Mesh.CUSTOM else Mesh.ISTIO
    rules = sandbox_rules(render_alerts(mesh, config.gates, config.failure_codes)["spec"]["groups"], interval)
    (d / "rules.yml").write_text(yaml.safe_dump({"groups": rules}, sort_keys=False))
    # Alertmanager routes every alert to the node agent's receiver (what Slack or PagerDuty would get).
    alertmanager = {
        "route": {"receiver": "sandbox", "group_by": ["alertname", "service"], "group_wait": "1s",
                  "group_interval": "5s", "repeat_interval": "1h"},
        "receivers": [{"name": "sandbox", "webhook_configs": [
            {"url": f"http://127.0.0.1:{s.node_port}/alerts", "send_resolved": True}]}],
    }  # fmt: skip
    (d / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager, sort_keys=False))


def _write_prometheus(config: CanaryConfig, d: Path, interval: str, pods: list[dict[str, Any]]) -> None:
    """Prometheus' scrape jobs: the node agent, the pods' mesh metrics and HAProxy."""
    s = config.sandbox
    pod_targets = [
        {
            "targets": [f"127.0.0.1:{p['port']}"],
            "labels": {"namespace": config.namespace, "pod": p["name"], "workload": p["workload"]},
        }
        for p in pods
    ]
    prometheus = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval, "scrape_timeout": interval},
        "rule_files": [str(d / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{s.alertmanager_port}"]}]}]},
        "scrape_configs": [
            {
                # What kube-state-metrics and the kubelet's cAdvisor endpoint would export.
                "job_name": "kubernetes-node",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{s.node_port}"]}],
            },
            {
                # The mesh proxies' metrics, scraped per pod as Istio's and Linkerd's Prometheus jobs do.
                "job_name": "mesh-pods",
                "honor_labels": True,
                "static_configs": pod_targets,
            },
            {
                "job_name": "haproxy",
                "static_configs": [{"targets": [f"127.0.0.1:{s.router_admin_port}"]}],
            },
        ],
    }
    (d / "prometheus.yml").write_text(yaml.safe_dump(prometheus, sort_keys=False))


def _write_haproxy(config: CanaryConfig, d: Path, weight: int, pods: list[dict[str, Any]]) -> None:
    """HAProxy: the weighted split, the header routes, the sticky cookie routes when enabled, and the exporter."""
    s = config.sandbox
    sticky = config.routing.sticky
    variables, routes, marks = "", "", ""
    if sticky.enabled:
        variables, routes, marks = _sticky_haproxy(d, sticky.cookie, weight)
    (d / "haproxy.cfg").write_text(
        f"""# Written by canary-checks sandbox; weights change at run time through the admin socket.
global
    maxconn 4000
    nbthread 1
    stats socket {d / "haproxy.sock"} mode 600 level admin
    stats timeout 10s

defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive

frontend service
    bind 127.0.0.1:{s.router_port}
{variables}    acl canary_header req.hdr(x-canary) -i true
    acl stable_header req.hdr(x-canary) -i false
    use_backend canary_only if canary_header
    use_backend stable_only if stable_header
{routes}    default_backend svc

backend svc
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "stable", weight)}{_servers(pods, "canary", weight)}{_servers(pods, "baseline", weight)}{marks}
backend canary_only
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "canary")}
backend stable_only
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "stable")}{_restick_backend(pods, weight, marks) if sticky.enabled else ""}
frontend admin
    bind 127.0.0.1:{s.router_admin_port}
    http-request use-service prometheus-exporter if {{ path /metrics }}
    stats enable
    stats uri /stats
"""
    )


def _sticky_haproxy(d: Path, cookie: str, weight: int) -> tuple[str, str, str]:
    """Sticky sessions (:mod:`canary_checks.sticky`): the frontend's cookies in force and cookie routes (after the
    header routes: a header wins), and the Set-Cookie lines of a splitting backend. The cookies in force are the
    runtime map ``sticky.map`` (the router changes them with the weights); a client carrying neither goes to the
    weighted split, one with an older stable cookie to ``restick``. Not HAProxy's own ``cookie`` persistence: it
    pins every client to its first server for good (raising the weight would move nobody), and a cookie still
    reaches a server at weight 0 unless that server is put in maintenance."""
    state = next_state(None, 0, weight)
    canary = cookie_value("canary", state.canary) if state else "off.canary"  # values issued to nobody
    stable = cookie_value("stable", state.stable) if state else "off.stable"
    # both cookies in one entry: the router changes them in one command, so no request sees one changed alone
    (d / "sticky.map").write_text(f"tokens {canary}/{stable}\n")
    table = d / "sticky.map"
    variables = f"""    http-request set-var(txn.sticky_canary) str(tokens),map({table}),field(1,/)
    http-request set-var(txn.sticky_stable) str(tokens),map({table}),field(2,/)
"""
    routes = f"""    acl sticky_canary req.cook({cookie}),strcmp(txn.sticky_canary) eq 0
    acl sticky_stable req.cook({cookie}),strcmp(txn.sticky_stable) eq 0
    acl sticky_older req.cook({cookie}) -m beg stable.
    use_backend sticky_canary if sticky_canary
    use_backend sticky_stable if sticky_stable
    use_backend restick if sticky_older
"""
    marks = "".join(
        f'    http-response add-header Set-Cookie "{cookie}=%[var(txn.sticky_{side})]; Path=/; HttpOnly; '
        f'SameSite=Lax" if {{ srv_name -m beg {side} }}\n'
        for side in ("stable", "canary")
    )
    return variables, routes, marks


def _restick_backend(pods: list[dict[str, Any]], weight: int, marks: str) -> str:
    """The split of clients holding an older stable cookie (its canary share moves them to a raised weight), and
    the two sides of the cookie routes: each with the other as a backup, so a side that is down (a crashing canary)
    leaves its clients to the other rather than to a 503 — unlike the header routes, which smoke checks rely on."""
    return f"""
backend sticky_canary
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "canary")}{_servers(pods, "stable", backup=True)}
backend sticky_stable
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "stable")}{_servers(pods, "canary", backup=True)}backend restick
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 1s fall 2 rise 1
{_servers(pods, "stable", weight)}{_servers(pods, "canary", weight)}{marks}"""


def commands(config: CanaryConfig, d: Path, locustfile: Path, service_url: str) -> dict[str, list[str]]:
    """Each component's command line (a list, never a shell string)."""
    s = config.sandbox
    users = max(1, math.ceil(s.rps / PER_USER_RPS))
    return {
        "node": [
            sys.executable,
            "-m",
            "canary_checks.sandbox.node",
            "--state-dir",
            str(d),
            "--port",
            str(s.node_port),
        ],
        "haproxy": ["haproxy", "-db", "-f", str(d / "haproxy.cfg")],
        "alertmanager": [
            "prometheus-alertmanager",
            f"--config.file={d / 'alertmanager.yml'}",
            f"--web.listen-address=127.0.0.1:{s.alertmanager_port}",
            f"--storage.path={d / 'alertmanager-data'}",
            "--cluster.listen-address=",  # one instance, no gossip port
        ],
        "prometheus": [
            "prometheus",
            f"--config.file={d / 'prometheus.yml'}",
            f"--web.listen-address=127.0.0.1:{s.prometheus_port}",
            f"--storage.tsdb.path={d / 'prometheus-data'}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
        ],
        "locust": [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(locustfile),
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(users),
            "--host",
            service_url,
            "--csv",
            str(d / "locust"),
            "--loglevel",
            "WARNING",
            "ServiceUser",
        ],
    }


# ---- life cycle ----
