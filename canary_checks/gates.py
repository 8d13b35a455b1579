"""Gate definitions and their evaluation.

A gate reads a few PromQL queries (canary and stable side by side, same window, same instant) and ends in a
:class:`GateResult` with one :class:`Verdict`. Thresholds come from :class:`canary_checks.config.Gates`, whose
field types also say each gate's unit (and so the values its threshold may take); which side of the threshold
fails is the gate's own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from canary_checks.config import (
    CanaryConfig,
    CustomGate,
    Fails,
    Gates,
    GateSettings,
    Mesh,
    NoDataPolicy,
    Severity,
    ValueGate,
    describe_failures,
)
from canary_checks.errors import CanaryError
from canary_checks.prometheus import MESH_METRICS, MetricsSource, Sample

if TYPE_CHECKING:
    # the Kubernetes client costs 0.15 s to import; the kube gates only read the facts the caller gathered with it
    from canary_checks.kube import CanaryHealth

__all__ = [
    "GATES",
    "Gate",
    "GateResult",
    "Verdict",
    "custom_gate",
    "evaluate",
    "gates_in_family",
    "gates_of",
    "judge_value",
]


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no data"
    """No series, or only NaN, or no traffic: never a pass."""
    INCONCLUSIVE = "inconclusive"
    """Too few requests in the window to tell; the runner holds the stage."""


@dataclass(frozen=True)
class GateResult:
    gate: str
    verdict: Verdict
    value: float | None
    threshold: float
    unit: str
    severity: Severity
    on_no_data: NoDataPolicy
    window: float
    """Seconds."""
    queries: tuple[str, ...]
    summary: str
    """One line a person reads: what was measured against what."""
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def breached(self) -> bool:
        """The gate did not pass (fail, no data or inconclusive)."""
        return self.verdict is not Verdict.PASS

    def fails(self, *, strict: bool = False) -> bool:
        """Whether this result fails the stage: critical always, warning in strict mode, info never."""
        if not self.breached:
            return False
        if self.verdict is Verdict.NO_DATA and self.on_no_data is NoDataPolicy.SKIP:
            return False
        if self.severity is Severity.CRITICAL:
            return True
        return strict and self.severity is Severity.WARNING

    def describe(self) -> str:
        """The full message: summary, window and every query."""
        lines = [f"{self.gate}: {self.verdict.value.upper()} ({self.severity.value}) — {self.summary}"]
        lines.append(f"  window: last {_fmt(self.window)}s")
        lines.extend(f"  query: {q}" for q in self.queries)
        return "\n".join(lines)


@dataclass(frozen=True)
class _Ctx:
    config: CanaryConfig
    settings: GateSettings
    stage: int | None
    q: Mapping[str, str]
    results: Mapping[str, list[Sample]]
    health: CanaryHealth | None = None

    def samples(self, key: str) -> list[Sample]:
        return self.results[self.q[key]]

    def total(self, key: str) -> float | None:
        """Sum of a vector; ``None`` when it is empty (no data)."""
        samples = self.samples(key)
        return sum(s.value for s in samples) if samples else None


Decide = Callable[[_Ctx, "Gate"], GateResult]
Needs = Callable[[MetricsSource], dict[str, str]]


FAILS_BELOW = frozenset({"success_rate", "pods_ready", "kube_pods_ready"})
"""The built-in gates that fail below their threshold; every other fails above it (a custom gate says its side)."""


@dataclass(frozen=True)
class Gate:
    name: str
    """Config key under `gates:` (and the --threshold name)."""
    family: str
    """Which test in suites/gate runs it (test_<family>)."""
    variant: str
    """The test id inside its family: test_latency[p95]."""
    needs: Needs
    decide: Decide
    source: str = "prometheus"
    """Where the gate reads: prometheus, or kubernetes (the API, through canary_checks.kube)."""
    custom: CustomGate | None = None
    """A custom gate's definition (under `gates:` in the config); None for a built-in gate."""

    @property
    def unit(self) -> str:
        """The unit of the gate's value and threshold (%, ms, req/s, count or ratio): its settings' type in
        :class:`~canary_checks.config.Gates` says it, and so the values its threshold may take; a custom gate's
        own `unit`."""
        return self.custom.unit if self.custom is not None else Gates.unit_of(self.name)

    @property
    def fails_below(self) -> bool:
        """The failing side of the threshold: below it (a success rate, a share of ready pods), else above it."""
        if self.custom is not None:
            return self.custom.fails is Fails.BELOW
        return self.name in FAILS_BELOW

    def settings(self, gates: Gates) -> GateSettings:
        settings: GateSettings = getattr(gates, self.name)
        return settings

    def result(self, ctx: _Ctx, verdict: Verdict, value: float | None, summary: str, **details: Any) -> GateResult:
        return GateResult(
            gate=self.name,
            verdict=verdict,
            value=value,
            threshold=ctx.settings.threshold,
            unit=self.unit,
            severity=ctx.settings.severity,
            on_no_data=ctx.settings.on_no_data,
            window=ctx.config.window,
            queries=tuple(ctx.q.values()),
            summary=summary,
            details=details,
        )


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "∞"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def _judge(ctx: _Ctx, value: float, *, fails_below: bool = False) -> tuple[Verdict, str]:
    """The verdict of ``value`` against the gate's threshold, and the sign to print between them."""
    limit = ctx.settings.threshold
    if value < limit if fails_below else value > limit:
        return Verdict.FAIL, "<" if fails_below else ">"
    return Verdict.PASS, ">=" if fails_below else "<="


