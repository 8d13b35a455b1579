"""The gates over the canary's health: CPU and memory against their limits, pods ready, restarts, crash loops,
the alert rules firing, and the same facts read from the Kubernetes API.

Seam: each is a pair (the queries it needs, its decision) for :class:`~canary_checks.gates.core.Gate`; the
Kubernetes facts are gathered by the caller (:mod:`canary_checks.kube`), never read here."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from canary_checks.prometheus import MetricsSource

if TYPE_CHECKING:
    # the Kubernetes client costs 0.15 s to import; the kube gates only read the facts the caller gathered with it
    from canary_checks.kube import CanaryHealth

from canary_checks.gates.core import Decide, Gate, GateResult, Needs, Verdict, _Ctx, _fmt, _judge

# ---- resources -----------------------------------------------------------------------------------------------


def _resource_gate(kind: str) -> tuple[Needs, Decide]:
    unit_scale, unit = (1.0, "cores") if kind == "cpu" else (2.0**-20, "MiB")

    def needs(source: MetricsSource) -> dict[str, str]:
        return {
            "usage": source.render(f"{kind}_usage", side="canary"),
            "limit": source.render(f"{kind}_limit", side="canary"),
        }

    def decide(ctx: _Ctx, gate: Gate) -> GateResult:
        usage = {s.labels.get("pod", "?"): s.value for s in ctx.samples("usage")}
        limits = {s.labels.get("pod", "?"): s.value for s in ctx.samples("limit")}
        if not usage:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no {kind} usage series for canary pods")
        unlimited = sorted(pod for pod in usage if not limits.get(pod))
        if unlimited:
            return gate.result(
                ctx,
                Verdict.NO_DATA,
                None,
                f"no {kind} limit set for {', '.join(unlimited)}; set resources.limits.{kind} or disable this gate",
            )
        pod = max(usage, key=lambda p: usage[p] / limits[p])
        percent = 100.0 * usage[pod] / limits[pod]
        limit = ctx.settings.threshold
        verdict, sign = _judge(ctx, percent)
        return gate.result(
            ctx,
            verdict,
            percent,
            f"{kind} of {pod} at {_fmt(percent)} % of its limit {sign} {_fmt(limit)} % "
            f"({_fmt(usage[pod] * unit_scale)} of {_fmt(limits[pod] * unit_scale)} {unit})",
            pod=pod,
            pods=len(usage),
        )

    return needs, decide


# ---- pods ----------------------------------------------------------------------------------------------------


def _needs_pods(source: MetricsSource) -> dict[str, str]:
    return {
        "ready": source.render("pods_ready", side="canary"),
        "desired": source.render("replicas_desired", side="canary"),
    }


def _no_pods(ctx: _Ctx, gate: Gate) -> GateResult:
    return gate.result(
        ctx,
        Verdict.NO_DATA,
        None,
        f"no pods of {ctx.config.workload('canary')} in {ctx.config.namespace} in kube-state-metrics",
    )


def _decide_pods_ready(ctx: _Ctx, gate: Gate) -> GateResult:
    pods = {s.labels.get("pod", "?"): s.value for s in ctx.samples("ready")}
    if not pods:
        return _no_pods(ctx, gate)
    desired = ctx.total("desired")
    desired = len(pods) if desired is None else desired
    ready = sorted(p for p, v in pods.items() if v >= 1)
    not_ready = sorted(p for p, v in pods.items() if v < 1)
    percent = 100.0 * len(ready) / desired if desired else 100.0
    verdict, _ = _judge(ctx, percent, fails_below=gate.fails_below)
    summary = f"{len(ready)} of {desired:.0f} desired canary pods ready ({_fmt(percent)} %)"
    if not_ready:
        summary += f"; not ready: {', '.join(not_ready)}"
    return gate.result(ctx, verdict, percent, summary, ready=ready, not_ready=not_ready)


def _pods_and(query: str) -> Needs:
    """The canary's pods (to tell "no pods" from "no restarts") and one more kube-state-metrics query."""
    return lambda source: {
        "ready": source.render("pods_ready", side="canary"),
        query: source.render(query, side="canary"),
    }


def _decide_restarts(ctx: _Ctx, gate: Gate) -> GateResult:
    if not ctx.samples("ready"):
        return _no_pods(ctx, gate)
    samples = ctx.samples("restarts")
    if not samples:
        return gate.result(ctx, Verdict.NO_DATA, None, "no restart counters for the canary's containers")
    # increase() extrapolates; a counter that moved at all moved by at least one restart.
    by_container = {
        f"{s.labels.get('pod', '?')}/{s.labels.get('container', '?')}": math.ceil(round(s.value, 6)) for s in samples
    }
    count = float(sum(by_container.values()))
    verdict, sign = _judge(ctx, count)
    restarted = ", ".join(f"{c} x{n}" for c, n in sorted(by_container.items()) if n)
    summary = f"{count:.0f} canary container restarts in the {_fmt(ctx.config.window)}s window"
    summary += f" ({restarted})" if restarted else ""
    summary += f" {sign} {_fmt(ctx.settings.threshold)}"
    return gate.result(ctx, verdict, count, summary, restarts=by_container)


