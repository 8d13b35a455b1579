"""The gates over the service's requests: error and success rates, latency, canary versus stable, and the
traffic the canary receives and its share.

Seam: each is a pair (the queries it needs, its decision) for :class:`~canary_checks.gates.core.Gate`; the
registry names them."""

from __future__ import annotations

import math

from canary_checks.config import describe_failures
from canary_checks.gates.core import (
    Decide,
    Gate,
    GateResult,
    Needs,
    Verdict,
    _counts,
    _Ctx,
    _fmt,
    _judge,
    _no_traffic,
    _too_few,
    _traffic_queries,
)
from canary_checks.prometheus import MetricsSource

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
    """The canary's value against the reference's (stable, or the baseline when baseline.enabled)."""
    ratio = _ratio(canary, stable)
    limit = ctx.settings.threshold
    verdict, sign = _judge(ctx, ratio)
    ref = ctx.config.reference
    return gate.result(
        ctx,
        verdict,
        ratio,
        f"canary {what} is {_fmt(ratio)}x {ref}'s {sign} {_fmt(limit)}x "
        f"(canary {_fmt(canary)}{unit}, {ref} {_fmt(stable)}{unit})",
        canary=canary,
        **{ref: stable},
    )


def _needs_error_rate_vs_stable(source: MetricsSource) -> dict[str, str]:
    return _traffic_queries(source, ("canary", source.config.reference))


def _decide_error_rate_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    ref = ctx.config.reference
    canary, stable = _counts(ctx, "canary"), _counts(ctx, ref)
    if canary is None:
        return _no_traffic(ctx, gate)
    if stable is None:
        return _no_traffic(ctx, gate, ref)
    for side, counts in (("canary", canary), (ref, stable)):
        if early := _too_few(ctx, gate, counts[0], side):
            return early
    return _decide_ratio(ctx, gate, 100.0 * canary[1] / canary[0], 100.0 * stable[1] / stable[0], "error rate", " %")


def _needs_latency_vs_stable(source: MetricsSource) -> dict[str, str]:
    q = {}
    for side in ("canary", source.config.reference):
        q[f"{side}_requests"] = source.render("requests", side=side)
        q[f"{side}_latency"] = source.render("latency", side=side, quantile=0.95)
    return q


def _decide_latency_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    values = []
    for side in ("canary", ctx.config.reference):
        requests = ctx.total(f"{side}_requests")
        if not requests:
            return _no_traffic(ctx, gate, side)
        if early := _too_few(ctx, gate, requests, side):
            return early
        samples = ctx.samples(f"{side}_latency")
        if not samples:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no p95 latency histogram for the {side}")
        values.append(max(s.value for s in samples))
    return _decide_ratio(ctx, gate, values[0], values[1], "p95 latency", " ms")


def _needs_memory_vs_stable(source: MetricsSource) -> dict[str, str]:
    return {f"{side}_memory": source.render("memory_usage", side=side) for side in ("canary", source.config.reference)}


def _decide_memory_vs_stable(ctx: _Ctx, gate: Gate) -> GateResult:
    per_pod = []
    for side in ("canary", ctx.config.reference):
        samples = ctx.samples(f"{side}_memory")
        if not samples:
            return gate.result(ctx, Verdict.NO_DATA, None, f"no working-set series for {side} pods")
        per_pod.append(sum(s.value for s in samples) / len(samples) / 2**20)
    return _decide_ratio(ctx, gate, per_pod[0], per_pod[1], "working set per pod", " MiB")


def _needs_load_per_pod(source: MetricsSource) -> dict[str, str]:
    q = {"baseline_requests": source.render("requests", side="baseline")}  # a baseline's share is traffic too
    for side in ("canary", "stable"):
        q[f"{side}_requests"] = source.render("requests", side=side)
        q[f"{side}_ready"] = source.render("pods_ready", side=side)
    return q


def _decide_load_per_pod(ctx: _Ctx, gate: Gate) -> GateResult:
    """Requests per ready canary pod against what a ready stable pod serves with all the traffic: stable keeps its
    size through the rollout (and serves nothing at 100 %), so its pods' normal load is the total over them."""
    canary = ctx.total("canary_requests")
    if not canary:
        return _no_traffic(ctx, gate)
    ready = {side: sum(1 for s in ctx.samples(f"{side}_ready") if s.value >= 1) for side in ("canary", "stable")}
    for side, count in ready.items():
        if not count:
            workload = f"{ctx.config.workload(side)} in {ctx.config.namespace}"
            return gate.result(ctx, Verdict.NO_DATA, None, f"no ready {side} pods of {workload} in kube-state-metrics")
    if early := _too_few(ctx, gate, canary):
        return early
    window = ctx.config.window
    total = canary + (ctx.total("stable_requests") or 0.0) + (ctx.total("baseline_requests") or 0.0)
    per_canary, per_stable = canary / window / ready["canary"], total / window / ready["stable"]
    ratio = per_canary / per_stable
    verdict, sign = _judge(ctx, ratio)
    state = "overloaded: " if verdict is Verdict.FAIL else ""
    return gate.result(
        ctx,
        verdict,
        ratio,
        f"{state}a ready canary pod serves {_fmt(per_canary)} req/s, {_fmt(ratio)}x the {_fmt(per_stable)} req/s a "
        f"ready stable pod serves with all the traffic {sign} {_fmt(ctx.settings.threshold)}x ({ready['canary']} "
        f"ready canary pods, {ready['stable']} stable)",
        canary_pods=ready["canary"],
        stable_pods=ready["stable"],
        canary_per_pod=per_canary,
        stable_per_pod=per_stable,
    )


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


def _needs_traffic_split(source: MetricsSource) -> dict[str, str]:
    return {f"{side}_requests": source.render("requests", side=side) for side in ("canary", "stable", "baseline")}


def _decide_traffic_split(ctx: _Ctx, gate: Gate) -> GateResult:
    """The canary's share of every request to the service: a baseline's count too, whether or not the canary is
    compared with it (a baseline Deployment that does not run has no series)."""
    canary = ctx.total("canary_requests") or 0.0
    stable = ctx.total("stable_requests") or 0.0
    baseline = ctx.total("baseline_requests") or 0.0
    if canary + stable + baseline == 0:
        return gate.result(ctx, Verdict.NO_DATA, None, "neither stable nor canary received traffic")
    share = 100.0 * canary / (canary + stable + baseline)
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
        f"canary share {_fmt(share)} % at stage {stage} % — {why} (canary {canary:.0f}, stable {stable:.0f}"
        f"{f', baseline {baseline:.0f}' if baseline else ''} requests)",
        canary=canary,
        stable=stable,
        **({"baseline": baseline} if baseline else {}),
    )