def _no_traffic(ctx: _Ctx, gate: Gate, side: str = "canary") -> GateResult:
    return gate.result(
        ctx,
        Verdict.NO_DATA,
        None,
        f"the {side} received no traffic in the {_fmt(ctx.config.window)}s window "
        f"({ctx.config.workload(side)} in {ctx.config.namespace})",
        no_traffic=side,
    )


_MESH_NAMES = {Mesh.ISTIO: "Istio", Mesh.LINKERD: "Linkerd"}


def _other_mesh(
    config: CanaryConfig, source: MetricsSource, out: dict[str, GateResult | CanaryError], at: float | None
) -> None:
    """Where a gate saw no traffic and the configured mesh's request counter has no series for the workload, but
    another mesh's has: say which, and the setting that fixes it (``--mesh linkerd`` on Istio metrics)."""
    if config.mesh is Mesh.CUSTOM:
        return
    sides = {r.details["no_traffic"] for r in out.values() if isinstance(r, GateResult) and "no_traffic" in r.details}
    for side in sorted(sides):
        present = source.meshes_with_series(side, at)
        if not present or config.mesh in present:
            continue
        mine, theirs = MESH_METRICS[config.mesh].requests, MESH_METRICS[present[0]].requests
        hint = (
            f"; no {mine} series for {config.workload(side)} in {config.namespace}, but {theirs} "
            f"({_MESH_NAMES[present[0]]}) has some: set mesh: {present[0].value} (or --mesh {present[0].value})"
        )
        for name, result in out.items():
            if isinstance(result, GateResult) and result.details.get("no_traffic") == side:
                out[name] = replace(result, summary=result.summary + hint)


def _counts(ctx: _Ctx, side: str) -> tuple[float, float, float] | None:
    """requests, errors, successes of one side; ``None`` when it received nothing."""
    requests = ctx.total(f"{side}_requests")
    if not requests:
        return None
    errors = ctx.total(f"{side}_errors") or 0.0
    successes = ctx.total(f"{side}_successes") or 0.0
    return requests, errors, successes


def _too_few(ctx: _Ctx, gate: Gate, requests: float, side: str = "canary") -> GateResult | None:
    need = ctx.config.min_requests
    if requests >= need:
        return None
    return gate.result(
        ctx,
        Verdict.INCONCLUSIVE,
        None,
        f"inconclusive: only {requests:.0f} {side} requests in the {_fmt(ctx.config.window)}s window "
        f"(need at least {need}, min_requests)",
        requests=requests,
        needed_requests=need - requests,
    )


def _traffic_queries(source: MetricsSource, sides: Iterable[str] = ("canary",)) -> dict[str, str]:
    q = {}
    for side in sides:
        for name in ("requests", "errors", "successes"):
            q[f"{side}_{name}"] = source.render(name, side=side)
    return q


