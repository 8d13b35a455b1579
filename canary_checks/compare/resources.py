"""The resource comparisons (CPU seconds per request, working set per pod): their series read over the window and
judged by the Kayenta-style Mann–Whitney classifier, a fixed-horizon test; CPU only at comparable load per pod.

Seam: reads its own series from Prometheus and decides; no evidence is kept for it."""

from __future__ import annotations

import math

from canary_checks.compare.results import Ctx, ratio_text
from canary_checks.errors import PrometheusError
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import MetricsSource, Sample
from canary_checks.stats.kayenta import classify

__all__ = ["LOAD_SPREAD", "resources_result"]


def resources_result(ctx: Ctx, source: MetricsSource, now: float) -> tuple[GateResult, float]:
    c = ctx.comparison
    step = ctx.config.statistics.sample_interval
    window = min(max(now - ctx.evidence.started, ctx.config.window), 3600.0)
    samples: dict[str, list[float]] = {}
    queries = []
    for arm, side in ctx.config.arms:  # stable's arm reads the baseline when there is one
        if c.key == "cpu":
            q = (
                f"({source.render('cpu_seconds', side=side, window=step)}) / "
                f"({source.render('requests', side=side, window=step)})"
            )
        else:
            q = source.render("memory_usage", side=side)
        queries.append(q)
        series = source.query_range(q, now - window, now, step)
        samples[arm] = [v for s in series for v in s.values if math.isfinite(v)]
    ctx = Ctx(ctx.config, c, ctx.settings, ctx.results, tuple(queries), ctx.alpha_each, window, ctx.evidence)
    if c.key == "cpu" and (uneven := _uneven_load(source, window, now)):
        return ctx.result(Verdict.INCONCLUSIVE, None, f"inconclusive: {uneven}", "ratio"), math.nan
    unit = "CPU s/request" if c.key == "cpu" else "bytes/pod"
    result = classify(
        samples["stable"],
        samples["canary"],
        direction="increase",
        confidence=1 - ctx.config.statistics.alpha,
        tolerance=0.10,
        allowed_increase=ctx.settings.margin,
    )
    n = f"{len(samples['canary'])} canary and {len(samples['stable'])} stable samples over {window:g}s"
    details = {
        "method": "Kayenta-style Mann-Whitney with Hodges-Lehmann interval (fixed horizon)",
        "p_value": result.p_value,
        "ratio": result.ratio,
        "estimate": result.estimate,
        "interval_low": result.interval[0],
        "interval_high": result.interval[1],
        "canary_samples": len(samples["canary"]),
        "stable_samples": len(samples["stable"]),
        "classification": result.classification,
    }
    what = "CPU seconds per request" if c.key == "cpu" else "working set per pod"
    if result.classification == "Nodata":
        return ctx.result(Verdict.NO_DATA, None, f"{what}: {result.reason}; {n}", "ratio", **details), math.nan
    summary = (
        f"{what}: canary/stable mean ratio {ratio_text(result.ratio)}, shift {result.estimate:.3g} {unit} "
        f"(interval {result.interval[0]:.3g} to {result.interval[1]:.3g}), classified {result.classification}; {n}"
    )
    verdict = Verdict.FAIL if result.classification == "High" else Verdict.PASS
    # one-sided p-value for the multiplicity correction: "is the canary higher"
    p = result.p_value / 2 if result.estimate > 0 else 1.0
    return ctx.result(verdict, result.ratio, summary, "ratio", **details), p


LOAD_SPREAD = 1.5
"""CPU per request is compared only while a canary pod and a stable pod serve request rates within this factor."""


def _uneven_load(source: MetricsSource, window: float, now: float) -> str | None:
    """Why CPU cannot be compared now, or ``None``. A pod's idle CPU is spread over its requests, so a pod serving
    fewer requests uses more CPU per request: comparable only at comparable load per pod (e.g. the 50 % stage with
    equal replicas)."""
    per_pod = {}
    for arm, side in source.config.arms:
        queries = [source.render("requests", side=side, window=window), source.render("cpu_usage", side=side)]
        got = source.query_many(queries, at=now)
        requests, pods = (_raise(got[q]) for q in queries)
        if not requests or not pods:
            return f"no requests or no pods of the {side} in the window"
        per_pod[arm] = sum(s.value for s in requests) / window / len(pods)
    c, s = per_pod["canary"], per_pod["stable"]
    if c <= 0 or s <= 0 or max(c, s) / min(c, s) > LOAD_SPREAD:
        return (
            f"canary pods serve {c:.3g} req/s each and stable pods {s:.3g}: CPU per request is compared only at "
            f"comparable load per pod (within {LOAD_SPREAD:g}x, e.g. the 50 % stage with equal replicas)"
        )
    return None


def _raise(result: list[Sample] | PrometheusError) -> list[Sample]:
    if isinstance(result, PrometheusError):
        raise result
    return result
