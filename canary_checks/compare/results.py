"""The sequential comparisons' results: the error-ratio test (built-in and custom) and the latency test, each fed
its interval and turned into a :class:`~canary_checks.gates.GateResult` with its summary and details.

Seam: counts in, a result and its p-value out; the reads are :mod:`canary_checks.compare.reads`, the stage's
correction :mod:`canary_checks.compare.evaluate`."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canary_checks.compare.evidence import Evidence
from canary_checks.compare.reads import bound_at, buckets, total
from canary_checks.compare.registry import Comparison
from canary_checks.config import CanaryConfig, ComparisonSettings
from canary_checks.gates import GateResult, Verdict
from canary_checks.prometheus import Sample
from canary_checks.stats import Counts, ErrorEvidence, Outcome, SequentialTest, compare_quantile

__all__ = ["Ctx", "as_reference", "errors_result", "latency_result", "ratio_text"]


@dataclass(frozen=True)
class Ctx:
    config: CanaryConfig
    comparison: Comparison
    settings: ComparisonSettings
    results: Mapping[str, list[Sample]]
    queries: tuple[str, ...]
    alpha_each: float
    interval: float
    evidence: Evidence

    def result(self, verdict: Verdict, value: float | None, summary: str, unit: str, **details: Any) -> GateResult:
        """The comparison's result; its summary names the reference it judged against (stable, or the baseline)."""
        return GateResult(
            gate=self.comparison.name,
            verdict=verdict,
            value=value,
            threshold=self.settings.margin,
            unit=unit,
            severity=self.settings.severity,
            on_no_data=self.settings.on_no_data,
            window=self.interval,
            queries=self.queries,
            summary=as_reference(summary, self.config.reference),
            details=details,
        )

    def test(self) -> SequentialTest:
        key = self.comparison.key
        test = self.evidence.tests.get(key)
        delta = self.settings.margin_delta / 100
        if test is None or test.margin != self.settings.margin or test.margin_delta != delta:
            test = SequentialTest(margin=self.settings.margin, margin_delta=delta)
            self.evidence.tests[key] = test
        return test


_VERDICT = {
    Outcome.PASS: Verdict.PASS,
    Outcome.FAIL: Verdict.FAIL,
    Outcome.INCONCLUSIVE: Verdict.INCONCLUSIVE,
    Outcome.NO_DATA: Verdict.NO_DATA,
}


def _pct(x: float) -> str:
    return "∞" if math.isinf(x) else f"{100 * x:.3g} %"


def as_reference(text: str, reference: str) -> str:
    """A comparison's words for its stable arm (``stable``, ``stable's``) naming the reference it read instead."""
    return text if reference == "stable" else re.sub(r"\bstable\b", reference, text)


def ratio_text(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.3g}"


def errors_result(ctx: Ctx, update: bool) -> tuple[GateResult, float]:
    test = ctx.test()
    if update:
        c_req, s_req = total(ctx.results["canary_requests"]), total(ctx.results["stable_requests"])
        c_err = total(ctx.results["canary_errors"]) or 0.0
        s_err = total(ctx.results["stable_errors"]) or 0.0
        test.update(Counts(c_req or 0.0, c_err), Counts(s_req or 0.0, s_err))
    stats = ctx.config.statistics
    ev = test.evidence(ctx.alpha_each, worse_ratio=stats.worse_ratio, worse_delta=stats.worse_delta / 100)
    custom = ctx.comparison.custom
    what, failed = ("error rate", "stable requests failed") if custom is None else (
        custom.description or ctx.comparison.key, "stable (numerator of denominator)"
    )  # fmt: skip
    counts = (
        f"{ev.canary.errors:,.0f} of {ev.canary.requests:,.0f} canary vs {ev.stable.errors:,.0f} of "
        f"{ev.stable.requests:,.0f} {failed}, over {test.intervals} interval(s)"
    )
    details = _evidence_details(ev, test, ctx)
    # the statistics speak of requests and errors; a custom comparison's counts are its denominator and numerator
    reason = ev.reason if custom is None else ev.reason.replace("error rate", what).replace("requests", "events")
    if ev.outcome is Outcome.NO_DATA:
        return ctx.result(Verdict.NO_DATA, None, f"{reason}; {counts}{_rejected(ev)}", "ratio", **details), math.nan
    lo, hi = ev.interval
    summary = (
        f"canary {what} {_pct(ev.canary.rate)} vs stable {_pct(ev.stable.rate)}: ratio {ratio_text(ev.ratio)} "
        f"(confidence sequence {ratio_text(lo)}–{ratio_text(hi)}), e-value {ev.e_value:.3g} against "
        f"margin {test.margin:g}; {counts}"
    )
    if ev.outcome is Outcome.INCONCLUSIVE:
        summary = f"inconclusive: {reason}; {summary}"
    return ctx.result(_VERDICT[ev.outcome], ev.ratio, summary + _rejected(ev), "ratio", **details), ev.p_value


def _rejected(ev: ErrorEvidence) -> str:
    """What the summary says about intervals that could not be used (their counts were impossible)."""
    if not ev.rejected:
        return ""
    return f"; {len(ev.rejected)} interval(s) rejected, latest: {ev.rejected[-1]}"