# ---- request gates -------------------------------------------------------------------------------------------


def _decide_error_rate(ctx: _Ctx, gate: Gate) -> GateResult:
    counts = _counts(ctx, "canary")
    if counts is None:
        return _no_traffic(ctx, gate)
    requests, errors, _ = counts
    if early := _too_few(ctx, gate, requests):
        return early
    rate = 100.0 * errors / requests
    limit = ctx.settings.threshold
    verdict, sign = _judge(ctx, rate)
    return gate.result(
        ctx,
        verdict,
        rate,
        f"canary error rate {_fmt(rate)} % {sign} {_fmt(limit)} % "
        f"({errors:.0f} of {requests:.0f} requests {describe_failures(ctx.config.failure_codes)})",
        requests=requests,
        errors=errors,
    )


def _decide_success_rate(ctx: _Ctx, gate: Gate) -> GateResult:
    counts = _counts(ctx, "canary")
    if counts is None:
        return _no_traffic(ctx, gate)
    requests, _, successes = counts
    if early := _too_few(ctx, gate, requests):
        return early
    rate = 100.0 * successes / requests
    limit = ctx.settings.threshold
    verdict, sign = _judge(ctx, rate, fails_below=gate.fails_below)
    return gate.result(
        ctx,
        verdict,
        rate,
        f"canary success rate {_fmt(rate)} % {sign} {_fmt(limit)} % "
        f"({successes:.0f} of {requests:.0f} requests succeeded)",
        requests=requests,
        successes=successes,
    )


def _latency_gate(quantile: float) -> tuple[Needs, Decide]:
    label = f"p{round(quantile * 100)}"

    def needs(source: MetricsSource) -> dict[str, str]:
        return {
            "canary_requests": source.render("requests", side="canary"),
            "canary_latency": source.render("latency", side="canary", quantile=quantile),
        }

    def decide(ctx: _Ctx, gate: Gate) -> GateResult:
        requests = ctx.total("canary_requests")
        if not requests:
            return _no_traffic(ctx, gate)
        if early := _too_few(ctx, gate, requests):
            return early
        samples = ctx.samples("canary_latency")
        if not samples:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no {label} latency histogram for the canary")
        value = max(s.value for s in samples)
        limit = ctx.settings.threshold
        verdict, sign = _judge(ctx, value)
        return gate.result(
            ctx,
            verdict,
            value,
            f"canary {label} latency {_fmt(value)} ms {sign} {_fmt(limit)} ms (over {requests:.0f} requests)",
            requests=requests,
        )

    return needs, decide


# ---- canary versus stable ------------------------------------------------------------------------------------


def _ratio(canary: float, stable: float) -> float:
    if stable > 0:
        return canary / stable
    return 1.0 if canary == 0 else math.inf


def _decide_ratio(ctx: _Ctx, gate: Gate, canary: float, stable: float, what: str, unit: str) -> GateResult:
    ratio = _ratio(canary, stable)
    limit = ctx.settings.threshold
    verdict, sign = _judge(ctx, ratio)
    return gate.result(
        ctx,
        verdict,
        ratio,
        f"canary {what} is {_fmt(ratio)}x stable's {sign} {_fmt(limit)}x "
        f"(canary {_fmt(canary)}{unit}, stable {_fmt(stable)}{unit})",
        canary=canary,
        stable=stable,
    )


def _decide_error_rate_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    canary, stable = _counts(ctx, "canary"), _counts(ctx, "stable")
    if canary is None:
        return _no_traffic(ctx, gate)
    if stable is None:
        return _no_traffic(ctx, gate, "stable")
    for side, counts in (("canary", canary), ("stable", stable)):
        if early := _too_few(ctx, gate, counts[0], side):
            return early
    return _decide_ratio(ctx, gate, 100.0 * canary[1] / canary[0], 100.0 * stable[1] / stable[0], "error rate", " %")


def _needs_latency_vs_stable(source: MetricsSource) -> dict[str, str]:
    q = {}
    for side in ("canary", "stable"):
        q[f"{side}_requests"] = source.render("requests", side=side)
        q[f"{side}_latency"] = source.render("latency", side=side, quantile=0.95)
    return q