def _decide_crash_loop(ctx: _Ctx, gate: Gate) -> GateResult:
    if not ctx.samples("ready"):
        return _no_pods(ctx, gate)
    waiting = sorted(
        f"{s.labels.get('pod', '?')}/{s.labels.get('container', '?')} {s.labels.get('reason', '?')}"
        for s in ctx.samples("waiting")
    )
    count = float(len(waiting))
    verdict, _ = _judge(ctx, count)
    summary = f"{count:.0f} canary containers crash-looping or failing to start"
    summary += f": {', '.join(waiting)}" if waiting else ""
    return gate.result(ctx, verdict, count, summary, waiting=waiting)


# ---- the alert rules -------------------------------------------------------------------------------------------


def _needs_alerts(source: MetricsSource) -> dict[str, str]:
    return {
        "loaded": source.render("rules_loaded", side="canary"),
        "firing": source.render("firing_alerts", side="canary"),
    }


def _decide_firing_alerts(ctx: _Ctx, gate: Gate) -> GateResult:
    if not ctx.samples("loaded"):
        return gate.result(
            ctx,
            Verdict.NO_DATA,
            None,
            "Prometheus does not evaluate the canary rules of manifests/monitoring for this service",
        )
    firing = sorted({s.labels.get("alertname", "?") for s in ctx.samples("firing")})
    verdict, _ = _judge(ctx, float(len(firing)))
    summary = f"{len(firing)} critical canary alerts firing" + (f": {', '.join(firing)}" if firing else "")
    return gate.result(ctx, verdict, float(len(firing)), summary, firing=firing)


# ---- the Kubernetes API -------------------------------------------------------------------------------------------

BAD_WAITING = frozenset(
    {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError",
     "InvalidImageName", "RunContainerError"}
)  # fmt: skip


def _kube(ctx: _Ctx) -> CanaryHealth:
    assert ctx.health is not None  # evaluate() reads it for every kube gate
    return ctx.health


def _decide_kube_pods_ready(ctx: _Ctx, gate: Gate) -> GateResult:
    health = _kube(ctx)
    if not health.pods:
        return gate.result(ctx, Verdict.NO_DATA, None, f"no pods of {health.deployment} (desired {health.desired})")
    percent = 100.0 * health.ready / health.desired if health.desired else 100.0
    verdict, _ = _judge(ctx, percent, fails_below=gate.fails_below)
    not_ready = [p.name for p in health.pods if not p.ready]
    summary = f"{health.ready} of {health.desired} desired pods of {health.deployment} Ready ({_fmt(percent)} %)"
    summary += f"; not ready: {', '.join(not_ready)}" if not_ready else ""
    return gate.result(ctx, verdict, percent, summary, not_ready=not_ready)


def _decide_kube_restarts(ctx: _Ctx, gate: Gate) -> GateResult:
    health = _kube(ctx)
    if not health.pods:
        return gate.result(ctx, Verdict.NO_DATA, None, f"no pods of {health.deployment}")
    verdict, sign = _judge(ctx, float(health.restarts))
    restarted = ", ".join(f"{p.name} x{p.restarts}" for p in health.pods if p.restarts)
    summary = (
        f"{health.restarts} container restarts since the canary's pods started {sign} {_fmt(ctx.settings.threshold)}"
    )
    summary += f" ({restarted})" if restarted else ""
    return gate.result(ctx, verdict, float(health.restarts), summary)


def _decide_kube_waiting(ctx: _Ctx, gate: Gate) -> GateResult:
    health = _kube(ctx)
    if not health.pods:
        return gate.result(ctx, Verdict.NO_DATA, None, f"no pods of {health.deployment}")
    bad = [f"{p.name} {reason}" for p in health.pods for reason in p.waiting if reason in BAD_WAITING]
    verdict, _ = _judge(ctx, float(len(bad)))
    summary = f"{len(bad)} canary containers waiting for a bad reason"
    summary += f": {', '.join(bad)}" if bad else ""
    return gate.result(ctx, verdict, float(len(bad)), summary, waiting=bad)


def _probe_gate(kind: str) -> Decide:
    def decide(ctx: _Ctx, gate: Gate) -> GateResult:
        health = _kube(ctx)
        if not health.pods:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no pods of {health.deployment}")
        count = float(health.probe_failures.get(kind, 0))
        verdict, sign = _judge(ctx, count)
        summary = (
            f"{count:.0f} {kind.lower()} probe failures of the canary's pods {sign} {_fmt(ctx.settings.threshold)}"
        )
        return gate.result(ctx, verdict, count, summary)

    return decide


def _no_queries(source: MetricsSource) -> dict[str, str]:
    return {}