def _evidence_details(ev: ErrorEvidence, test: SequentialTest, ctx: Ctx) -> dict[str, Any]:
    needed: dict[str, float] = {}
    if ev.outcome is Outcome.INCONCLUSIVE:
        # at the canary's request rate since the evidence started: how long until a decision is possible
        elapsed = max(ctx.evidence.last + ctx.interval - ctx.evidence.started, ctx.interval)
        rate = ev.canary.requests / elapsed if elapsed > 0 else 0.0
        more = ev.needed_requests()
        needed = {"needed_requests": more, "needed_seconds": more / rate if rate > 0 else math.inf}
    rejected = {"rejected_intervals": " | ".join(ev.rejected)} if ev.rejected else {}
    return {
        **needed,
        **rejected,
        "method": "anytime-valid mixture test (conditional binomial, tempered for bursts), confidence sequence",
        "margin_tested": ev.margin,
        "dispersion": ev.dispersion,
        "p_value": ev.p_value,
        "e_value": ev.e_value,
        "ratio": ev.ratio,
        "interval_low": ev.interval[0],
        "interval_high": ev.interval[1],
        "canary_requests": ev.canary.requests,
        "canary_events": ev.canary.errors,
        "stable_requests": ev.stable.requests,
        "stable_events": ev.stable.errors,
        "detectable_rate": ev.detectable_rate,
        "detectable_ratio": ev.detectable_ratio,
        "intervals": test.intervals,
    }


def latency_result(ctx: Ctx, update: bool, earlier: list[Sample] | None) -> tuple[GateResult, float]:
    c = ctx.comparison
    if "canary_step" not in ctx.results:
        return (
            ctx.result(
                Verdict.NO_DATA,
                None,
                "no latency buckets to compare: mesh: custom needs queries.buckets",
                "ratio",
            ),
            math.nan,
        )
    key = c.key
    if key not in ctx.evidence.bounds and earlier is not None:
        bound = bound_at(buckets(earlier), c.quantile)
        if bound is not None and math.isfinite(bound):
            ctx.evidence.bounds[key] = bound
    bound = ctx.evidence.bounds.get(key)
    test = ctx.test()
    canary_step, stable_step = buckets(ctx.results["canary_step"]), buckets(ctx.results["stable_step"])
    if (
        bound is not None
        and canary_step.bounds
        and stable_step.bounds
        and (bound not in canary_step.bounds or bound not in stable_step.bounds)
    ):
        why = f"the canary's or stable's histogram has no {bound:g} ms bucket (different bucket layouts)"
        return ctx.result(Verdict.NO_DATA, None, why, "ratio"), math.nan
    if update and bound is not None and bound in canary_step.bounds and bound in stable_step.bounds:
        c_slow, c_all = canary_step.over(bound)
        s_slow, s_all = stable_step.over(bound)
        test.update(Counts(c_all, c_slow), Counts(s_all, s_slow))
    canary_since, stable_since = buckets(ctx.results["canary_since"]), buckets(ctx.results["stable_since"])
    band = compare_quantile(canary_since, stable_since, c.quantile, alpha=ctx.alpha_each)
    pname = f"p{round(c.quantile * 100)}"
    band_text = (
        f"{pname} canary in ({band.canary[0]:g}, {band.canary[1]:g}] ms, stable in ({band.stable[0]:g}, "
        f"{band.stable[1]:g}] ms, difference in [{band.difference[0]:g}, {band.difference[1]:g}] ms "
        f"(time-uniform bounds from {band.n_canary:,} and {band.n_stable:,} requests)"
    )
    details: dict[str, Any] = {
        "canary_quantile_low": band.canary[0],
        "canary_quantile_high": band.canary[1],
        "stable_quantile_low": band.stable[0],
        "stable_quantile_high": band.stable[1],
        "difference_low": band.difference[0],
        "difference_high": band.difference[1],
        "canary_quantile_estimate": band.canary_estimate,
        "stable_quantile_estimate": band.stable_estimate,
    }
    if bound is None:
        why = "stable had no requests before the evidence started to fix its quantile's bucket"
        if bound_at(stable_since, c.quantile) == math.inf:
            why = f"stable's {pname} lies beyond the highest finite bucket"
        return ctx.result(Verdict.NO_DATA, None, f"{why}; {band_text}", "ratio", **details), math.nan
    stats = ctx.config.statistics
    ev = test.evidence(ctx.alpha_each, worse_ratio=stats.worse_ratio, worse_delta=stats.worse_delta / 100)
    details.update(_evidence_details(ev, test, ctx))
    details["bound_ms"] = bound
    slower = (
        f"requests slower than {bound:g} ms (stable's {pname} bucket): canary {_pct(ev.canary.rate)} of "
        f"{ev.canary.requests:,.0f}, stable {_pct(ev.stable.rate)} of {ev.stable.requests:,.0f}, ratio "
        f"{ratio_text(ev.ratio)} (confidence sequence {ratio_text(ev.interval[0])}–{ratio_text(ev.interval[1])}), "
        f"e-value {ev.e_value:.3g} against margin {test.margin:g}"
    )
    # the statistics speak of an error rate; here it is the share of requests slower than the bound
    reason = ev.reason.replace("error rate", f"share of requests slower than {bound:g} ms")
    if ev.outcome is Outcome.NO_DATA:
        return ctx.result(Verdict.NO_DATA, None, f"{reason}; {band_text}", "ratio", **details), math.nan
    summary = f"{slower}; {band_text}"
    if ev.outcome is Outcome.INCONCLUSIVE:
        summary = f"inconclusive: {reason}; {summary}"
    return ctx.result(_VERDICT[ev.outcome], ev.ratio, summary + _rejected(ev), "ratio", **details), ev.p_value