def _decide_latency_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    values = {}
    for side in ("canary", "stable"):
        requests = ctx.total(f"{side}_requests")
        if not requests:
            return _no_traffic(ctx, gate, side)
        if early := _too_few(ctx, gate, requests, side):
            return early
        samples = ctx.samples(f"{side}_latency")
        if not samples:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no p95 latency histogram for the {side}")
        values[side] = max(s.value for s in samples)
    return _decide_ratio(ctx, gate, values["canary"], values["stable"], "p95 latency", " ms")


def _needs_memory_vs_stable(source: MetricsSource) -> dict[str, str]:
    return {f"{side}_memory": source.render("memory_usage", side=side) for side in ("canary", "stable")}


def _decide_memory_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    per_pod = {}
    for side in ("canary", "stable"):
        samples = ctx.samples(f"{side}_memory")
        if not samples:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no working-set series for {side} pods")
        per_pod[side] = sum(s.value for s in samples) / len(samples) / 2**20
    return _decide_ratio(ctx, gate, per_pod["canary"], per_pod["stable"], "working set per pod", " MiB")


# ---- traffic -------------------------------------------------------------------------------------------------


def _decide_traffic_received(ctx: _Ctx, gate: Gate) -> GateResult:
    requests = ctx.total("canary_requests") or 0.0
    rate = requests / ctx.config.window
    limit = ctx.settings.threshold
    if rate <= limit:
        return gate.result(
            ctx,
            Verdict.FAIL,
            rate,
            f"the canary receives no traffic: {_fmt(rate)} req/s <= {_fmt(limit)} req/s "
            f"({requests:.0f} requests in the {_fmt(ctx.config.window)}s window)",
            requests=requests,
        )
    return gate.result(ctx, Verdict.PASS, rate, f"canary receives {_fmt(rate)} req/s > {_fmt(limit)} req/s")


def _decide_traffic_split(ctx: _Ctx, gate: Gate) -> GateResult:
    canary = ctx.total("canary_requests") or 0.0
    stable = ctx.total("stable_requests") or 0.0
    if canary + stable == 0:
        return gate.result(ctx, Verdict.NO_DATA, None, "neither stable nor canary received traffic")
    share = 100.0 * canary / (canary + stable)
    stage = ctx.stage
    tolerance = ctx.settings.threshold
    if stage is None:
        return gate.result(
            ctx, Verdict.NO_DATA, share, f"canary share {_fmt(share)} %; pass --stage N to judge the split"
        )
    off = abs(share - stage)
    if off > tolerance:
        verdict, why = Verdict.FAIL, f"off by {_fmt(off)} points > {_fmt(tolerance)} tolerance"
    elif stage < 50 and share > 50:
        verdict, why = Verdict.FAIL, "the canary carries the majority before the 50 % stage"
    else:
        verdict, why = Verdict.PASS, f"within {_fmt(tolerance)} points"
    return gate.result(
        ctx,
        verdict,
        share,
        f"canary share {_fmt(share)} % at stage {stage} % — {why} (canary {canary:.0f}, stable {stable:.0f} requests)",
        canary=canary,
        stable=stable,
    )


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


# ---- custom gates (any other key under `gates:`) --------------------------------------------------------------


def judge_value(
    name: str,
    settings: ValueGate,
    value: float | None,
    *,
    window: float,
    queries: tuple[str, ...] = (),
    what: str = "",
    **details: Any,
) -> GateResult:
    """A custom gate's verdict on one value (``None``: no data) against its threshold, on the side it fails. The
    YAML custom gates and the ``canary_gate`` fixture's own values are judged here alike."""
    label = settings.description or name
    unit = f" {settings.unit}" if settings.unit else ""
    if value is None:
        verdict, summary = (
            Verdict.NO_DATA,
            f"no data for the canary's {label}: {what or 'the query returned no series'}",
        )
    else:
        below = settings.fails is Fails.BELOW
        fails = value < settings.threshold if below else value > settings.threshold
        sign = ("<" if below else ">") if fails else (">=" if below else "<=")
        verdict = Verdict.FAIL if fails else Verdict.PASS
        summary = f"canary {label} {_fmt(value)}{unit} {sign} {_fmt(settings.threshold)}{unit}"
        summary += f" ({what})" if what else ""
    return GateResult(
        gate=name,
        verdict=verdict,
        value=value,
        threshold=settings.threshold,
        unit=settings.unit,
        severity=settings.severity,
        on_no_data=settings.on_no_data,
        window=window,
        queries=queries,
        summary=summary,
        details={"fails": settings.fails.value, **details},
    )


def _decide_custom(ctx: _Ctx, gate: Gate) -> GateResult:
    assert isinstance(ctx.settings, ValueGate)
    samples = ctx.samples("value")
    workload = f"{ctx.config.workload('canary')} in {ctx.config.namespace}"
    if not samples:
        return judge_value(gate.name, ctx.settings, None, window=ctx.config.window, queries=tuple(ctx.q.values()),
                           what=f"the query returned no series for {workload}")  # fmt: skip
    below = ctx.settings.fails is Fails.BELOW
    worst = (min if below else max)(samples, key=lambda s: s.value)
    what = ""
    if len(samples) > 1:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(worst.labels.items()))
        what = f"the {'lowest' if below else 'highest'} of {len(samples)} series: {{{labels}}}"
    return judge_value(gate.name, ctx.settings, worst.value, window=ctx.config.window, queries=tuple(ctx.q.values()),
                       what=what, series=len(samples))  # fmt: skip


def custom_gate(name: str, settings: CustomGate) -> Gate:
    """The gate of a custom entry under `gates:`: its query rendered for the canary by the built-in gates' renderer
    (the same placeholders, checks and escaping), judged by :func:`judge_value`."""

    def needs(source: MetricsSource) -> dict[str, str]:
        return {"value": source.render_template(settings.query, side="canary", where=f"gates.{name}.query")}

    return Gate(name, "custom", name, needs, _decide_custom, custom=settings)


def gates_of(thresholds: Gates) -> dict[str, Gate]:
    """Every gate in force: the built-in ones and the custom ones of ``thresholds`` (the config's `gates:` with a
    stage's and the command line's overrides)."""
    return {**GATES, **{name: custom_gate(name, settings) for name, settings in thresholds.custom().items()}}


# ---- the registry --------------------------------------------------------------------------------------------


def _registry() -> dict[str, Gate]:
    def traffic(sides: tuple[str, ...]) -> Needs:
        return lambda source: _traffic_queries(source, sides)

    def requests_only(sides: tuple[str, ...]) -> Needs:
        return lambda source: {f"{side}_requests": source.render("requests", side=side) for side in sides}

    p95, p99 = _latency_gate(0.95), _latency_gate(0.99)
    cpu, memory = _resource_gate("cpu"), _resource_gate("memory")
    gates = [
        Gate("error_rate", "error_rate", "error_rate", traffic(("canary",)), _decide_error_rate),
        Gate("success_rate", "success_rate", "success_rate", traffic(("canary",)), _decide_success_rate),
        Gate("latency_p95", "latency", "p95", *p95),
        Gate("latency_p99", "latency", "p99", *p99),
        Gate(
            "traffic_received",
            "traffic",
            "received",
            requests_only(("canary",)),
            _decide_traffic_received,
        ),
        Gate(
            "traffic_split",
            "traffic",
            "split",
            requests_only(("canary", "stable")),
            _decide_traffic_split,
        ),
        Gate("pods_ready", "pods", "ready", _needs_pods, _decide_pods_ready),
        Gate("restarts", "restarts", "restarts", _pods_and("restarts"), _decide_restarts),
        Gate("crash_loop", "restarts", "crash_loop", _pods_and("waiting"), _decide_crash_loop),
        Gate("cpu", "cpu", "cpu", *cpu),
        Gate("memory", "memory", "memory", *memory),
        Gate(
            "error_rate_vs_stable",
            "vs_stable",
            "error_rate",
            traffic(("canary", "stable")),
            _decide_error_rate_vs_stable,
        ),
        Gate(
            "latency_vs_stable",
            "vs_stable",
            "latency",
            _needs_latency_vs_stable,
            _decide_latency_vs_stable,
        ),
        Gate(
            "memory_vs_stable",
            "vs_stable",
            "memory",
            _needs_memory_vs_stable,
            _decide_memory_vs_stable,
        ),
    ]
    gates.append(Gate("firing_alerts", "alerts", "firing", _needs_alerts, _decide_firing_alerts))
    kube: list[tuple[str, str, Decide]] = [
        ("kube_pods_ready", "pods_ready", _decide_kube_pods_ready),
        ("kube_restarts", "restarts", _decide_kube_restarts),
        ("kube_waiting", "waiting", _decide_kube_waiting),
        ("kube_readiness_probes", "readiness_probes", _probe_gate("Readiness")),
        ("kube_liveness_probes", "liveness_probes", _probe_gate("Liveness")),
    ]
    gates += [Gate(name, "kubernetes", variant, _no_queries, decide, "kubernetes") for name, variant, decide in kube]
    return {g.name: g for g in gates}


GATES: dict[str, Gate] = _registry()
"""Every built-in gate, by its config name (:func:`gates_of` adds a config's custom gates)."""

assert set(GATES) == set(Gates.model_fields), "every configured threshold has exactly one gate"


def gates_in_family(family: str) -> list[Gate]:
    found = [g for g in GATES.values() if g.family == family]
    if not found:
        families = sorted({g.family for g in GATES.values()})
        raise KeyError(f"no gate family {family!r}; families: {', '.join(families)}")
    return found


def evaluate(
    config: CanaryConfig,
    source: MetricsSource,
    names: Iterable[str],
    *,
    stage: int | None = None,
    gates: Gates | None = None,
    at: float | None = None,
    kube: Callable[[], CanaryHealth] | None = None,
) -> dict[str, GateResult | CanaryError]:
    """Evaluate the named gates; all their queries run concurrently at one instant, and the Kubernetes API is read
    once (``kube``) for the kube_* gates.

    A gate whose source failed maps to the error (a PrometheusError or KubeError): it errors, it never passes."""
    thresholds = gates or config.gates_for(stage)
    known = gates_of(thresholds)
    wanted = [known[n] for n in dict.fromkeys(names)]
    plans = {g.name: g.needs(source) for g in wanted}
    raw = source.query_many((q for plan in plans.values() for q in plan.values()), at=at)
    health: CanaryHealth | CanaryError | None = None
    if any(g.source == "kubernetes" for g in wanted):
        if kube is None:
            health = CanaryError(
                "the kube_* gates need the Kubernetes API",
                where="kubernetes.enabled",
                fix="set kubernetes.api_url or a kubeconfig, or disable the kube_* gates",
            )
        else:
            try:
                health = kube()
            except CanaryError as e:
                health = e
    out: dict[str, GateResult | CanaryError] = {}
    for gate in wanted:
        if gate.source == "kubernetes" and isinstance(health, CanaryError):
            out[gate.name] = health
            continue
        plan = plans[gate.name]
        failed = next((r for q in plan.values() if isinstance(r := raw[q], CanaryError)), None)
        if failed is not None:
            out[gate.name] = failed
            continue
        results = {q: r for q in plan.values() if not isinstance(r := raw[q], CanaryError)}
        ctx = _Ctx(
            config=config,
            settings=gate.settings(thresholds),
            stage=stage,
            q=plan if gate.source == "prometheus" else _kube_reads(config),
            results=results,
            health=None if isinstance(health, CanaryError) else health,
        )
        out[gate.name] = gate.decide(ctx, gate)
    _other_mesh(config, source, out, at)
    return out


def _kube_reads(config: CanaryConfig) -> dict[str, str]:
    """What the kube_* gates read, shown where a query would be."""
    ns, name = config.namespace, config.workload("canary")
    return {
        "deployment": f"GET /apis/apps/v1/namespaces/{ns}/deployments/{name}",
        "pods": f"GET /api/v1/namespaces/{ns}/pods?labelSelector=<{name} selector>",
        "events": f"GET /api/v1/namespaces/{ns}/events?fieldSelector=reason=Unhealthy",
    }
